"""Secure sums of per-client statistics for horizontal preprocessing (homo_feature_scale,
homo_feature_binning): one step is one Bonawitz secure aggregation (fedcrypto.secagg) over
homo_lr's wire messages, the aggregator's side through homo_lr's `Round` and `secure_sum`
(used as they are), a client's side here (no checkpoints: a preprocessing job is short; a
restarted task starts the component again).

Fixed point, exactly: every statistic a client contributes is first brought into [-1, 1] by
public scales (a count by ROW_SCALE = 2^24, the most rows a client may hold; a sum of values by
value_bound * 2^24; a sum of squares by (2 value_bound)^2 * 2^24), then sent as LIMBS = 3
elements of the 64-bit ring (homo_lr's quantisation with clip 1: resolution 2^-f, f = 63 -
ceil(log2 clients) - 1, e.g. 60 for 3 clients): the value rounded to 2^-f, then the remainder
times 2^f rounded again, twice. The aggregator joins the summed limbs as one integer, so a sum
is exact to 2^-(3f+1) of its scaled range per client: with 3 clients and value_bound 1e9 a sum
of squares over 2^24 rows is off by at most 3 * 4e18 * 2^24 * 2^-181 < 1e-46, far below the
float64 rounding of each client's own sums (what is left: the result equals numpy's over the
pooled rows to about 1e-12 relative). The limbs triple the vector: 3 x 3 x features elements
at step 1. A step whose values are already on the grid (homo_feature_binning's counts over
2^24) sends one limb each (`Plan.limbs`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np
import structlog
from fedcrypto.secagg import AggregationResult, SecAggClient, SecAggConfig, SecAggError
from fedschemas import FederationData
from numpy.typing import NDArray

from fedflow.components.homo_feature_scale import HomoPreprocessingParams
from fedflow.components.homo_lr import wire
from fedflow.components.homo_lr.aggregator import GUEST_ID, Round, secure_sum
from fedflow.components.homo_lr.client import (
    AggregatorLink,
    aggregator_role,
    check_summed,
    check_unmask,
    client_ids,
    features_digest,
)
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

log = structlog.get_logger("fedflow.components.homo_preprocessing")

Floats = NDArray[np.float64]
ROW_SCALE: Final = float(2**24)
"""A client holds at most 2^24 rows: a count divided by it is at most 1 (homo_lr's bound)."""
MODULUS_BITS: Final = 64
LIMBS: Final = 3
"""Ring elements per statistic (secure.py's docstring: the fixed point, exactly)."""


def step_config(ctx: ComponentContext, r: int, length: int) -> SecAggConfig:
    """Step r's aggregation config (`length`: ring elements): every party derives the same."""
    session = f"fedmq.{ctx.component_type}/{ctx.job_id}/{ctx.component}/{ctx.attempt}/{r}"
    return SecAggConfig(
        session=session.encode(),
        num_clients=len(client_ids(ctx.parties)),
        vector_length=length,
        modulus_bits=MODULUS_BITS,
        clip=1.0,
    )


def limbs(values: Floats, frac_bits: int, count: int = 3) -> Floats:
    """`values` (each in [-1, 1]) as `count` limbs, one block of len(values) each: the first the
    value rounded to the ring's 2^-f grid (quantised exactly), each next one the remainder
    times 2^f, in [-1/2, 1/2], rounded again; the last is quantised to 2^-f, so the limbs
    carry the value to 2^-(count f + 1). Every step is exact in float64. One limb suffices
    for values already on the 2^-f grid (a count over 2^24)."""
    if values.size and not np.all(np.abs(values) <= 1.0):
        raise ValueError("a scaled statistic is outside [-1, 1]: the scales do not bound it")
    out, rest = [], np.asarray(values, dtype=np.float64)
    for _ in range(count - 1):
        top = np.ldexp(np.rint(np.ldexp(rest, frac_bits)), -frac_bits)
        out.append(top)
        rest = np.ldexp(rest - top, frac_bits)
    out.append(rest)
    return np.concatenate(out)


def joined(result: AggregationResult, frac_bits: int, count: int = 3) -> Floats:
    """The summed limbs of `result` as floats, joined as integers: sum over k of
    limb_k * 2^-(k+1)f, rounded once to float64."""
    signed = np.asarray(result.quantized_sum, dtype=np.uint64).view(np.int64)
    blocks = signed.reshape(count, -1).tolist()
    exact = []
    for column in zip(*blocks, strict=True):
        whole = 0
        for limb in column:
            whole = (whole << frac_bits) + int(limb)
        exact.append(math.ldexp(float(whole), -count * frac_bits) if whole else 0.0)
    return np.asarray(exact, dtype=np.float64)


def checked_rows(table: Table, name: str, value_bound: float) -> Table:
    """`table` when it fits the fixed point; a clear error when it has too many rows or a value
    beyond value_bound (the fixed-point scale every client shares)."""
    if table.rows == 0:
        raise TableError(f"{name}: this client has no rows")
    if table.rows > ROW_SCALE:
        raise TableError(f"{name}: a client holds at most {int(ROW_SCALE)} rows")
    x = np.asarray(table.features, dtype=np.float64)
    if np.isinf(x).any():
        raise TableError(f"{name}: infinite values in this client's table")
    with np.errstate(invalid="ignore"):
        peak = np.nanmax(np.abs(x), axis=0, initial=0.0)
    over = [
        (n, float(v)) for n, v in zip(table.feature_names, peak, strict=True) if v > value_bound
    ]
    if over:
        column, value = over[0]
        raise TableError(
            f"{name}: column {column!r} holds a value of magnitude {value:g}, beyond "
            f"value_bound {value_bound:g} (the fixed-point range every client shares): raise "
            "value_bound at every party, or bring the column to a smaller unit"
        )
    return table


@dataclass
class AggregatorSide:
    """The aggregator's steps: it sends `stats`, then sums the clients' vectors."""

    ctx: ComponentContext
    remote: dict[int, str]  # client id -> how to address it
    digest: str
    timeout: float

    @classmethod
    def open(cls, ctx: ComponentContext, digest: str, timeout: float) -> AggregatorSide:
        ids = client_ids(ctx.parties)
        if ctx.role == "arbiter":
            guest_party = ctx.parties["guest"][0]
            # The guest by role: its party may also be the arbiter's.
            remote = {cid: "guest" if p == guest_party else p for p, cid in ids.items()}
        else:
            remote = {cid: p for p, cid in ids.items() if cid != GUEST_ID}
            if len(remote) == 1:
                log.warning(
                    "single_host_statistics_visible",
                    reason="with one host and the guest aggregating, the guest learns the "
                    "host's statistics; name an arbiter and use three clients or more",
                )
        return cls(ctx, remote, digest, timeout)

    def announce(self, r: int, array: Floats, final: bool = False) -> None:
        meta: dict[str, str | int | float | bool] = {"features": self.digest}
        if final:
            meta["final"] = True
        payload = FederationData(kind="aggregate", array=np.asarray(array, np.float64), meta=meta)
        for target in self.remote.values():
            self.ctx.federation.send(payload, to=target, tag="stats", iteration=r)

    def secure_step(self, r: int, length: int, count: int, own: Floats | None) -> Floats:
        """Step r's sum of the clients' `length`-long vectors, each sent as `count` limbs
        (`own`: the guest's, when it aggregates); homo_lr's RoundFailed when too few clients
        completed it."""
        config = step_config(self.ctx, r, count * length)
        frac = config.fixed_point.frac_bits
        client = SecAggClient(GUEST_ID, config) if own is not None else None
        rnd = Round(self.ctx, r, config, dict(self.remote), client)
        vector = None if own is None else limbs(own, frac, count)
        result = secure_sum(rnd, vector, self.timeout)
        self.ctx.metrics.log("clients", float(len(result.survivors)), step=r)
        self.ctx.metrics.log("dropped", float(len(rnd.dropped)), step=r)
        log.info("step_done", step=r, survivors=list(result.survivors), dropped=sorted(rnd.dropped))
        return joined(result, frac, count)


@dataclass
class ClientSide:
    """A client's steps with the aggregator (a host; the guest when the arbiter aggregates)."""

    ctx: ComponentContext
    link: AggregatorLink
    client_id: int
    digest: str
    min_summed: int

    @classmethod
    def open(
        cls, ctx: ComponentContext, names: list[str], wait_s: float, min_summed: int
    ) -> ClientSide:
        agg = aggregator_role(ctx.parties)
        link = AggregatorLink(ctx, agg, wait_s, time.monotonic() + wait_s)
        cid = client_ids(ctx.parties)[ctx.party_id]
        return cls(ctx, link, cid, features_digest(names), min_summed)

    def stats(self, r: int) -> FederationData:
        """The aggregator's `stats` of step r, checked against this client's columns."""
        got = self.link.recv("stats", r)
        if got.meta.get("features") != self.digest:
            raise TableError(
                f"{self.ctx.component_type}: this party's feature columns differ from the "
                "guest's (every client needs the same columns in the same order)"
            )
        return got

    def secure_step(self, r: int, vector: Floats, count: int) -> bool:
        """This client's part of step r's secure sum (`vector` as `count` limbs); False when
        the aggregator says it is out of the step (it was too late)."""
        fed, to = self.ctx.federation, self.link.aggregator
        config = step_config(self.ctx, r, count * vector.size)
        client = SecAggClient(self.client_id, config)
        fed.send(wire.keys_payload(client.advertise_keys()), to=to, tag="sa_keys", iteration=r)
        got = self.link.recv("sa_directory", r)
        if got.meta.get("excluded"):
            return False
        sent = client.share_keys(wire.read_directory(got))
        fed.send(wire.shares_payload(sent), to=to, tag="sa_shares", iteration=r)
        got = self.link.recv("sa_routed", r)
        if got.meta.get("excluded"):
            return False
        try:
            masked = client.masked_input(
                wire.read_routed(self.client_id, got),
                limbs(vector, config.fixed_point.frac_bits, count),
            )
        except SecAggError as exc:
            raise SecAggError(f"{self.ctx.component_type} step {r}: {exc}") from exc
        fed.send(wire.masked_payload(masked), to=to, tag="sa_masked", iteration=r)
        got = self.link.recv("sa_unmask", r)
        if got.meta.get("excluded"):
            return False
        request = wire.read_unmask_request(got)
        check_unmask(self.ctx.parties, request, self.min_summed, r)
        answer = client.unmask(request)
        fed.send(wire.unmask_payload(answer), to=to, tag="sa_unmask_shares", iteration=r)
        return True


def moments_vector(x: Floats, center: Floats | None, value_bound: float) -> Floats:
    """A client's step vector per column: (count, sum of d, sum of d^2) scaled into [-1, 1],
    d = x - center (step 0: center None, count and sum of x only). Missing values left out."""
    present = ~np.isnan(x)
    count = present.sum(axis=0) / ROW_SCALE
    if center is None:
        total = np.nansum(x, axis=0) / (value_bound * ROW_SCALE)
        return np.concatenate([count, total])
    d = np.where(present, x - center, 0.0) / (2.0 * value_bound)
    return np.concatenate([count, d.sum(axis=0) / ROW_SCALE, np.square(d).sum(axis=0) / ROW_SCALE])


@dataclass(frozen=True)
class Moments:
    """Global per-column statistics of the rows summed: count, mean, variance (ddof 0)."""

    count: Floats
    mean: Floats
    variance: Floats

    @property
    def std(self) -> Floats:
        return np.sqrt(np.maximum(self.variance, 0.0))


def first_mean(total: Floats, features: int, value_bound: float) -> Floats:
    """Step 0's sums -> the mean per column (0 where no value is present): the centre of
    step 1."""
    count = total[:features] * ROW_SCALE
    sums = total[features:] * (value_bound * ROW_SCALE)
    return np.divide(sums, count, out=np.zeros(features), where=count > 0)


def moments(total: Floats, center: Floats, value_bound: float) -> Moments:
    """Step 1's sums -> mean and variance of the rows it summed (centred at step 0's mean,
    so no cancellation; exact for the clients of step 1 even if step 0 had others)."""
    f = center.size
    count = np.rint(total[:f] * ROW_SCALE)
    scale = 2.0 * value_bound
    shift = np.divide(total[f : 2 * f] * ROW_SCALE * scale, count, out=np.zeros(f), where=count > 0)
    square = np.divide(
        total[2 * f :] * ROW_SCALE * scale * scale, count, out=np.zeros(f), where=count > 0
    )
    return Moments(count, center + shift, np.maximum(square - shift * shift, 0.0))


class Plan(Protocol):
    """What a component computes in steps: step 0's stats, each step's vector length, a
    client's vector from the step's stats, and what the aggregator announces next."""

    def first(self, features: int) -> Floats: ...

    def length(self, r: int, features: int) -> int: ...

    def limbs(self, r: int) -> int:
        """Ring elements per value of step r's vector (3; 1 for counts over 2^24)."""
        ...

    def vector(self, r: int, stats: Floats, x: Floats) -> Floats: ...

    def next(self, r: int, stats: Floats, total: Floats) -> tuple[Floats, bool]:
        """The next step's stats from step r's sum, and whether they are the result."""
        ...


def run_aggregator(agg: AggregatorSide, plan: Plan, features: int, own: Floats | None) -> Floats:
    """The aggregator's steps; the final stats. `own`: the guest's rows when it aggregates
    (it is then also a client, in-process)."""
    stats, r = plan.first(features), 0
    while True:
        agg.ctx.check_canceled()
        agg.announce(r, stats)
        mine = None if own is None else plan.vector(r, stats, own)
        total = agg.secure_step(r, plan.length(r, features), plan.limbs(r), mine)
        stats, final = plan.next(r, stats, total)
        r += 1
        if final:
            agg.announce(r, stats, final=True)
            agg.ctx.metrics.log("steps", float(r))
            return stats


def run_client(me: ClientSide, plan: Plan, x: Floats) -> Floats:
    """A client's steps until the aggregator's final stats, which it returns."""
    r = 0
    while True:
        me.ctx.check_canceled()
        got = me.stats(r)
        stats = np.asarray(got.array, dtype=np.float64)
        if got.meta.get("final"):
            return stats
        if not me.secure_step(r, plan.vector(r, stats, x), plan.limbs(r)):
            log.warning("left_out_of_step", party_id=me.ctx.party_id, step=r)
            me.ctx.metrics.log("left_out", 1.0, step=r)
        r += 1


def fit(
    ctx: ComponentContext, plan: Plan, table: Table | None, params: HomoPreprocessingParams
) -> Floats | None:
    """This party's side of the steps by its role: the final stats; None at an arbiter whose
    guest applies a given model (no step follows). `table`: this client's rows, already
    checked (None at the arbiter). A client refuses, before it sends anything, a layout where
    the aggregator would learn its statistics summed with fewer than its min_summed_updates
    clients' (homo_lr's check_summed), and to unmask a step whose survivors are too few."""
    timeout, wait_s = params.round_timeout_s, params.aggregator_wait_s
    if ctx.role in ("guest", "host") and not (
        ctx.role == "guest" and aggregator_role(ctx.parties) == "guest"
    ):
        check_summed(ctx, params.min_summed_updates, ctx.component_type)
    if ctx.role == "arbiter":
        shape = ctx.federation.recv(frm="guest", tag="model_shape")
        if shape.meta.get("apply"):
            return None
        agg = AggregatorSide.open(ctx, str(shape.meta["digest"]), timeout)
        return run_aggregator(agg, plan, int(shape.meta["features"]), None)
    assert table is not None
    names, x = list(table.feature_names), np.asarray(table.features, dtype=np.float64)
    if aggregator_role(ctx.parties) == "guest" and ctx.role == "guest":
        agg = AggregatorSide.open(ctx, features_digest(names), timeout)
        return run_aggregator(agg, plan, len(names), x)
    if ctx.role == "guest":  # the arbiter aggregates and has no data: it learns the columns
        digest = features_digest(names)
        ctx.federation.send(
            wire.control(features=len(names), digest=digest), to="arbiter", tag="model_shape"
        )
    return run_client(ClientSide.open(ctx, names, wait_s, params.min_summed_updates), plan, x)


def tell_arbiter_apply(ctx: ComponentContext) -> None:
    """With a given model the guest tells the arbiter that no step follows."""
    if ctx.role == "guest" and aggregator_role(ctx.parties) == "arbiter":
        ctx.federation.send(wire.control(apply=True), to="arbiter", tag="model_shape")


@dataclass(frozen=True)
class MomentsPlan:
    """Steps 0 and 1: the global mean per column, then mean and variance centred at it.

    step 0  stats: zeros (f)           vector: count, sum x                    (2f)
    step 1  stats: step 0's mean (f)   vector: count, sum d, sum d^2, d = x - mean  (3f)
    final   stats: mean, std (2f)
    """

    value_bound: float

    def first(self, features: int) -> Floats:
        return np.zeros(features)

    def length(self, r: int, features: int) -> int:
        return (2 if r == 0 else 3) * features

    def limbs(self, r: int) -> int:
        return LIMBS

    def vector(self, r: int, stats: Floats, x: Floats) -> Floats:
        return moments_vector(x, None if r == 0 else stats, self.value_bound)

    def next(self, r: int, stats: Floats, total: Floats) -> tuple[Floats, bool]:
        if r == 0:
            return first_mean(total, stats.size, self.value_bound), False
        found = moments(total, stats, self.value_bound)
        return np.concatenate([found.mean, found.std]), True
