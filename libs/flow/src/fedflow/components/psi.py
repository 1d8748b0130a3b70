"""psi: ECDH private set intersection of the parties' ids (fedcrypto.psi), as a component.

Runs at the guest and every host. With each host the guest runs one two-party DH-PSI
(a fresh secret per host, so hosts cannot link their views); both sides of a pair learn which
of their own ids the other holds. With several hosts the guest intersects the pairwise results
and tells each host, as a boolean mask over that host's pairwise intersection, which ids are in
the final one (a host learns nothing it could not infer from the final result).

Both sides output the rows of their input whose ids are in the intersection, sorted by id (by
code point, i.e. by the ids' UTF-8 bytes): the same order at every party with no extra message.

Messages (all once, outside iterations; arrays of 32-byte Curve25519 points, chunked over seq
numbers, `meta["chunks"]` on every chunk):
  1. guest -> host  guest_blinded    H(x)^a for the guest's ids, sorted by value
  1. host  -> guest host_blinded     H(y)^b for the host's ids
  2. guest -> host  guest_reblinded  (H(y)^b)^a, in the order received
  2. host  -> guest host_reblinded   (H(x)^a)^b, in the order received
  3. guest -> host  intersection_mask (several hosts only) bool per pairwise-intersection id

Resume: the secrets are checkpointed (sealed: fedflow.sealing, as hetero_lr's private key)
before anything is sent, so a restarted party blinds to
the same values and re-sends identical messages under the same ids (blinding is deterministic
given the secret; the sort by value fixes the order). The runtime deletes the checkpoint, and
with it the secrets, once the task's success is recorded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from fedcrypto.psi import POINT_SIZE, PsiParty
from fedschemas import FederationData
from pydantic import Field

from fedflow.components.base import ComponentParams, ComponentType, InputSpec
from fedflow.protocol import UNBOUNDED_SEQ, MessageRule, Protocol
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


class PsiParams(ComponentParams):
    chunk_size: int = Field(default=100_000, ge=1, le=10_000_000)
    """Curve points per message (32 bytes each)."""


def _points_rule(tag: str, sender: str, receiver: str, order: int, what: str) -> MessageRule:
    return MessageRule(
        tag=tag,
        sender=sender,  # type: ignore[arg-type]
        receiver=receiver,  # type: ignore[arg-type]
        kinds=("id_set",),
        order=order,
        shape=f"(*, {POINT_SIZE})",
        dtypes=("uint8",),
        max_seq=UNBOUNDED_SEQ,
        description=what,
    )


PSI_PROTOCOL = Protocol(
    component_type="psi",
    description="ECDH-PSI (DH-PSI over Curve25519), guest with each host",
    messages=(
        _points_rule("guest_blinded", "guest", "host", 1, "guest's ids hashed and blinded"),
        _points_rule("host_blinded", "host", "guest", 1, "host's ids hashed and blinded"),
        _points_rule("guest_reblinded", "guest", "host", 2, "host's blinded ids, blinded again"),
        _points_rule("host_reblinded", "host", "guest", 2, "guest's blinded ids, blinded again"),
        MessageRule(
            tag="intersection_mask",
            sender="guest",
            receiver="host",
            kinds=("id_set",),
            order=3,
            shape="(*,)",
            dtypes=("bool",),
            max_seq=UNBOUNDED_SEQ,
            description="several hosts: which pairwise-intersection ids are in the final one",
        ),
    ),
)


def _send_rows(
    ctx: ComponentContext, rows: np.ndarray, *, to: str, tag: str, chunk_size: int
) -> None:
    chunks = max(1, -(-len(rows) // chunk_size))
    for seq in range(chunks):
        part = rows[seq * chunk_size : (seq + 1) * chunk_size]
        ctx.federation.send(
            FederationData(kind="id_set", array=part, meta={"chunks": chunks, "rows": len(rows)}),
            to=to,
            tag=tag,
            seq=seq,
        )


def _recv_rows(ctx: ComponentContext, *, frm: str, tag: str) -> np.ndarray:
    first = ctx.federation.recv(frm=frm, tag=tag, seq=0)
    chunks = first.meta.get("chunks", 1)
    if not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"psi: {tag} from {frm} has a bad chunk count")
    parts = [first]
    parts += [ctx.federation.recv(frm=frm, tag=tag, seq=seq) for seq in range(1, chunks)]
    arrays = [np.asarray(p.array) for p in parts if p.array is not None]
    return np.concatenate(arrays) if arrays else np.empty((0,), dtype=np.uint8)


def _to_points(rows: np.ndarray) -> list[bytes]:
    flat = np.ascontiguousarray(rows, dtype=np.uint8).reshape(-1, POINT_SIZE)
    data = flat.tobytes()
    return [data[i : i + POINT_SIZE] for i in range(0, len(data), POINT_SIZE)]


def _to_rows(points: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(points), dtype=np.uint8).reshape(len(points), POINT_SIZE)


def _pairwise(
    ctx: ComponentContext, party: PsiParty, ids: list[str], peer: str, chunk: int
) -> list[str]:
    """One DH-PSI run with `peer`; this party's ids that the peer holds, sorted."""
    mine = "guest" if ctx.role == "guest" else "host"
    theirs = "host" if mine == "guest" else "guest"
    _send_rows(ctx, _to_rows(party.blind(ids)), to=peer, tag=f"{mine}_blinded", chunk_size=chunk)
    peer_blinded = _to_points(_recv_rows(ctx, frm=peer, tag=f"{theirs}_blinded"))
    reblinded = party.reblind(peer_blinded)
    _send_rows(ctx, _to_rows(reblinded), to=peer, tag=f"{mine}_reblinded", chunk_size=chunk)
    own_double = _to_points(_recv_rows(ctx, frm=peer, tag=f"{theirs}_reblinded"))
    return sorted(str(i) for i in party.intersect(own_double, reblinded))


