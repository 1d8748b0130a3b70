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

With the peer's export as well (`verify_pair`, `fedmq audit verify mine --peer theirs`) it
also names

- a checkpoint of the peer held in this party's log (the peer sent it: fedaudit.peers) that the
  peer's export does not reproduce: its head hash differs from what the peer's records
  recompute to (the peer rewrote its log after signing it), its records are missing, or it is
  not signed by the key of the peer's export;
- a message that crossed between the two, by job, in one log and not in the other (matched by
  facts.content_sha256, the same at both ends).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    peer_checkpoints: list[dict[str, Any]] = field(default_factory=list)
    """The peers' checkpoints this party received and kept."""


def parse_export(lines: Iterable[str]) -> Export:
    """The export's parts; ValueError naming the line for anything that is not an export."""
    header: Mapping[str, Any] | None = None
    records: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    peer_checkpoints: list[dict[str, Any]] = []
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
        elif isinstance(item, dict) and "peer_checkpoint" in item:
            peer_checkpoints.append(item["peer_checkpoint"])
        else:
            raise ValueError(f"line {number}: neither a record nor a checkpoint")
    if header is None:
        raise ValueError("empty export")
    return Export(
        str(header["party_id"]), str(header["public_key"]), records, checkpoints, peer_checkpoints
    )


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


def _chain_heads(records: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """seq -> the chain hash the records recompute to at that seq (from the genesis)."""
    heads: dict[int, str] = {}
    running = GENESIS
    for record in records:
        try:
            running = record_hash(running, record)
        except (KeyError, ValueError):
            break
        heads[int(record.get("seq", -1))] = running
    return heads


def verify_pair(mine: Export, theirs: Export) -> list[Problem]:
    """What the two parties' exports disagree on (each export on its own: verify_export)."""
    me, peer = mine.party_id, theirs.party_id
    problems: list[Problem] = []
    try:
        their_key = VerifyKey.from_bytes(bytes.fromhex(theirs.public_key))
    except ValueError as exc:
        return [Problem("malformed", 0, f"{peer}'s export's public key is unusable: {exc}")]
    heads = _chain_heads(theirs.records)
    last = max(heads, default=0)
    for held in mine.peer_checkpoints:
        if held.get("peer") != peer:
            continue
        try:
            body = json.loads(str(held["body"]))
            seq = int(body["seq"])
        except (KeyError, ValueError, TypeError):
            problems.append(Problem("malformed", 0, f"a checkpoint of {peer} held by {me}: bad"))
            continue
        where = f"{peer}'s checkpoint at record {seq} (held by {me})"
        if body.get("public_key") != theirs.public_key or not checkpoint_signature_ok(
            body, str(held.get("signature", "")), their_key
        ):
            problems.append(
                Problem(
                    "peer_checkpoint",
                    seq,
                    f"{where} is not signed by the key of {peer}'s export",
                )
            )
        elif seq > last:
            problems.append(
                Problem(
                    "peer_missing",
                    seq,
                    f"{where}: records {last + 1}..{seq} missing from {peer}'s export",
                )
            )
        elif heads.get(seq) != body.get("head_hash"):
            problems.append(
                Problem(
                    "peer_disagrees",
                    seq,
                    f"{where} does not match {peer}'s records: its log was changed after it "
                    "signed the checkpoint",
                )
            )
    problems += _traffic(mine, theirs) + _traffic(theirs, mine)
    return sorted(problems, key=lambda p: (p.seq, p.kind, p.message))


def _traffic(sender: Export, receiver: Export) -> list[Problem]:
    """Messages `sender` logged as sent to `receiver` that `receiver` did not log as received."""
    from fedaudit.peers import crossing_hash

    src, dst = sender.party_id, receiver.party_id
    got = {
        crossing_hash(r)
        for r in receiver.records
        if r.get("direction") == "in" and r.get("source_party") == src
    }
    problems: list[Problem] = []
    for record in sender.records:
        if record.get("direction") != "out" or record.get("destination_party") != dst:
            continue
        if str(record.get("type")).startswith("audit.") or crossing_hash(record) in got:
            continue
        problems.append(
            Problem(
                "peer_disagrees",
                int(record.get("seq", -1)),
                f"message {record.get('message_id')} ({record.get('type')}, job "
                f"{record.get('job_id')}) "
                f"sent by {src} to {dst} (its record {record['seq']}) is not in {dst}'s log as "
                "received",
            )
        )
    return problems
