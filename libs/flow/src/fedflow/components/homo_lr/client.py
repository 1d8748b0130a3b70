"""A homo_lr client: local training on its own rows, its contribution to each round, and a
client's side of the secure-aggregation round over the federation (a host's; the guest's when
the arbiter aggregates; when the guest aggregates it runs its own client in-process,
aggregator.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import structlog
from fedcrypto.secagg import (
    SecAggClient,
    SecAggConfig,
    SecAggError,
    UnmaskRefused,
    UnmaskRequest,
)
from fedschemas import FederationData
from tenacity import Retrying, retry_if_exception_type, stop_before_delay, wait_exponential

from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr import privacy, resume, wire
from fedflow.components.homo_lr.learner import LOGISTIC, Learner
from fedflow.components.homo_lr.params import HomoLrParams
from fedflow.federation import RecvTimeout
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

log = structlog.get_logger("fedflow.components.homo_lr")

MODULUS_BITS: Final = 64


class UpdateRejected(ValueError):
    """A client's own contribution cannot go into the sum (NaN, wrong shape): it sits out."""


def client_ids(parties: Mapping[str, list[str]]) -> dict[str, int]:
    """Secure-aggregation ids: the guest is 1, the hosts 2.. in the pipeline's order."""
    ordered = [*parties["guest"], *parties.get("host", [])]
    return {party: i + 1 for i, party in enumerate(ordered)}


def aggregator_role(parties: Mapping[str, list[str]]) -> str:
    """The arbiter aggregates when the pipeline names one; else the guest."""
    return "arbiter" if parties.get("arbiter") else "guest"


def secagg_config(ctx: ComponentContext, params: HomoLrParams, r: int, length: int) -> SecAggConfig:
    """One round's aggregation config: every party derives the same one."""
    session = f"fedmq.homo_lr/{ctx.job_id}/{ctx.component}/{ctx.attempt}/{r}".encode()
    return SecAggConfig(
        session=session,
        num_clients=len(client_ids(ctx.parties)),
        vector_length=length,
        modulus_bits=MODULUS_BITS,
        clip=params.update_bound,
    )


def hidden_among(parties: Mapping[str, list[str]], survivors: Collection[int]) -> int:
    """How many client updates the aggregator learns only as one sum: every survivor's, less
    its own party's when that party is also a client that survived (the guest aggregating, or
    an arbiter played by a client's party): it subtracts its own."""
    aggregator = (parties.get("arbiter") or parties["guest"])[0]
    own = client_ids(parties).get(aggregator)
    return len(survivors) - (1 if own in survivors else 0)


def check_layout(ctx: ComponentContext, params: HomoLrParams) -> None:
    """Refuse, before anything is sent, a layout where the aggregator would learn fewer
    updates summed together than this party's `min_summed_updates`; at a client, also an
    aggregation that shows the aggregator its single update when that is above 1; and Krum
    with fewer clients than 2 krum_byzantine + 3."""
    clients = len(client_ids(ctx.parties))
    least = 2 * params.krum_byzantine + 3
    if params.aggregation == "krum" and clients < least:
        raise ValueError(
            f"homo_lr: aggregation krum with krum_byzantine {params.krum_byzantine} needs at "
            f"least {least} clients (2f + 3), this job has {clients}: lower krum_byzantine or "
            "choose median or trimmed_mean"
        )
    if params.aggregation != "fedavg":  # no sum to hide in; a client may refuse to be seen
        if ctx.role in ("guest", "host") and params.min_summed_updates > 1:
            raise ValueError(
                f"homo_lr: aggregation {params.aggregation} sends every client's update to the "
                f"aggregator in the clear, but party {ctx.party_id}'s min_summed_updates is "
                f"{params.min_summed_updates} (its policy: the aggregator may see this party's "
                "update only summed with others'): this client does not reveal its update; use "
                "aggregation fedavg (secure aggregation) with clip_norm"
            )
        return
    check_summed(ctx, params.min_summed_updates, "homo_lr")


