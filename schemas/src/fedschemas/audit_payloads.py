"""Payload models the audit services of two parties exchange (area "audit", topic svc.audit).

Kept beside payloads.py rather than in it only so that the audit's models can change without
touching the file every other message type lives in; they are registered in registry.py like
every other type and follow the same rules (docs/wire.md).
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from fedschemas.base import PartyId, Payload

SIGNATURE_PATTERN: Final = r"^[0-9a-f]{128}$"
"""An Ed25519 signature as 128 lower-case hex digits."""

MAX_SIGNED_BODY: Final = 1 << 20


class AuditCheckpoint(Payload):
    """audit.checkpoint: a party's audit hands a peer its signed chain checkpoint, so that the
    peer keeps a copy the party cannot later rewrite (docs/audit.md, "Peer checkpoints").

    `body` is the checkpoint exactly as the sender signed and stored it (canonical JSON:
    party, seq, head hash, per-peer digests, the audit's public key) and `signature` its
    Ed25519 signature by the sender's audit key. At a job's end the sender adds `statement`:
    canonical JSON saying how many messages of that job it sent to and received from the
    receiver and a digest of each set, signed the same way (`statement_signature`), which the
    receiver compares with its own log of the job.
    """

    party_id: PartyId
    body: Annotated[str, Field(min_length=2, max_length=MAX_SIGNED_BODY)]
    signature: Annotated[str, Field(pattern=SIGNATURE_PATTERN)]
    statement: Annotated[str, Field(min_length=2, max_length=MAX_SIGNED_BODY)] | None = None
    statement_signature: Annotated[str, Field(pattern=SIGNATURE_PATTERN)] | None = None
