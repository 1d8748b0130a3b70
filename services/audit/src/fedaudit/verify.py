"""Offline verification of an exported audit log (`fedmq audit verify FILE`).

An export is JSON lines: a header `{"format": "fedmq.audit.export.v1", "party_id", "public_key"}`,
then `{"record": {...}}` lines in seq order and `{"checkpoint": {"body": {...}, "signature"}}`
lines (fedaudit.store.export_lines writes it). The verifier needs nothing else: it recomputes
every record's hash from its contents and the chain from the genesis value, and names

- a record whose stored hash does not match its contents (edited in place),
- a broken link: a record whose prev_hash is not its predecessor's hash (the predecessor was
  edited and its hash recomputed, or records were reordered),
- missing records: a gap in the seq numbers, or records a checkpoint covers but the export
  lacks at its end,
- a checkpoint whose signature does not verify under the export's key, or whose head hash or
  peer digests do not match what the records recompute to.

What it cannot see: records appended after the last checkpoint and then deleted, if no later
record or checkpoint refers to them (so checkpoints are frequent: every N records or T seconds).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fedcrypto.signing import VerifyKey

from fedaudit.chain import (
    CHECKPOINT_FORMAT,
    GENESIS,
    checkpoint_signature_ok,
    peer_digest,
    peer_of,
    record_hash,
)

EXPORT_FORMAT: Final = "fedmq.audit.export.v1"


@dataclass(frozen=True)
class Problem:
    kind: str
    """"altered", "broken_link", "missing", "checkpoint_signature", "checkpoint_mismatch",
    "malformed"."""
    seq: int
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Export:
    party_id: str
    public_key: str
    records: list[dict[str, Any]]
    checkpoints: list[dict[str, Any]]


def parse_export(lines: Iterable[str]) -> Export:
    """The export's parts; ValueError naming the line for anything that is not an export."""
    header: Mapping[str, Any] | None = None
    records: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: not JSON ({exc.msg})") from None
        if header is None:
            if not isinstance(item, dict) or item.get("format") != EXPORT_FORMAT:
                raise ValueError(f"line {number}: not a {EXPORT_FORMAT} export header")
            header = item
        elif isinstance(item, dict) and "record" in item:
            records.append(item["record"])
        elif isinstance(item, dict) and "checkpoint" in item:
            checkpoints.append(item["checkpoint"])
        else:
            raise ValueError(f"line {number}: neither a record nor a checkpoint")
    if header is None:
        raise ValueError("empty export")
    return Export(str(header["party_id"]), str(header["public_key"]), records, checkpoints)


def verify_export(export: Export) -> list[Problem]:
    """Every problem found, in seq order; [] for an intact log."""
    problems: list[Problem] = []
    try:
        key = VerifyKey.from_bytes(bytes.fromhex(export.public_key))
    except ValueError as exc:
        return [Problem("malformed", 0, f"the export's public key is unusable: {exc}")]
    # The chain as the records' contents recompute it, seq -> (hash, peer digests).
    truth: dict[int, tuple[str, dict[str, str]]] = {}
    recomputed, peers = GENESIS, {}  # type: tuple[str, dict[str, str]]
    previous: dict[str, Any] | None = None
    expected = 1
    for record in export.records:
        seq = int(record.get("seq", -1))
        if seq > expected:
            first, last = expected, seq - 1
            span = f"record {first}" if first == last else f"records {first}..{last}"
            problems.append(Problem("missing", first, f"{span} missing (gap before record {seq})"))
        elif seq < expected:
            problems.append(Problem("malformed", seq, f"record {seq} out of order or repeated"))
            continue
        try:
            own = record_hash(str(record["prev_hash"]), record)
        except (KeyError, ValueError) as exc:
            problems.append(Problem("malformed", seq, f"record {seq} is malformed: {exc}"))
            previous, expected = record, seq + 1
            continue
        if own != record.get("hash"):
            problems.append(
                Problem(
                    "altered", seq, f"record {seq} altered: its hash does not match its contents"
                )
            )
        elif (
            previous is not None and seq == expected and record["prev_hash"] != previous.get("hash")
        ):
            problems.append(
                Problem(
                    "broken_link",
                    seq,
                    f"broken link at record {seq}: its prev_hash is not record {seq - 1}'s hash "
                    f"(record {seq - 1} was changed and re-hashed, or records were reordered)",
                )
            )
        elif previous is None and seq == 1 and record["prev_hash"] != GENESIS:
            problems.append(Problem("broken_link", seq, "broken link at record 1: not the genesis"))
        recomputed = record_hash(recomputed, record)
        peer = peer_of(record, export.party_id)
        if peer is not None:
            peers[peer] = peer_digest(peers.get(peer, GENESIS), str(record["envelope_sha256"]))
        truth[seq] = (recomputed, dict(peers))
        previous, expected = record, seq + 1
    last_seq = expected - 1
    for checkpoint in export.checkpoints:
        problems += _check_checkpoint(checkpoint, key, export.party_id, truth, last_seq)
    return sorted(problems, key=lambda p: (p.seq, p.kind))


def _check_checkpoint(
    checkpoint: Mapping[str, Any],
    key: VerifyKey,
    party_id: str,
    truth: Mapping[int, tuple[str, dict[str, str]]],
    last_seq: int,
) -> list[Problem]:
    body, signature = checkpoint.get("body") or {}, str(checkpoint.get("signature", ""))
    seq = int(body.get("seq", -1))
    if body.get("format") != CHECKPOINT_FORMAT or body.get("party_id") != party_id:
        return [Problem("malformed", seq, f"checkpoint at record {seq} is not this party's")]
    if (
        not checkpoint_signature_ok(body, signature, key)
        or body.get("public_key") != key.to_bytes().hex()
    ):
        return [
            Problem(
                "checkpoint_signature",
                seq,
                f"checkpoint at record {seq}: its signature does not verify under the log's key",
            )
        ]
    if seq > last_seq:
        first = last_seq + 1
        span = f"record {first}" if first == seq else f"records {first}..{seq}"
        return [Problem("missing", first, f"{span} missing (signed by the checkpoint at {seq})")]
    if seq == 0:
        return []
    head, peers = truth.get(seq, ("", {}))
    if head != body.get("head_hash"):
        return [
            Problem(
                "checkpoint_mismatch",
                seq,
                f"checkpoint at record {seq} does not match the records: their chain hash "
                "differs from the one it signed",
            )
        ]
    if peers != body.get("peer_digests"):
        return [
            Problem(
                "checkpoint_mismatch",
                seq,
                f"checkpoint at record {seq}: the per-peer digests differ from the records'",
            )
        ]
    return []
