"""Peer checkpoints: each party's audit hands its peers its signed chain head, and at a job's
end a signed statement of the job's traffic with them; the peer checks and keeps both.

Why: a party can rewrite its own log and re-sign its own checkpoints consistently; once a peer
holds a copy of a checkpoint, the party's export must still reproduce the head hash that copy
signed (`fedmq audit verify mine --peer theirs`), and what crossed between the two must be the
same set of messages in both logs.

Matching the two logs: the audit keeps, for every message that crosses (facts.content_sha256),
the SHA-256 of the envelope's canonical bytes with `signer_key_id` cleared, the one field the
sending gateway adds (it signs on the way out), so the sender's "out" record and the receiver's
"in" record of one message carry the same hash. A statement gives, for one job and one peer,
how many messages were sent to and received from it and a digest of each set,

    D = SHA-256( b"fedmq.audit.traffic.v1" || sorted(content hashes)... )

sorted because the two sides see messages of both directions interleaved in different orders.

Pure: no IO. The handlers store and send what this computes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fedcrypto.signing import BadSignature, SigningKey, VerifyKey
from fedschemas import Envelope, canonical_bytes
from fedschemas.audit_payloads import AuditCheckpoint

from fedaudit.chain import CHECKPOINT_FORMAT, canonical_json

STATEMENT_FORMAT: Final = "fedmq.audit.traffic.v1"
TRAFFIC_DOMAIN: Final = b"fedmq.audit.traffic.v1"
CHECKPOINT_TYPE: Final = "audit.checkpoint"
CHECKPOINT_TAG: Final = "checkpoint"
JOB_END_TAG_PREFIX: Final = "job_end:"


def content_sha256(envelope: Envelope, *, payload_sha256: bytes | None = None) -> str:
    """The hash both ends of a crossing agree on (the sender's gateway sets signer_key_id).
    `payload_sha256`: the payload's SHA-256 when the caller has it (no second pass over it)."""
    if envelope.signer_key_id is not None:
        envelope = envelope.model_copy(update={"signer_key_id": None})
    return hashlib.sha256(canonical_bytes(envelope, payload_sha256=payload_sha256)).hexdigest()


def set_digest(hashes: Iterable[str]) -> str:
    h = hashlib.sha256(TRAFFIC_DOMAIN)
    for value in sorted(hashes):
        h.update(bytes.fromhex(value))
    return h.hexdigest()


def crossing_hash(record: Mapping[str, Any]) -> str:
    facts = record.get("facts") or {}
    return str(facts.get("content_sha256") or record.get("envelope_sha256", ""))


def job_traffic(
    records: Iterable[Mapping[str, Any]], peer: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(sent, received): content hash -> message id of the job's messages to and from `peer`
    (audit.* messages are the audits' own and not part of any job)."""
    sent: dict[str, str] = {}
    received: dict[str, str] = {}
    for record in records:
        if str(record["type"]).startswith("audit."):
            continue
        if record["direction"] == "out" and record["destination_party"] == peer:
            sent[crossing_hash(record)] = str(record["message_id"])
        elif record["direction"] == "in" and record["source_party"] == peer:
            received[crossing_hash(record)] = str(record["message_id"])
    return sent, received


def statement(
    party_id: str, peer: str, job_id: str, seq: int, sent: Iterable[str], received: Iterable[str]
) -> dict[str, Any]:
    sent, received = list(sent), list(received)
    return {
        "format": STATEMENT_FORMAT,
        "party_id": party_id,
        "peer": peer,
        "job_id": job_id,
        "seq": seq,
        "sent": len(sent),
        "sent_digest": set_digest(sent),
        "received": len(received),
        "received_digest": set_digest(received),
    }


def compare(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """What disagrees between this party's statement of a job and its peer's ([] if none)."""
    me, peer = mine["party_id"], theirs["party_id"]
    problems: list[str] = []
    for ours, their, what in (
        ("sent", "received", f"sent by {me} to {peer}"),
        ("received", "sent", f"sent by {peer} to {me}"),
    ):
        if (mine[ours], mine[f"{ours}_digest"]) != (theirs[their], theirs[f"{their}_digest"]):
            problems.append(
                f"messages {what} in job {mine['job_id']}: {mine[ours]} in {me}'s log, "
                f"{theirs[their]} in {peer}'s"
                + ("" if mine[ours] != theirs[their] else " (same count, different messages)")
            )
    return problems


def sign(body: Mapping[str, Any], key: SigningKey) -> str:
    return key.sign(canonical_json(dict(body))).hex()


def signature_ok(body_json: str, signature: str, key: VerifyKey) -> bool:
    try:
        key.verify(body_json.encode(), bytes.fromhex(signature))
    except (BadSignature, ValueError):
        return False
    return True


@dataclass
class PeerState:
    """What this audit holds of one peer: its audit key (configured, or pinned at its first
    checkpoint) and the head hash of each of its checkpoints by seq."""

    key: str = ""
    heads: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PeerCheckpoint:
    """A peer's checkpoint as received and checked."""

    peer: str
    body: dict[str, Any]
    job_id: str
    statement: dict[str, Any] | None
    problems: list[str]
    """What is wrong with the checkpoint itself (control.peer_checkpoint)."""
    disagreements: list[str] = field(default_factory=list)
    """Where its statement differs from this party's log (control.peer_log_disagrees)."""


_STATEMENT_FIELDS: Final = {
    "format": str,
    "party_id": str,
    "peer": str,
    "job_id": str,
    "seq": int,
    "sent": int,
    "sent_digest": str,
    "received": int,
    "received_digest": str,
}


def _statement_ok(body: Any, sender: str, receiver: str | None) -> bool:
    return (
        isinstance(body, dict)
        and all(isinstance(body.get(k), t) for k, t in _STATEMENT_FIELDS.items())
        and body["format"] == STATEMENT_FORMAT
        and body["party_id"] == sender
        and (receiver is None or body["peer"] == receiver)
    )


def check(
    payload: AuditCheckpoint,
    sender: str,
    state: PeerState,
    configured_key: str | None,
    receiver: str | None = None,
) -> PeerCheckpoint:
    """Check a peer's checkpoint: its own, signed by its audit key, consistent with the earlier
    ones (no other head hash at a seq already signed), and its statement signed too, well
    formed and addressed to `receiver`. Updates `state` (pins the key, keeps the head)."""
    problems: list[str] = []
    try:
        body = json.loads(payload.body)
        statement_body = json.loads(payload.statement) if payload.statement else None
    except ValueError as exc:
        return PeerCheckpoint(sender, {}, "", None, [f"checkpoint of {sender} is not JSON: {exc}"])
    if (
        not isinstance(body, dict)
        or body.get("format") != CHECKPOINT_FORMAT
        or not isinstance(body.get("seq"), int)
        or not isinstance(body.get("head_hash"), str)
        or not isinstance(body.get("public_key"), str)
    ):
        return PeerCheckpoint(sender, {}, "", None, [f"checkpoint of {sender} is not one"])
    job_id = str(statement_body.get("job_id", "")) if isinstance(statement_body, dict) else ""
    if body.get("party_id") != sender or payload.party_id != sender:
        problems.append(f"checkpoint of party {body.get('party_id')!r} arrived from party {sender}")
    key_hex = str(body.get("public_key", ""))
    expected = configured_key or state.key or key_hex
    if key_hex != expected:
        problems.append(
            f"party {sender}'s checkpoint is signed by audit key {key_hex[:16]}, not its "
            f"{'configured' if configured_key else 'pinned'} key {expected[:16]}"
        )
    try:
        verify_key = VerifyKey.from_bytes(bytes.fromhex(expected))
    except ValueError:
        return PeerCheckpoint(
            sender, body, job_id, None, [f"party {sender}'s audit key is unusable"]
        )
    if canonical_json(body).decode() != payload.body or not signature_ok(
        payload.body, payload.signature, verify_key
    ):
        problems.append(f"party {sender}'s checkpoint at {body.get('seq')}: bad signature")
    if statement_body is not None and (
        not _statement_ok(statement_body, sender, receiver)
        or payload.statement_signature is None
        or not signature_ok(payload.statement or "", payload.statement_signature, verify_key)
    ):
        problems.append(f"party {sender}'s statement of job {job_id}: bad signature or form")
        statement_body = None
    seq, head = int(body.get("seq", -1)), str(body.get("head_hash", ""))
    if not problems:
        state.key = state.key or expected
        before = state.heads.setdefault(seq, head)
        if before != head:
            problems.append(
                f"party {sender} signed two different chain heads at record {seq}: its log "
                "was rewritten"
            )
    return PeerCheckpoint(sender, body, job_id, statement_body, problems)
