"""psi's code: one DH-PSI per host at the guest, the final intersection, the rows kept."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from fedcrypto.psi import POINT_SIZE, PsiParty
from fedschemas import FederationData

from fedflow.components.psi import PsiParams
from fedflow.components.psi import protocol as declared
from fedflow.kit.inputs import InputRefused
from fedflow.statecodec import decode_state, encode_state
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

if declared.POINT_SIZE != POINT_SIZE:  # pragma: no cover - a fedcrypto change
    raise ImportError("psi: the declared point size is not fedcrypto's")

SECRETS_PURPOSE: Final = "psi.secrets"
"""What the sealed secrets in a PSI checkpoint are (binds the sealing key to them)."""


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


def _secrets(ctx: ComponentContext, peers: list[str]) -> dict[str, bytes]:
    """A fresh DH secret per peer (hosts cannot link their views), kept as a sealed task
    secret: a restart blinds with the same ones."""

    def fresh() -> bytes:
        return encode_state({peer: os.urandom(32) for peer in peers})

    def legacy(state: Mapping[str, Any]) -> bytes | None:
        # Checkpoints written before ctx.secret: each secret sealed under "sealed", or, older
        # still, in the clear under "secrets".
        if "sealed" in state:
            opened = {
                str(peer): ctx.checkpoints.open_sealed(SECRETS_PURPOSE, dict(sealed))
                for peer, sealed in state["sealed"].items()
            }
            return encode_state(opened)
        if "secrets" in state:
            return encode_state({str(k): bytes(v) for k, v in state["secrets"].items()})
        return None

    # Saved at iteration 0, as before (PSI has no iterations; its messages are once-messages).
    opened = decode_state(ctx.secret(SECRETS_PURPOSE, fresh, legacy=legacy, iteration=0))
    return {str(peer): bytes(secret) for peer, secret in opened.items()}


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(PsiParams)
    data = ctx.input("data")
    ids = [str(i) for i in data.ids.tolist()]
    peers = ctx.parties.get("host", []) if ctx.role == "guest" else ctx.parties["guest"][:1]
    secrets = _secrets(ctx, list(peers))
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
    if len(result) < params.min_intersection:
        raise InputRefused(
            f"psi: {len(result)} of this party's {len(ids)} ids are shared with "
            f"{', '.join(peers)}, fewer than min_intersection ({params.min_intersection}); "
            "check that every party reads the same id column and writes ids the same way "
            "(ids are compared as text: '7', '7.0' and '007' differ), or set min_intersection"
        )
    return {"data": data.align_to(np.array(result, dtype=np.str_))}
