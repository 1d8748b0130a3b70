"""iter_sum: a small iterative two-role component for testing cross-party resume.

Each of `rounds` rounds, every host sends the guest a masked vector derived from its data and
the round number -- (r + 1) * column means of its squared features + a fresh mask drawn from
the host's RNG -- and the guest adds it to its running sum and acknowledges the round. At the
end each host sends the sum of its masks, and the guest removes them: its result is
sum_r (r + 1) * colmeans(host features ** 2), which depends only on the data and `rounds`, while
every intermediate value depends on the seeded RNG state -- so a resume that lost, repeated or
re-drew anything shows up in the result.

Per round r (iteration r):
  1. host  -> guest  masked_sum   masked_vector, shape (k,)   k = the host's feature count
  2. guest -> host   ack          plain_control, no array, meta {"round": r}
Once, after the last round:
  1. host  -> guest  mask_total   aggregate, shape (k,)

Checkpoints follow the resume rule (docs/components.md): a party saves iteration r only after
all of round r's sends and receives, with everything its later sends depend on (the host's RNG
state and mask sum, the guest's running sums). Missing feature values count as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from fedschemas import FederationData
from pydantic import Field

from fedflow.components.base import ComponentParams, ComponentType, InputSpec
from fedflow.protocol import NONE, MessageRule, Protocol
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


class IterSumParams(ComponentParams):
    rounds: int = Field(default=5, ge=1, le=1_000_000)
    seed: int = Field(default=0, ge=0)
    round_delay_s: float = Field(default=0.0, ge=0.0, le=60.0)
    """Pause after each round (tests use it to kill a party mid-run)."""


ITER_SUM_PROTOCOL = Protocol(
    component_type="iter_sum",
    description="test component: masked per-round sums, host to guest",
    dims={"k": "number of features at the sending host"},
    messages=(
        MessageRule(
            tag="masked_sum",
            sender="host",
            receiver="guest",
            kinds=("masked_vector",),
            per_iteration=True,
            order=1,
            shape="(k,)",
            dtypes=("float64",),
            description="(r + 1) * column means + mask",
        ),
        MessageRule(
            tag="ack",
            sender="guest",
            receiver="host",
            kinds=("plain_control",),
            per_iteration=True,
            order=2,
            shape=NONE,
            description="the guest added round r",
        ),
        MessageRule(
            tag="mask_total",
            sender="host",
            receiver="guest",
            kinds=("aggregate",),
            order=1,
            shape="(k,)",
            dtypes=("float64",),
            description="the sum of the host's masks",
        ),
    ),
)


def _host(ctx: ComponentContext, params: IterSumParams) -> None:
    features = np.nan_to_num(ctx.input("data").features, nan=0.0)
    base = (features**2).sum(axis=0) / max(len(features), 1)
    ctx.federation.bind_dims(k=len(base))
    guest = ctx.parties["guest"][0]
    rng = np.random.default_rng(params.seed)
    mask_total = np.zeros(len(base))
    start = 0
    saved = ctx.checkpoints.latest()
    if saved is not None:
        rng.bit_generator.state = saved.state["rng"]
        mask_total = np.array(saved.state["mask_total"], dtype=np.float64)
        start = saved.iteration + 1
    for r in range(start, params.rounds):
        ctx.check_canceled()
        mask = rng.standard_normal(len(base))
        masked = base * (r + 1) + mask
        ctx.federation.send(
            FederationData(kind="masked_vector", array=masked),
            to=guest,
            tag="masked_sum",
            iteration=r,
        )
        ctx.federation.recv(frm=guest, tag="ack", iteration=r)
        mask_total = mask_total + mask
        state: dict[str, Any] = {"rng": rng.bit_generator.state, "mask_total": mask_total}
        ctx.checkpoints.save(r, state)
        ctx.report_progress((r + 1) / params.rounds)
        if params.round_delay_s and ctx.cancel.wait(params.round_delay_s):
            ctx.check_canceled()
    ctx.federation.send(
        FederationData(kind="aggregate", array=mask_total), to=guest, tag="mask_total"
    )


def _guest(ctx: ComponentContext, params: IterSumParams) -> None:
    hosts = ctx.parties.get("host", [])
    sums: dict[str, np.ndarray] = {}
    start = 0
    saved = ctx.checkpoints.latest()
    if saved is not None:
        sums = {h: np.array(v, dtype=np.float64) for h, v in saved.state["sums"].items()}
        start = saved.iteration + 1
    for r in range(start, params.rounds):
        ctx.check_canceled()
        for host in hosts:
            masked = ctx.federation.recv(frm=host, tag="masked_sum", iteration=r)
            assert masked.array is not None
            previous = sums.get(host, np.zeros(len(masked.array)))
            sums[host] = previous + np.asarray(masked.array, dtype=np.float64)
        for host in hosts:
            ctx.federation.send(
                FederationData(kind="plain_control", meta={"round": r}),
                to=host,
                tag="ack",
                iteration=r,
            )
        ctx.checkpoints.save(r, {"sums": sums})
        ctx.metrics.log("masked_norm", float(sum(np.linalg.norm(v) for v in sums.values())), r)
        ctx.report_progress((r + 1) / params.rounds)
        if params.round_delay_s and ctx.cancel.wait(params.round_delay_s):
            ctx.check_canceled()
    parts = []
    for host in hosts:
        total = ctx.federation.recv(frm=host, tag="mask_total")
        assert total.array is not None
        parts.append(sums[host] - np.asarray(total.array, dtype=np.float64))
    result = np.concatenate(parts) if parts else np.zeros(0)
    ctx.metrics.curve(
        "result",
        np.arange(len(result), dtype=np.float64),
        result,
        x_label="feature",
        y_label="sum",
    )
    ctx.metrics.log("result_sum", float(result.sum()))


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(IterSumParams)
    if ctx.role == "host":
        _host(ctx, params)
    else:
        _guest(ctx, params)
    return {}


ITER_SUM = ComponentType(
    name="iter_sum",
    description="test component: N rounds of masked sums host -> guest, checkpointed per round",
    run=run,
    roles=("guest", "host"),
    params=IterSumParams,
    inputs=(InputSpec("data", description="the host's features (the guest's are unused)"),),
    protocol=ITER_SUM_PROTOCOL,
)
