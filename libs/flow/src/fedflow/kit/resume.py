"""Checkpoint helpers for iterative components, and the resend of ciphertexts on resume.

The resume rule (docs/components.md): a redone iteration must send exactly what the first try
sent, since the outbox refuses a different payload under the same message id. Masks and batch
orders are deterministic (seeded), but a ciphertext carries fresh encryption randomness, so
`Resumable.send_ciphertexts` writes a ciphertext into the checkpoint ("pending", at iteration
t - 1) BEFORE it first leaves, and a redone iteration t re-sends those recorded bytes.

State layout (what `save` writes): the component's own state (`state()`), plus
  pending             {recording key: {"array", "meta", "info"}} of the current iteration
  pending_iteration   the iteration `pending` belongs to (-2: none)
and, added by the checkpoint scope, the task's sealed secrets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from fedcrypto import EncryptedVector
from fedschemas import FederationData

from fedflow.kit import payloads

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

MakeCiphertexts = Callable[[], tuple[EncryptedVector, dict[str, Any]]]
"""Builds the ciphertexts to send and what reading the answer to them needs (e.g. unmask info)."""


class Resumable:
    """One task's checkpointed progress: `state()` is the component's part of it."""

    def __init__(
        self,
        ctx: ComponentContext,
        state: Callable[[], dict[str, Any]],
        saved: Mapping[str, Any] | None = None,
    ) -> None:
        self.ctx = ctx
        self._state = state
        self.pending: dict[str, Any] = dict(saved["pending"]) if saved else {}
        self.pending_iteration = int(saved["pending_iteration"]) if saved else -2

    def state(self) -> dict[str, Any]:
        return {
            **self._state(),
            "pending": self.pending,
            "pending_iteration": self.pending_iteration,
        }

    def save(self, iteration: int) -> None:
        """Iteration `iteration` is complete: nothing recorded needs re-sending any more."""
        self.pending, self.pending_iteration = {}, -2
        self.ctx.checkpoints.save(iteration, self.state())

    def send_ciphertexts(
        self,
        tag: str,
        iteration: int,
        make: MakeCiphertexts,
        *,
        to: str,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Send the ciphertexts `make()` builds, or the ones recorded for this iteration;
        returns the info `make` returned with them. `to` is a party id or a role (every party
        of it); `key` names the recording (default: the tag)."""
        key = key or tag
        entry = self.pending.get(key) if self.pending_iteration == iteration else None
        if entry is not None:
            payload = FederationData(
                kind="ciphertext_vector",
                array=np.asarray(entry["array"], dtype=np.uint64),
                meta=dict(entry["meta"]),
            )
            info = dict(entry["info"])
        else:
            vec, info = make()
            payload = payloads.ciphertext_payload(vec)
            if self.pending_iteration != iteration:
                self.pending, self.pending_iteration = {}, iteration
            self.pending[key] = {"array": payload.array, "meta": payload.meta, "info": info}
            # Recorded before it leaves: a redone iteration must re-send these very bytes.
            self.ctx.checkpoints.save(iteration - 1, self.state())
        self.ctx.federation.send(payload, to=to, tag=tag, iteration=iteration)
        return info
