"""The aggregator of every round: the arbiter when the pipeline names one, else the guest, which
is then also a client (its own contribution goes into the secure sum in-process, through the
same SecAggClient state machine as a host's)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, TypeVar

import numpy as np
import structlog
from fedcrypto.secagg import (
    AdvertiseKeys,
    AggregationResult,
    EncryptedShares,
    KeyDirectory,
    SecAggClient,
    SecAggConfig,
    SecAggError,
    SecAggServer,
)
from fedschemas import FederationData

from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr import privacy, resume, wire
from fedflow.components.homo_lr.client import (
    LocalClient,
    UpdateRejected,
    aggregator_role,
    check_layout,
    check_validation,
    client_ids,
    features_digest,
    secagg_config,
)
from fedflow.components.homo_lr.client import train as client_train
from fedflow.components.homo_lr.learner import LOGISTIC, Learner
from fedflow.components.homo_lr.params import HomoLrParams
from fedflow.federation import RecvTimeout
from fedflow.protocol import ProtocolViolation
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

log = structlog.get_logger("fedflow.components.homo_lr")

T = TypeVar("T")
GUEST_ID: Final = 1


class RoundFailed(RuntimeError):
    """Too few clients completed a round for its sum to be recovered."""


@dataclass
class Round:
    """One round at the aggregator: who is still in, the server's state machine, and the
    guest's own client."""

    ctx: ComponentContext
    r: int
    config: SecAggConfig
    hosts: dict[int, str]  # client id -> how to address it, the remote clients still in
    own: SecAggClient | None
    keep: Callable[[dict[str, Any]], None] = lambda _: None
    """Checkpoints the round's state (`state()`) before each message the aggregator sends."""
    recorded: Mapping[int, tuple[str, str, str]] = field(default_factory=dict)
    """From a checkpoint of this round: the clients dropped then, id -> (party, why, at which
    step): a restarted aggregator drops them at the same step, so it re-sends the same bytes."""
    own_state: dict[str, Any] | None = None
    """The guest's own client's checkpointed state (resume.py); None: none yet."""
    own_sent: EncryptedShares | None = None
    server: SecAggServer = field(init=False)
    dropped: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # (party, why, tag)
    told: set[int] = field(default_factory=set)  # dropped hosts told they are out
    survivors: tuple[int, ...] = ()  # a plain round's: whose updates it combined

    def __post_init__(self) -> None:
        self.server = SecAggServer(self.config)

    def state(self) -> dict[str, Any]:
        return {
            "dropped": {str(c): list(v) for c, v in self.dropped.items()},
            "own": self.own_state,
        }

    def own_keys(self) -> AdvertiseKeys:
        assert self.own is not None
        if self.own_state is None:
            msg = self.own.advertise_keys()
            self.own_state = resume.snapshot(self.own, self.ctx.checkpoints)
            return msg
        return self.own.own_keys()

    def own_shares(self, directory: KeyDirectory) -> EncryptedShares:
        assert self.own is not None
        if self.own_sent is None:
            self.own_sent = self.own.share_keys(directory)
            self.own_state = resume.snapshot(self.own, self.ctx.checkpoints, self.own_sent)
        return self.own_sent

    def collect(
        self, tag: str, timeout: float, read: Callable[[int, FederationData], T]
    ) -> dict[int, T]:
        """Each remaining host's `tag` message of this round, read; a host not heard from by
        the deadline, or whose message does not pass the checks, leaves the round."""
        deadline = time.monotonic() + timeout
        got: dict[int, T] = {}
        for cid, party in list(self.hosts.items()):
            before = self.recorded.get(cid)
            if before is not None and before[2] == tag:
                self.leave(cid, before[1], tag)  # as the run before the restart decided
                continue
            try:
                payload = self.ctx.federation.recv(
                    frm=party,
                    tag=tag,
                    iteration=self.r,
                    timeout=max(0.001, deadline - time.monotonic()),
                )
                got[cid] = read(cid, payload)
            except RecvTimeout:
                self.leave(cid, f"no {tag} within {timeout:g} s", tag)
            except (ProtocolViolation, SecAggError, UpdateRejected) as exc:
                self.leave(cid, f"{tag}: {exc}", tag)
        return got

    def leave(self, cid: int, why: str, tag: str) -> None:
        party = self.hosts.pop(cid)
        self.dropped[cid] = (party, why, tag)
        log.warning("client_dropped", round=self.r, party_id=party, client=cid, reason=why)

    def send_next(self, tag: str, payload_for: Callable[[int], FederationData]) -> None:
        """The round's next message to every host still in it; every host that left since the
        last step is told it is out of the round under the same tag, so that a host that is
        alive but was too late never waits for a message that will not come. Checkpointed
        first: who dropped decides what is sent."""
        self.keep(self.state())
        for cid, (party, _, _) in self.dropped.items():
            if cid not in self.told:
                self.told.add(cid)
                self.ctx.federation.send(
                    wire.control(excluded=True), to=party, tag=tag, iteration=self.r
                )
        for cid, party in self.hosts.items():
            self.ctx.federation.send(payload_for(cid), to=party, tag=tag, iteration=self.r)

    def feed(self, got: Mapping[int, T], receive: Callable[[T], None], tag: str) -> None:
        """Hand what was collected to the server; a message it refuses takes its sender out."""
        for cid, msg in got.items():
            try:
                receive(msg)
            except SecAggError as exc:
                self.leave(cid, str(exc), tag)

    def close(self, close: Callable[[], T]) -> T:
        """Close a step of the server; too few clients left fails the round, saying who
        dropped and why."""
        try:
            return close()
        except SecAggError as exc:
            why = "; ".join(
                f"client {c} ({party}): {reason}"
                for c, (party, reason, _) in sorted(self.dropped.items())
            )
            raise RoundFailed(
                f"homo_lr round {self.r}: {exc}; dropped: {why or 'none'} (at most a third of "
                "the clients may drop out of a round)"
            ) from exc


