"""The aggregator of every round: the arbiter when the pipeline names one, else the guest, which
is then also a client (its own contribution goes into the secure sum in-process, through the
same SecAggClient state machine as a host's)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeVar

import numpy as np
import structlog
from fedcrypto.secagg import (
    AggregationResult,
    SecAggClient,
    SecAggConfig,
    SecAggError,
    SecAggServer,
)
from fedschemas import FederationData

from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr import wire
from fedflow.components.homo_lr.client import (
    LocalClient,
    UpdateRejected,
    aggregator_role,
    client_ids,
    features_digest,
    model_table,
    secagg_config,
)
from fedflow.components.homo_lr.client import train as client_train
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
    server: SecAggServer = field(init=False)
    dropped: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (party, why)
    told: set[int] = field(default_factory=set)  # dropped hosts told they are out

    def __post_init__(self) -> None:
        self.server = SecAggServer(self.config)

    def collect(
        self, tag: str, timeout: float, read: Callable[[int, FederationData], T]
    ) -> dict[int, T]:
        """Each remaining host's `tag` message of this round, read; a host not heard from by
        the deadline, or whose message does not pass the checks, leaves the round."""
        deadline = time.monotonic() + timeout
        got: dict[int, T] = {}
        for cid, party in list(self.hosts.items()):
            try:
                payload = self.ctx.federation.recv(
                    frm=party,
                    tag=tag,
                    iteration=self.r,
                    timeout=max(0.001, deadline - time.monotonic()),
                )
                got[cid] = read(cid, payload)
            except RecvTimeout:
                self.leave(cid, f"no {tag} within {timeout:g} s")
            except (ProtocolViolation, SecAggError, UpdateRejected) as exc:
                self.leave(cid, f"{tag}: {exc}")
        return got

    def leave(self, cid: int, why: str) -> None:
        party = self.hosts.pop(cid)
        self.dropped[cid] = (party, why)
        log.warning("client_dropped", round=self.r, party_id=party, client=cid, reason=why)

    def send_next(self, tag: str, payload_for: Callable[[int], FederationData]) -> None:
        """The round's next message to every host still in it; every host that left since the
        last step is told it is out of the round under the same tag, so that a host that is
        alive but was too late never waits for a message that will not come."""
        for cid, (party, _) in self.dropped.items():
            if cid not in self.told:
                self.told.add(cid)
                self.ctx.federation.send(
                    wire.control(excluded=True), to=party, tag=tag, iteration=self.r
                )
        for cid, party in self.hosts.items():
            self.ctx.federation.send(payload_for(cid), to=party, tag=tag, iteration=self.r)

    def feed(self, got: Mapping[int, T], receive: Callable[[T], None]) -> None:
        """Hand what was collected to the server; a message it refuses takes its sender out."""
        for cid, msg in got.items():
            try:
                receive(msg)
            except SecAggError as exc:
                self.leave(cid, str(exc))

    def close(self, close: Callable[[], T]) -> T:
        """Close a step of the server; too few clients left fails the round, saying who
        dropped and why."""
        try:
            return close()
        except SecAggError as exc:
            why = "; ".join(
                f"client {c} ({party}): {reason}"
                for c, (party, reason) in sorted(self.dropped.items())
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
        server.receive_keys(own.advertise_keys())
    keys = rnd.collect("sa_keys", timeout, lambda c, p: wire.read_keys(c, _withdrawn(c, p)))
    rnd.feed(keys, server.receive_keys)
    directory = rnd.close(server.key_directory)
    rnd.send_next("sa_directory", lambda _: wire.directory_payload(directory))

    # Round 1: encrypted shares, routed (the aggregator cannot open them).
    if own is not None:
        server.receive_shares(own.share_keys(directory))
    rnd.feed(rnd.collect("sa_shares", timeout, wire.read_shares), server.receive_shares)
    routed = rnd.close(server.route_shares)
    rnd.send_next("sa_routed", lambda cid: wire.shares_payload(routed[cid]))

    # Round 2: masked inputs; whoever is missing now is a dropout whose masks get recovered.
    if own is not None and own_vector is not None:
        server.receive_masked_input(own.masked_input(routed[GUEST_ID], own_vector))
    masked = rnd.collect("sa_masked", timeout, wire.read_masked)
    rnd.feed(masked, server.receive_masked_input)
    request = rnd.close(server.unmask_request)
    rnd.send_next("sa_unmask", lambda _: wire.unmask_request_payload(request))

    # Round 4: unmasking.
    if own is not None:
        server.receive_unmasking(own.unmask(request))
    answers = rnd.collect("sa_unmask_shares", timeout, wire.read_unmask)
    rnd.feed(answers, server.receive_unmasking)
    return rnd.close(server.result)


def guest(ctx: ComponentContext) -> Mapping[str, Table]:
    """The guest's role: a client when the pipeline names an arbiter, else the aggregator."""
    if aggregator_role(ctx.parties) == "arbiter":
        return client_train(ctx)
    return train(ctx)


