"""The tamper-evident log's pure core: records, their hash chain, signed checkpoints.

A record is what the audit keeps of one crossing message (never its payload or a key): a flat
dict of str/int values plus JSON-able `facts` and `findings`. Its bytes are the canonical JSON
of that dict (sorted keys, no spaces, ASCII), and

    hash_i = SHA-256( b"fedmq.audit.record.v1" || hash_{i-1} || canonical(record_i) )

with hash_0's predecessor being 32 zero bytes. Changing, dropping or reordering any record
changes every later hash, so a checkpoint that signs one head hash vouches for everything
before it.

A checkpoint signs (Ed25519, the audit's key) the canonical JSON of: the last record's seq and
hash, the number of records, the time, and per peer party a running digest of the envelope
hashes of the messages exchanged with that peer,

    d_peer,i = SHA-256( b"fedmq.audit.peer.v1" || d_peer,i-1 || envelope_sha256_i )

so two parties' checkpoints can be compared peer digest against peer digest: a party that
rewrites what crossed between them makes its digest disagree with the other's copy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fedcrypto.signing import BadSignature, SigningKey, VerifyKey

RECORD_DOMAIN: Final = b"fedmq.audit.record.v1"
PEER_DOMAIN: Final = b"fedmq.audit.peer.v1"
CHECKPOINT_FORMAT: Final = "fedmq.audit.checkpoint.v1"
GENESIS: Final = "0" * 64

RECORD_FIELDS: Final[tuple[str, ...]] = (
    "seq",
    "observed_at",
    "topic",
    "direction",
    "message_id",
    "type",
    "job_id",
    "component",
    "tag",
    "iteration",
    "seq_no",
    "source_party",
    "source_role",
    "destination_party",
    "destination_role",
    "size",
    "payload_sha256",
    "envelope_sha256",
    "signature",
    "facts",
    "findings",
)
"""What a record holds, in the order exports list it (the hash does not depend on order)."""


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def record_body(record: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed fields of `record` (its hash and prev_hash left out)."""
    return {name: record[name] for name in RECORD_FIELDS}


def record_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    h = hashlib.sha256(RECORD_DOMAIN)
    h.update(bytes.fromhex(prev_hash))
    h.update(canonical_json(record_body(record)))
    return h.hexdigest()


def peer_digest(previous: str, envelope_sha256: str) -> str:
    h = hashlib.sha256(PEER_DOMAIN)
    h.update(bytes.fromhex(previous))
    h.update(bytes.fromhex(envelope_sha256))
    return h.hexdigest()


def peer_of(record: Mapping[str, Any], party_id: str) -> str | None:
    """The other party of a crossing record (None for party-local traffic, and for the audits'
    own audit.* messages: a checkpoint sent to a peer must not change the digest it signs,
    or every checkpoint would call for another)."""
    if str(record.get("type", "")).startswith("audit."):
        return None
    if record["direction"] == "out":
        return str(record["destination_party"])
    if record["direction"] == "in":
        return str(record["source_party"])
    return None


@dataclass
class ChainHead:
    """Where the chain stands: the last seq and hash, and the running peer digests."""

    seq: int = 0
    hash: str = GENESIS
    peers: dict[str, str] = field(default_factory=dict)

    def extend(self, record: dict[str, Any], party_id: str) -> dict[str, Any]:
        """Number, link and hash `record` (in place) as the next one; returns it."""
        record["seq"] = self.seq + 1
        record["prev_hash"] = self.hash
        record["hash"] = record_hash(self.hash, record)
        self.seq, self.hash = record["seq"], record["hash"]
        peer = peer_of(record, party_id)
        if peer is not None:
            self.peers[peer] = peer_digest(self.peers.get(peer, GENESIS), record["envelope_sha256"])
        return record


def checkpoint_body(
    party_id: str, head: ChainHead, at: str, verify_key: VerifyKey
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "party_id": party_id,
        "seq": head.seq,
        "head_hash": head.hash,
        "at": at,
        "peer_digests": dict(sorted(head.peers.items())),
        "public_key": verify_key.to_bytes().hex(),
    }


def sign_checkpoint(body: Mapping[str, Any], key: SigningKey) -> str:
    return key.sign(canonical_json(dict(body))).hex()


def checkpoint_signature_ok(body: Mapping[str, Any], signature: str, key: VerifyKey) -> bool:
    try:
        key.verify(canonical_json(dict(body)), bytes.fromhex(signature))
    except (BadSignature, ValueError):
        return False
    return True
