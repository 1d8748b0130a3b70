"""Payload models the audit services of two parties exchange (area "audit", topic svc.audit),
and the reports a party's own services send its audit (area "report", svc.audit.reports).

Kept beside payloads.py rather than in it only so that the audit's models can change without
touching the file every other message type lives in; they are registered in registry.py like
every other type and follow the same rules (docs/wire.md).
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from fedschemas.base import PartyId, Payload, WireModel
from fedschemas.payloads import NAME_PATTERN, Attempt, ComponentName, JobId

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


Count = Annotated[int, Field(ge=0)]
MAX_PROFILED_COLUMNS: Final = 5_000
"""Columns one report.column_stats carries at most (a wider table reports its first ones)."""


class DecryptCheck(Payload):
    """report.decrypt_check: a worker tells its own party's audit what it found in plaintexts
    that came from a peer: those it just decrypted (the key holder's), or a decrypted answer
    it got back and unmasked (the party that asked; fedflow.kit.decrypt_check) (party-local,
    on svc.audit.reports; never relayed). Counts only, never a value: how many plaintexts
    `tag` of iteration `iteration` from party `peer` held, how many were NaN, infinite or
    outside the agreed `bound` (fedflow.kit.he: the fixed-point range of a masked plaintext,
    m + R in [0, n/3], unless the component declares a tighter one). The audit's rule
    data.decrypted_bounds judges it (docs/audit.md)."""

    job_id: JobId
    component: ComponentName
    attempt: Attempt
    party_id: PartyId
    """The reporting party: the key holder that decrypted, or the party that asked for a
    decryption and checked the answer."""
    peer: PartyId
    """The party whose ciphertexts were decrypted."""
    tag: Annotated[str, Field(min_length=1, max_length=128)]
    iteration: Annotated[int, Field(ge=-1)]
    count: Count
    nan: Count = 0
    infinite: Count = 0
    out_of_bound: Count = 0
    bound: Annotated[str, Field(max_length=256)]
    """The bound as the check applied it, in words (e.g. "masked residue in [0, n/3]")."""


class ColumnStat(WireModel):
    """One feature column as read: its share of missing values and its range (None when every
    value is missing)."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    null_share: Annotated[float, Field(ge=0.0, le=1.0)]
    min: float | None = None
    max: float | None = None


class ColumnStats(Payload):
    """report.column_stats: a worker tells its own party's audit what a table it read for a
    job holds, column by column (party-local, on svc.audit.reports; never relayed, never a row
    value: a missing share and a range per column). The audit compares it with the table's
    recorded profile (data.profile_drift, docs/audit.md)."""

    job_id: JobId
    component: ComponentName
    attempt: Attempt
    party_id: PartyId
    table: Annotated[str, Field(pattern=NAME_PATTERN)]
    rows: Count
    columns: Annotated[list[ColumnStat], Field(max_length=MAX_PROFILED_COLUMNS)]