def _withdrawn(cid: int, payload: FederationData) -> FederationData:
    if payload.kind == "plain_control":
        raise UpdateRejected(f"withdrew: {payload.meta.get('withdraw', 'no reason given')}")
    return payload


def secure_sum(rnd: Round, own_vector: hmath.Floats | None, timeout: float) -> AggregationResult:
    """Bonawitz rounds 0-2 and 4 with the round's hosts (and the guest's own client)."""
    server, own = rnd.server, rnd.own

    # Round 0: keys (a host that withdraws says so instead).
    if own is not None:
        server.receive_keys(rnd.own_keys())
    keys = rnd.collect("sa_keys", timeout, lambda c, p: wire.read_keys(c, _withdrawn(c, p)))
    rnd.feed(keys, server.receive_keys, "sa_keys")
    directory = rnd.close(server.key_directory)
    rnd.send_next("sa_directory", lambda _: wire.directory_payload(directory))

    # Round 1: encrypted shares, routed (the aggregator cannot open them).
    if own is not None:
        server.receive_shares(rnd.own_shares(directory))
    shares = rnd.collect("sa_shares", timeout, wire.read_shares)
    rnd.feed(shares, server.receive_shares, "sa_shares")
    routed = rnd.close(server.route_shares)
    rnd.send_next("sa_routed", lambda cid: wire.shares_payload(routed[cid]))

    # Round 2: masked inputs; whoever is missing now is a dropout whose masks get recovered.
    if own is not None and own_vector is not None:
        server.receive_masked_input(own.masked_input(routed[GUEST_ID], own_vector))
    masked = rnd.collect("sa_masked", timeout, wire.read_masked)
    rnd.feed(masked, server.receive_masked_input, "sa_masked")
    request = rnd.close(server.unmask_request)
    rnd.send_next("sa_unmask", lambda _: wire.unmask_request_payload(request))

    # Round 4: unmasking.
    if own is not None:
        server.receive_unmasking(own.unmask(request))
    answers = rnd.collect("sa_unmask_shares", timeout, wire.read_unmask)
    rnd.feed(answers, server.receive_unmasking, "sa_unmask_shares")
    return rnd.close(server.result)


def _plain_update(length: int) -> Callable[[int, FederationData], hmath.Floats]:
    def read(cid: int, payload: FederationData) -> hmath.Floats:
        vector = np.asarray(_withdrawn(cid, payload).array, dtype=np.float64)
        problem = hmath.update_problem(vector, length)
        if problem is not None:
            raise UpdateRejected(problem)
        return vector

    return read