def check_summed(ctx: ComponentContext, min_summed: int, name: str) -> None:
    """Refuse, before anything is sent, a layout where the aggregator would learn fewer than
    `min_summed` clients' contributions summed together (homo_lr's and the horizontal
    preprocessing components' min_summed_updates; `name` the component's, for the error)."""
    hidden = hidden_among(ctx.parties, range(1, len(client_ids(ctx.parties)) + 1))
    if hidden < min_summed:
        raise ValueError(
            f"{name}: min_summed_updates is {min_summed} at party "
            f"{ctx.party_id}, but the aggregator ({aggregator_role(ctx.parties)}) would learn "
            f"{hidden} client update(s) summed together (with the guest aggregating for one "
            "host it learns that host's update exactly): name an arbiter of its own party, or "
            "add clients"
        )


def check_unmask(
    parties: Mapping[str, list[str]], request: UnmaskRequest, min_summed: int, r: int
) -> None:
    """UnmaskRefused when answering `request` would let the aggregator learn fewer than
    `min_summed` updates summed together (too many clients dropped out of the round)."""
    hidden = hidden_among(parties, request.survivors)
    if hidden < min_summed:
        raise UnmaskRefused(
            f"homo_lr round {r}: the aggregator would learn {hidden} update(s) summed together "
            f"(survivors {list(request.survivors)}), fewer than this party's "
            f"min_summed_updates {min_summed}: this client does not unmask"
        )


