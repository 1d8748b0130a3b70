"""iter_sum's code: the host's masked rounds, the guest's running sums (see the package)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from fedschemas import FederationData

from fedflow.components.iter_sum import IterSumParams
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


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