SECRETS_PURPOSE = "psi.secrets"
"""What the sealed secrets in a PSI checkpoint are (binds the sealing key to them)."""


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(PsiParams)
    data = ctx.input("data")
    ids = [str(i) for i in data.ids.tolist()]
    peers = ctx.parties.get("host", []) if ctx.role == "guest" else ctx.parties["guest"][:1]
    saved = ctx.checkpoints.latest()
    if saved is not None and "sealed" in saved.state:
        secrets = {
            str(peer): ctx.checkpoints.open_sealed(SECRETS_PURPOSE, sealed)
            for peer, sealed in saved.state["sealed"].items()
        }
    elif saved is not None:  # a checkpoint from before sealing: the secrets in the clear
        secrets = {str(k): bytes(v) for k, v in saved.state["secrets"].items()}
    else:
        # Checkpointed before the first send: a restart must blind with the same secrets. They
        # are stored sealed (fedflow.sealing), never in the clear in the party's database.
        secrets = {peer: os.urandom(32) for peer in peers}
        sealed = {peer: ctx.checkpoints.seal(SECRETS_PURPOSE, key) for peer, key in secrets.items()}
        ctx.checkpoints.save(0, {"sealed": sealed})
    pairwise: dict[str, list[str]] = {}
    for n, peer in enumerate(peers):
        ctx.check_canceled()
        pairwise[peer] = _pairwise(ctx, PsiParty(secrets[peer]), ids, peer, params.chunk_size)
        ctx.report_progress((n + 1) / (len(peers) + 1))
    if ctx.role == "guest":
        final = set(ids)
        for found in pairwise.values():
            final &= set(found)
        if len(peers) > 1:
            for peer, found in pairwise.items():
                mask = np.array([key in final for key in found], dtype=np.bool_)
                _send_rows(ctx, mask, to=peer, tag="intersection_mask", chunk_size=10**7)
        result = sorted(final)
    else:
        (found,) = pairwise.values()
        if len(ctx.parties.get("host", [])) > 1:
            mask = _recv_rows(ctx, frm=peers[0], tag="intersection_mask").astype(bool)
            if mask.shape != (len(found),):
                raise ValueError("psi: the guest's intersection mask does not fit our result")
            found = [key for key, keep in zip(found, mask.tolist(), strict=True) if keep]
        result = found
    ctx.metrics.log("intersection_size", float(len(result)))
    ctx.metrics.log("input_size", float(len(ids)))
    return {"data": data.align_to(np.array(result, dtype=np.str_))}


PSI = ComponentType(
    name="psi",
    description="ECDH private set intersection: each party keeps the rows of shared ids",
    run=run,
    roles=("guest", "host"),
    params=PsiParams,
    inputs=(InputSpec("data", description="a table with the ids to intersect"),),
    outputs=("data",),
    protocol=PSI_PROTOCOL,
)
