"""A homo_lr client: local training on its own rows, its contribution to each round, and a
client's side of the secure-aggregation round over the federation (a host's; the guest's when
the arbiter aggregates; when the guest aggregates it runs its own client in-process,
aggregator.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import structlog
from fedcrypto.secagg import SecAggClient, SecAggConfig, SecAggError
from fedschemas import FederationData

from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr import wire
from fedflow.components.homo_lr.params import HomoLrParams
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

log = structlog.get_logger("fedflow.components.homo_lr")

INTERCEPT: Final = "intercept"
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


def features_digest(names: list[str]) -> str:
    """What the guest announces so that every client checks it has the same columns, in order."""
    return hashlib.sha256("\x1f".join(names).encode()).hexdigest()[:32]


def model_table(names: list[str], weights: hmath.Floats) -> Table:
    """The shared model: one row per feature name (then the intercept), its weight."""
    return Table(
        ids=np.array([*names, INTERCEPT], dtype=np.str_),
        features=np.asarray(weights, dtype=np.float64).reshape(-1, 1),
        feature_names=["weight"],
        labels=None,
    )


@dataclass
class LocalClient:
    """One client's rows and how it trains on them."""

    client_id: int
    names: list[str]
    x1: hmath.Floats
    y: hmath.Floats
    params: HomoLrParams

    @classmethod
    def from_table(cls, table: Table, client_id: int, params: HomoLrParams) -> LocalClient:
        if table.labels is None:
            raise TableError("homo_lr: every client needs labels (0 or 1); this table has none")
        bad = np.unique(table.labels[(table.labels != 0.0) & (table.labels != 1.0)])
        if bad.size:
            raise TableError(f"homo_lr takes labels 0 or 1, found {bad[:5].tolist()}")
        if table.rows == 0:
            raise TableError("homo_lr: this client has no rows")
        if table.rows > hmath.ROW_SCALE:
            raise TableError(f"homo_lr: a client holds at most {int(hmath.ROW_SCALE)} rows")
        x = np.nan_to_num(np.asarray(table.features, dtype=np.float64), nan=0.0)
        return cls(
            client_id,
            list(table.feature_names),
            hmath.with_intercept(x),
            np.asarray(table.labels, dtype=np.float64),
            params,
        )

    @property
    def model_length(self) -> int:
        return int(self.x1.shape[1])

    @property
    def contribution_length(self) -> int:
        return self.model_length + hmath.EXTRA

    def contribution(self, weights: hmath.Floats, r: int) -> tuple[hmath.Floats, dict[str, float]]:
        """This round's vector for the secure sum, and what the client logs about it;
        UpdateRejected when it is not a valid update (the client then sits the round out)."""
        p = self.params
        training = hmath.LocalTraining(
            p.local_epochs, p.batch_size, p.learning_rate, p.alpha, p.seed
        )
        loss = hmath.log_loss(weights, self.x1, self.y)
        local = hmath.local_sgd(weights, self.x1, self.y, training, (p.seed, r, self.client_id))
        if np.shape(local) != weights.shape:
            raise UpdateRejected(
                f"update has shape {np.shape(local)}, the model needs {weights.shape}"
            )
        delta, clipped = hmath.clip_norm(np.asarray(local) - weights, p.clip_norm)
        vector = hmath.contribution(weights, weights + delta, loss, len(self.y))
        problem = hmath.update_problem(vector, self.contribution_length)
        if problem is not None:
            raise UpdateRejected(problem)
        over = int(np.count_nonzero(np.abs(vector) > p.update_bound))
        return vector, {
            "local_loss": loss,
            "clipped_update": float(clipped),
            "clipped_coordinates": float(over),
        }


def _excluded(payload: FederationData) -> bool:
    return bool(payload.meta.get("excluded", False))


def train(ctx: ComponentContext) -> Mapping[str, Table]:
    """A client (a host; the guest too when the arbiter aggregates): train on its rows each
    round and join the round's secure sum."""
    params = ctx.params_as(HomoLrParams)
    ids = client_ids(ctx.parties)
    me = LocalClient.from_table(ctx.input("data"), ids[ctx.party_id], params)
    agg = aggregator_role(ctx.parties)
    fed = ctx.federation
    fed.bind_dims(d=me.model_length, v=me.contribution_length)
    if ctx.role == "guest":  # the arbiter has no data: it learns the model's length from us
        shape = wire.control(features=len(me.names), digest=features_digest(me.names))
        fed.send(shape, to=agg, tag="model_shape")
    rejected = 0
    r = 0
    while True:
        ctx.check_canceled()
        start = fed.recv(frm=agg, tag="global_model", iteration=r)
        if r == 0 and start.meta.get("features") != features_digest(me.names):
            raise TableError(
                "homo_lr: this party's feature columns differ from the guest's (every client "
                f"needs the same columns in the same order; here: {', '.join(me.names)})"
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
            fed.send(wire.control(withdraw=str(exc)), to=agg, tag="sa_keys", iteration=r)
            r += 1
            continue
        for name, value in facts.items():
            ctx.metrics.log(name, value, step=r)
        config = secagg_config(ctx, params, r, me.contribution_length)
        _secure_round(ctx, agg, config, me, vector, r)
        ctx.report_progress(min(1.0, (r + 1) / params.rounds))
        r += 1
    ctx.metrics.log("rounds", float(r))
    ctx.metrics.log("rejected_updates", float(rejected))
    return {"model": model_table(me.names, weights)}


def _secure_round(
    ctx: ComponentContext,
    guest: str,
    config: SecAggConfig,
    me: LocalClient,
    vector: hmath.Floats,
    r: int,
) -> None:
    """Bonawitz rounds 0-2 and 4 with the aggregator (`guest`: its role); returns early when it
    says this client is out of the round (it dropped, or was too late)."""
    fed = ctx.federation
    client = SecAggClient(me.client_id, config)
    fed.send(wire.keys_payload(client.advertise_keys()), to=guest, tag="sa_keys", iteration=r)
    got = fed.recv(frm=guest, tag="sa_directory", iteration=r)
    if _excluded(got):
        return
    shares = client.share_keys(wire.read_directory(got))
    fed.send(wire.shares_payload(shares), to=guest, tag="sa_shares", iteration=r)
    got = fed.recv(frm=guest, tag="sa_routed", iteration=r)
    if _excluded(got):
        return
    try:
        masked = client.masked_input(wire.read_routed(me.client_id, got), vector)
    except SecAggError as exc:
        raise SecAggError(f"homo_lr round {r}: {exc}") from exc
    fed.send(wire.masked_payload(masked), to=guest, tag="sa_masked", iteration=r)
    got = fed.recv(frm=guest, tag="sa_unmask", iteration=r)
    if _excluded(got):
        return
    answer = client.unmask(wire.read_unmask_request(got))
    fed.send(wire.unmask_payload(answer), to=guest, tag="sa_unmask_shares", iteration=r)