def plain_round(
    rnd: Round, own_vector: hmath.Floats | None, params: HomoLrParams, k1: int, length: int
) -> hmath.PlainRound:
    """A round without secure aggregation (aggregation other than fedavg): every client's
    contribution in the clear (`plain_update`), clipped to server_clip_norm and combined by
    the rule; a client late, withdrawn or with a bad update leaves the round. Each clipped
    update is recorded (event update_clipped, metrics server_clipped and
    server_clip_factor_<party>)."""
    vectors = rnd.collect("plain_update", params.round_timeout_s, _plain_update(length))
    if own_vector is not None:
        vectors[GUEST_ID] = own_vector
    try:
        out = hmath.combine_plain(
            params.aggregation,
            vectors,
            k1,
            clip=params.server_clip_norm,
            trim_fraction=params.trim_fraction,
            byzantine=params.krum_byzantine,
        )
    except hmath.RobustRuleError as exc:
        why = "; ".join(
            f"client {c} ({party}): {reason}"
            for c, (party, reason, _) in sorted(rnd.dropped.items())
        )
        raise RoundFailed(
            f"homo_lr round {rnd.r} ({params.aggregation}): {exc}; dropped: {why or 'none'}"
        ) from exc
    parties = {cid: party for party, cid in client_ids(rnd.ctx.parties).items()}
    metrics = rnd.ctx.metrics
    for cid, factor in sorted(out.clipped.items()):
        party = parties.get(cid, str(cid))
        log.warning(
            "update_clipped",
            round=rnd.r,
            party_id=party,
            client=cid,
            factor=factor,
            norm=(params.server_clip_norm or 0.0) / factor,
            bound=params.server_clip_norm,
        )
        metrics.log(f"server_clip_factor_{party}", factor, step=rnd.r)
    if params.server_clip_norm is not None:
        metrics.log("server_clipped", float(len(out.clipped)), step=rnd.r)
    if out.chosen is not None:
        metrics.log("krum_chosen", float(out.chosen), step=rnd.r)
    rnd.survivors = tuple(sorted(vectors))
    if length > k1 + hmath.EXTRA:  # validate_data: over every visible client's rows
        total = np.sum(np.stack(list(vectors.values())), axis=0)
        out = replace(out, validation=hmath.validation_loss(total, k1))
    return out


def guest(ctx: ComponentContext, learner: Learner = LOGISTIC) -> Mapping[str, Table]:
    """The guest's role: a client when the pipeline names an arbiter, else the aggregator."""
    if aggregator_role(ctx.parties) == "arbiter":
        return client_train(ctx, learner)
    return train(ctx, learner)