def train(ctx: ComponentContext) -> Mapping[str, Table]:
    """The aggregator's rounds (the arbiter's role; the guest's without an arbiter)."""
    params = ctx.params_as(HomoLrParams)
    fed = ctx.federation
    ids = client_ids(ctx.parties)
    me: LocalClient | None = None
    if ctx.role == "arbiter":
        shape = fed.recv(frm="guest", tag="model_shape")
        model_length, digest = int(shape.meta["features"]) + 1, str(shape.meta["digest"])
        guest_party = ctx.parties["guest"][0]
        # The guest by role: its party may also be the arbiter's.
        remote = {cid: "guest" if p == guest_party else p for p, cid in ids.items()}
    else:
        me = LocalClient.from_table(ctx.input("data"), GUEST_ID, params)
        model_length, digest = me.model_length, features_digest(me.names)
        remote = {cid: p for p, cid in ids.items() if cid != GUEST_ID}
    if me is not None and len(remote) == 1:
        # The guest subtracts its own contribution from the sum: the host's is left.
        log.warning(
            "single_host_update_visible",
            reason="with one host and the guest aggregating, the guest learns the host's "
            "update; name an arbiter and use three clients or more to hide single updates",
        )
    length = model_length + hmath.EXTRA
    fed.bind_dims(d=model_length, v=length)
    weights = np.zeros(model_length)
    best = np.inf
    r = 0
    while r < params.rounds:
        ctx.check_canceled()
        start = FederationData(kind="aggregate", array=weights, meta={"features": digest})
        for target in remote.values():
            fed.send(start, to=target, tag="global_model", iteration=r)
        config = secagg_config(ctx, params, r, length)
        own_vector: hmath.Floats | None = None
        own: SecAggClient | None = None
        if me is not None:
            try:
                own_vector, facts = me.contribution(weights, r)
                for name, value in facts.items():
                    ctx.metrics.log(name, value, step=r)
                own = SecAggClient(GUEST_ID, config)
            except UpdateRejected as exc:
                log.error("update_rejected", party_id=ctx.party_id, round=r, reason=str(exc))
                ctx.metrics.log("rejected_update", 1.0, step=r)
        rnd = Round(ctx, r, config, dict(remote), own)
        result = secure_sum(rnd, own_vector, params.round_timeout_s)
        weights, loss = hmath.apply_sum(weights, result.sum)
        ctx.metrics.log("loss", loss, step=r)
        ctx.metrics.log("clients", float(len(result.survivors)), step=r)
        ctx.metrics.log("dropped", float(len(rnd.dropped)), step=r)
        ctx.metrics.log("sum_error_bound", result.max_abs_error, step=r)
        log.info(
            "round_done",
            round=r,
            loss=loss,
            survivors=list(result.survivors),
            dropped=sorted(rnd.dropped),
        )
        ctx.report_progress((r + 1) / params.rounds)
        r += 1
        if params.early_stop and best - loss < params.tol:
            break
        best = min(best, loss)
    final = FederationData(
        kind="aggregate", array=weights, meta={"features": digest, "final": True}
    )
    for target in remote.values():
        fed.send(final, to=target, tag="global_model", iteration=r)
    ctx.metrics.log("rounds", float(r))
    if me is None:
        return {}  # the arbiter has no column names; the clients keep the model
    return {"model": model_table(me.names, weights)}