@dataclass
class AggregatorLink:
    """A client's receives from the aggregator, riding out an aggregator that is away.

    A receive that times out (the worker's receive timeout) is not the end: the aggregator's
    worker may be down or restarting, and it resumes from its checkpoint and re-sends what it
    had sent. So the client waits again, for exponentially longer each time, until `deadline`
    (monotonic) has passed; only then does RecvTimeout fail its task. Only the scheduler fails
    a job: this deadline is the client's own last resort."""

    ctx: ComponentContext
    aggregator: str
    wait_s: float
    deadline: float

    @classmethod
    def open(cls, ctx: ComponentContext, aggregator: str, params: HomoLrParams) -> AggregatorLink:
        wait_s = params.aggregator_wait_s
        return cls(ctx, aggregator, wait_s, time.monotonic() + wait_s)

    def recv(self, tag: str, iteration: int) -> FederationData:
        # The backoff is spent waiting on the mailbox, not asleep: tenacity's `sleep` hands
        # each backoff interval (1 s doubling to 30 s) to the next receive as its timeout, so
        # the message is taken the moment the aggregator's restarted worker re-sends it. The
        # first receive waits the worker's own receive timeout (None here).
        next_wait: list[float | None] = [None]
        retrying = Retrying(
            retry=retry_if_exception_type(RecvTimeout),
            stop=stop_before_delay(max(0.0, self.deadline - time.monotonic())),
            wait=wait_exponential(multiplier=1.0, min=1.0, max=30.0),
            sleep=lambda seconds: next_wait.__setitem__(0, seconds),
            before_sleep=lambda state: log.warning(
                "aggregator_unreachable",
                party_id=self.ctx.party_id,
                tag=tag,
                round=iteration,
                attempt=state.attempt_number,
                left_s=round(self.deadline - time.monotonic(), 1),
            ),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self.ctx.check_canceled()
                    wait = next_wait[0]
                    if wait is not None:
                        wait = max(0.001, min(wait, self.deadline - time.monotonic()))
                    return self.ctx.federation.recv(
                        frm=self.aggregator, tag=tag, iteration=iteration, timeout=wait
                    )
        except RecvTimeout as exc:
            raise RecvTimeout(
                f"{exc}; the aggregator was away past this client's aggregator_wait_s "
                f"({self.wait_s:g} s)"
            ) from exc
        raise AssertionError("unreachable: tenacity reraises the last RecvTimeout")


def features_digest(names: list[str]) -> str:
    """What the guest announces so that every client checks it has the same columns, in order."""
    return hashlib.sha256("\x1f".join(names).encode()).hexdigest()[:32]


def model_table(names: list[str], weights: hmath.Floats) -> Table:
    """homo_lr's shared model: one row per feature name (then the intercept), its weight."""
    return LOGISTIC.table(names, weights, HomoLrParams())


def labelled_rows(table: Table, name: str, what: str) -> tuple[hmath.Floats, hmath.Floats]:
    """`table`'s features with the intercept column (missing values 0) and its 0/1 labels;
    a clear error for a table that cannot train or validate (`what`: which input)."""
    if table.labels is None:
        raise TableError(f"{name}: every client's {what} needs labels (0 or 1); it has none")
    bad = np.unique(table.labels[(table.labels != 0.0) & (table.labels != 1.0)])
    if bad.size:
        raise TableError(f"{name} takes labels 0 or 1, found {bad[:5].tolist()} in {what}")
    if table.rows == 0:
        raise TableError(f"{name}: this client's {what} has no rows")
    if table.rows > hmath.ROW_SCALE:
        raise TableError(f"{name}: a client's {what} holds at most {int(hmath.ROW_SCALE)} rows")
    x = np.nan_to_num(np.asarray(table.features, dtype=np.float64), nan=0.0)
    return hmath.with_intercept(x), np.asarray(table.labels, dtype=np.float64)


def check_validation(ctx: ComponentContext, params: HomoLrParams, validating: bool) -> None:
    """validate_data with differential privacy is refused: the clients then withhold their
    loss (privacy.py), and a validation loss is one."""
    if validating and privacy.settings(params) is not None:
        raise ValueError(
            f"{ctx.component_type}: validate_data does not go with differential privacy "
            "(dp_noise_multiplier, dp_central_noise_multiplier): the clients then do not "
            "send a loss, and the validation loss is one; leave validate_data out"
        )


@dataclass
class LocalClient:
    """One client's rows and how it trains on them; `validate`: its validation rows (features
    with the intercept, labels), whose loss under each round's global model it adds."""

    client_id: int
    names: list[str]
    x1: hmath.Floats
    y: hmath.Floats
    params: HomoLrParams
    learner: Learner = LOGISTIC
    validate: tuple[hmath.Floats, hmath.Floats] | None = None

    @classmethod
    def from_table(
        cls,
        table: Table,
        client_id: int,
        params: HomoLrParams,
        learner: Learner = LOGISTIC,
        validate: Table | None = None,
    ) -> LocalClient:
        name = learner.name
        x1, y = labelled_rows(table, name, "data")
        rows = None
        if validate is not None:
            if list(validate.feature_names) != list(table.feature_names):
                raise TableError(
                    f"{name}: validate_data needs the same feature columns as data, in the same "
                    f"order (data: {', '.join(table.feature_names)}; validate_data: "
                    f"{', '.join(validate.feature_names)})"
                )
            rows = labelled_rows(validate, name, "validate_data")
        return cls(client_id, list(table.feature_names), x1, y, params, learner, rows)

    @property
    def validating(self) -> bool:
        return self.validate is not None

    @property
    def model_length(self) -> int:
        return self.learner.length(len(self.names), self.params)

    @property
    def contribution_length(self) -> int:
        extra = hmath.EXTRA + (hmath.VALIDATION if self.validating else 0)
        return self.model_length + extra

    def contribution(self, weights: hmath.Floats, r: int) -> tuple[hmath.Floats, dict[str, float]]:
        """This round's vector for the secure sum, and what the client logs about it;
        UpdateRejected when it is not a valid update (the client then sits the round out)."""
        p = self.params
        training = hmath.LocalTraining(
            p.local_epochs,
            p.batch_size,
            p.learning_rate,
            p.alpha,
            p.seed,
            p.proximal_mu,
            p.learning_rate_decay,
        ).at_round(r)
        loss = self.learner.loss(weights, self.x1, self.y)
        stream = (p.seed, r, self.client_id)
        local = self.learner.train(weights, self.x1, self.y, training, stream, p)
        if np.shape(local) != weights.shape:
            raise UpdateRejected(
                f"update has shape {np.shape(local)}, the model needs {weights.shape}"
            )
        delta, clipped = hmath.clip_norm(np.asarray(local) - weights, p.clip_norm)
        vector = hmath.contribution(weights, weights + delta, loss, len(self.y))
        facts = {"local_loss": loss}
        if self.validate is not None:  # the global model's, before this client trains
            vx1, vy = self.validate
            held_out = self.learner.loss(weights, vx1, vy)
            q = len(vy) / hmath.ROW_SCALE
            vector = np.concatenate([vector, [q * held_out, q]])
            facts["local_validation_loss"] = held_out
        problem = hmath.update_problem(vector, self.contribution_length)
        if problem is not None:
            raise UpdateRejected(problem)
        over = int(np.count_nonzero(np.abs(vector) > p.update_bound))
        return vector, {
            **facts,
            "clipped_update": float(clipped),
            "clipped_coordinates": float(over),
        }


def _excluded(payload: FederationData) -> bool:
    return bool(payload.meta.get("excluded", False))


def train(ctx: ComponentContext, learner: Learner = LOGISTIC) -> Mapping[str, Table]:
    """A client (a host; the guest too when the arbiter aggregates): train on its rows each
    round and join the round's secure sum. Checkpoints: after each round (iteration r), and
    within round r (at r - 1) its secure-aggregation state before the messages that depend on
    its randomness leave (resume.py), so a restarted task re-sends the same bytes."""
    params = ctx.params_as(learner.params_type)
    ids = client_ids(ctx.parties)
    validate = ctx.input("validate_data") if "validate_data" in ctx.inputs else None
    me = LocalClient.from_table(ctx.input("data"), ids[ctx.party_id], params, learner, validate)
    check_layout(ctx, params)
    check_validation(ctx, params, me.validating)
    agg = aggregator_role(ctx.parties)
    fed = ctx.federation
    fed.bind_dims(d=me.model_length, v=me.contribution_length)
    link = AggregatorLink.open(ctx, agg, params)
    saved = ctx.checkpoints.latest()
    state: dict[str, Any] = dict(saved.state) if saved is not None else {}
    r = int(state.get("next", 0))
    rejected = int(state.get("rejected", 0))
    pending = state.get("round")
    if ctx.role == "guest" and saved is None:  # the arbiter has no data: it learns the length
        told: dict[str, str | int | bool] = {"validate": True} if me.validating else {}
        digest = features_digest(me.names)
        shape = wire.control(features=len(me.names), digest=digest, **told)
        fed.send(shape, to=agg, tag="model_shape")
    while True:
        ctx.check_canceled()
        start = link.recv("global_model", r)
        if r == 0 and start.meta.get("features") != features_digest(me.names):
            raise TableError(
                f"{learner.name}: this party's feature columns differ from the guest's (every "
                f"client needs the same columns in the same order; here: {', '.join(me.names)})"
            )
        if bool(start.meta.get("validate", False)) != me.validating:
            raise ValueError(
                f"{learner.name}: validate_data is given at "
                f"{'this party' if me.validating else 'the guest'} but not at "
                f"{'the guest' if me.validating else 'this party'}: every client gives "
                "validate_data, or none does"
            )
        weights = np.asarray(start.array, dtype=np.float64)
        if start.meta.get("final"):
            break
        try:
            vector, facts = me.contribution(weights, r)
        except UpdateRejected as exc:
            rejected += 1
            log.error("update_rejected", party_id=ctx.party_id, round=r, reason=str(exc))
            ctx.metrics.log("rejected_update", 1.0, step=r)
            tag = "sa_keys" if params.aggregation == "fedavg" else "plain_update"
            fed.send(wire.control(withdraw=str(exc)), to=agg, tag=tag, iteration=r)
        else:
            for name, value in facts.items():
                ctx.metrics.log(name, value, step=r)
            dp = privacy.settings(params)
            if dp is not None:  # counts every round this client contributed to (r - rejected)
                ctx.metrics.log("dp_epsilon", dp.epsilon(r + 1 - rejected), step=r)
            if params.aggregation != "fedavg":  # in the clear: the aggregator sees it
                update = wire.plain_update_payload(vector)
                fed.send(update, to=agg, tag="plain_update", iteration=r)
            else:
                config = secagg_config(ctx, params, r, me.contribution_length)
                mid = pending if isinstance(pending, Mapping) else None

                def keep(snap: dict[str, Any], r: int = r, rejected: int = rejected) -> None:
                    ctx.checkpoints.save(r - 1, {"next": r, "rejected": rejected, "round": snap})

                _secure_round(ctx, link, config, me, vector, r, mid, keep)
        pending = None
        r += 1
        ctx.checkpoints.save(r - 1, {"next": r, "rejected": rejected})
        ctx.report_progress(min(1.0, r / params.rounds))
    ctx.metrics.log("rounds", float(r))
    ctx.metrics.log("rejected_updates", float(rejected))
    return {"model": learner.table(me.names, weights, params)}


def _secure_round(
    ctx: ComponentContext,
    link: AggregatorLink,
    config: SecAggConfig,
    me: LocalClient,
    vector: hmath.Floats,
    r: int,
    saved: Mapping[str, Any] | None,
    keep: Callable[[dict[str, Any]], None],
) -> None:
    """Bonawitz rounds 0-2 and 4 with the aggregator (`link`); returns early when it
    says this client is out of the round (it dropped, or was too late). `saved`: the client's
    state from a checkpoint of this round (a restarted task); `keep` checkpoints it."""
    fed = ctx.federation
    params = ctx.params_as(me.learner.params_type)
    sent = None
    if saved is not None:
        client, sent = resume.restore(saved, config, ctx.checkpoints)
    else:
        client = SecAggClient(me.client_id, config)
        client.advertise_keys()
        keep(resume.snapshot(client, ctx.checkpoints))
    fed.send(wire.keys_payload(client.own_keys()), to=link.aggregator, tag="sa_keys", iteration=r)
    got = link.recv("sa_directory", r)
    if _excluded(got):
        return
    if sent is None:
        sent = client.share_keys(wire.read_directory(got))
        keep(resume.snapshot(client, ctx.checkpoints, sent))
    fed.send(wire.shares_payload(sent), to=link.aggregator, tag="sa_shares", iteration=r)
    # From here on a dropout of this client is recovered from the others' shares of its key.
    log.info("shares_sent", party_id=ctx.party_id, client=me.client_id, round=r)
    got = link.recv("sa_routed", r)
    if _excluded(got):
        return
    dp = privacy.settings(params)
    if dp is not None:  # local: noise before masking, keyed by this round's client secret
        vector = dp.apply(vector, client)
    try:
        masked = client.masked_input(wire.read_routed(me.client_id, got), vector)
    except SecAggError as exc:
        raise SecAggError(f"homo_lr round {r}: {exc}") from exc
    fed.send(wire.masked_payload(masked), to=link.aggregator, tag="sa_masked", iteration=r)
    got = link.recv("sa_unmask", r)
    if _excluded(got):
        return
    request = wire.read_unmask_request(got)
    check_unmask(ctx.parties, request, params.min_summed_updates, r)
    answer = client.unmask(request)
    fed.send(wire.unmask_payload(answer), to=link.aggregator, tag="sa_unmask_shares", iteration=r)