def train(ctx: ComponentContext, learner: Learner = LOGISTIC) -> Mapping[str, Table]:
    """The aggregator's rounds (the arbiter's role; the guest's without an arbiter).

    Checkpoints: after round r (iteration r) the model, the server optimizer's moments and the
    early-stopping state; within round r (at r - 1), before each message it sends, who has
    dropped at which step and the guest's own client's secure-aggregation state, so that a
    restarted aggregator redoes the round from its mailbox and sends the same bytes."""
    params = ctx.params_as(learner.params_type)
    fed = ctx.federation
    ids = client_ids(ctx.parties)
    check_layout(ctx, params)
    me: LocalClient | None = None
    if ctx.role == "arbiter":
        shape = fed.recv(frm="guest", tag="model_shape")
        features, digest = int(shape.meta["features"]), str(shape.meta["digest"])
        validating = bool(shape.meta.get("validate", False))
        guest_party = ctx.parties["guest"][0]
        # The guest by role: its party may also be the arbiter's.
        remote = {cid: "guest" if p == guest_party else p for p, cid in ids.items()}
    else:
        validate = ctx.input("validate_data") if "validate_data" in ctx.inputs else None
        me = LocalClient.from_table(ctx.input("data"), GUEST_ID, params, learner, validate)
        features, digest = len(me.names), features_digest(me.names)
        validating = me.validating
        remote = {cid: p for p, cid in ids.items() if cid != GUEST_ID}
    check_validation(ctx, params, validating)
    # The clients check that they all validate, or none does (client.train).
    told: dict[str, str | int | float | bool] = {"validate": True} if validating else {}
    if me is not None and len(remote) == 1:
        # The guest subtracts its own contribution from the sum: the host's is left.
        log.warning(
            "single_host_update_visible",
            reason="with one host and the guest aggregating, the guest learns the host's "
            "update; name an arbiter and use three clients or more to hide single updates",
        )
    model_length = learner.length(features, params)
    length = model_length + hmath.EXTRA + (hmath.VALIDATION if validating else 0)
    fed.bind_dims(d=model_length, v=length)
    rule = hmath.ServerRule(
        params.server_optimizer,
        params.server_learning_rate,
        params.server_beta1,
        params.server_beta2,
        params.server_tau,
    )
    saved = ctx.checkpoints.latest()
    state: dict[str, Any] = dict(saved.state) if saved is not None else {}
    start_model = state["weights"] if "weights" in state else learner.initial(features, params)
    weights = np.asarray(start_model, dtype=np.float64)
    moments = {k: np.asarray(v, dtype=np.float64) for k, v in state.get("moments", {}).items()}
    moments = moments or rule.initial(model_length)
    best = float(state.get("best", np.inf))
    stopped = bool(state.get("stopped", False))
    r = int(state.get("next", 0))
    pending: Mapping[str, Any] | None = state.get("round")
    dp = privacy.settings(params)

    def boundary() -> dict[str, Any]:
        return {
            "next": r,
            "weights": weights,
            "moments": moments,
            "best": best,
            "stopped": stopped,
        }

    while r < params.rounds and not stopped:
        ctx.check_canceled()
        start = FederationData(kind="aggregate", array=weights, meta={"features": digest, **told})
        for target in remote.values():
            fed.send(start, to=target, tag="global_model", iteration=r)
        config = secagg_config(ctx, params, r, length)
        own_vector: hmath.Floats | None = None
        own: SecAggClient | None = None
        own_state: dict[str, Any] | None = None
        own_sent = None
        if pending is not None and pending.get("own") is not None:
            own_state = dict(pending["own"])
            own, own_sent = resume.restore(own_state, config, ctx.checkpoints)
        if me is not None:
            try:
                own_vector, facts = me.contribution(weights, r)
                for name, value in facts.items():
                    ctx.metrics.log(name, value, step=r)
                own = own or SecAggClient(GUEST_ID, config)
                if dp is not None:
                    own_vector = dp.apply(own_vector, own)
            except UpdateRejected as exc:
                log.error("update_rejected", party_id=ctx.party_id, round=r, reason=str(exc))
                ctx.metrics.log("rejected_update", 1.0, step=r)
                own = None
        recorded = {
            int(c): (str(v[0]), str(v[1]), str(v[2]))
            for c, v in (pending or {}).get("dropped", {}).items()
        }

        def keep(mid: dict[str, Any], r: int = r) -> None:
            ctx.checkpoints.save(r - 1, {**boundary(), "round": mid})

        rnd = Round(
            ctx,
            r,
            config,
            dict(remote),
            own,
            keep=keep,
            recorded=recorded,
            own_state=own_state,
            own_sent=own_sent,
        )
        if params.aggregation != "fedavg":
            plain = plain_round(rnd, own_vector, params, model_length, length)
            delta, loss, validation = plain.delta, plain.loss, plain.validation
            survivors, error_bound = rnd.survivors, 0.0
        else:
            result = secure_sum(rnd, own_vector, params.round_timeout_s)
            # Central DP: the noise goes on the sum here, before anything derived from it leaves.
            total = result.sum if dp is None else dp.finish(result.sum)
            delta, loss = hmath.average(weights, total)
            validation = hmath.validation_loss(total, model_length) if validating else None
            survivors, error_bound = result.survivors, result.max_abs_error
        weights, moments = rule.step(weights, delta, moments)
        if dp is None:
            ctx.metrics.log("loss", loss, step=r)
        else:  # the clients withheld their loss; epsilon of a client in every round so far
            ctx.metrics.log("dp_epsilon", dp.epsilon(r + 1), step=r)
            if dp.central:
                noise = dp.noise_on_mean(len(survivors))
                ctx.metrics.log("dp_noise_std", noise, step=r)
        if validation is not None:
            ctx.metrics.log("validation_loss", validation, step=r)
        ctx.metrics.log("clients", float(len(survivors)), step=r)
        ctx.metrics.log("dropped", float(len(rnd.dropped)), step=r)
        ctx.metrics.log("sum_error_bound", error_bound, step=r)
        log.info(
            "round_done",
            round=r,
            loss=loss,
            survivors=list(survivors),
            dropped=sorted(rnd.dropped),
        )
        r += 1
        watched = loss if validation is None else validation  # early_stop's
        stopped = params.early_stop and best - watched < params.tol
        best = min(best, watched)
        pending = None
        ctx.checkpoints.save(r - 1, boundary())
        ctx.report_progress(r / params.rounds)
    final = FederationData(
        kind="aggregate", array=weights, meta={"features": digest, "final": True, **told}
    )
    for target in remote.values():
        fed.send(final, to=target, tag="global_model", iteration=r)
    ctx.metrics.log("rounds", float(r))
    if me is None:
        return {}  # the arbiter has no column names; the clients keep the model
    return {"model": learner.table(me.names, weights, params)}
