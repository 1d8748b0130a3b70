"""Peer checkpoints: each party's audit hands the other its signed chain head and, at the job's
end, a signed statement of what crossed; each checks and keeps the other's. A party that
rewrites its own log and re-signs its own checkpoints consistently is then caught by the copy
its peer holds, and a message one log lacks is named.

Two audits (guest and host) on their own memory buses and SQLite files; a relay stands in for
the two gateways: it carries what one audit publishes on out.<peer> to the other's svc.audit,
signed as a gateway signs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fedaudit.chain import record_hash, sign_checkpoint
from fedaudit.main import Audit
from fedaudit.peers import PeerState, check
from fedaudit.report import job_report
from fedaudit.settings import AuditSettings
from fedaudit.store import export_lines
from fedaudit.verify import Export, parse_export, verify_export, verify_pair
from fedbus import Bus, Delivery, Message, connect
from fedcrypto.signing import SigningKey
from fedschemas import Envelope, canonical_bytes, decode_envelope, encode_envelope
from fedschemas.audit_payloads import AuditCheckpoint
from fedschemas.payloads import JobEnd

from tests.audit.traffic import GUEST, HOST, KEY_BITS, Traffic
from tests.polling import wait_for

GATEWAY_KEYS = {GUEST: SigningKey.generate(), HOST: SigningKey.generate()}


@dataclass
class Pair:
    audits: dict[str, Audit]
    buses: dict[str, Bus]
    keys: dict[str, SigningKey]

    def feed(self, party: str, envelopes: list[Envelope]) -> None:
        traffic = Traffic(observer=party)
        for envelope in envelopes:
            d = traffic.delivery(envelope)
            self.buses[party].publish(Message(d.topic, d.body, d.message_id))

    def export(self, party: str) -> Export:
        audit = self.audits[party]
        with audit.engine.connect() as conn:
            return parse_export(list(export_lines(conn, party, audit.public_key_hex)))

    def held(self, party: str) -> list[dict[str, object]]:
        with self.audits[party].engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM audit_peer_checkpoints ORDER BY id"))
            return [dict(r._mapping) for r in rows]


def gateway_relay(to: Bus) -> Callable[[Delivery], None]:
    """What the sender's gateway and the receiver's do to an audit.* message: sign it as the
    sending party and publish it on the receiver's svc.audit."""

    def relay(delivery: Delivery) -> None:
        envelope = decode_envelope(delivery.body)
        if not envelope.type.startswith("audit."):
            return
        source = envelope.source.party_id
        signed = envelope.model_copy(update={"signer_key_id": f"party-{source}"})
        signed = signed.model_copy(
            update={"signature": GATEWAY_KEYS[source].sign(canonical_bytes(signed))}
        )
        to.publish(Message("svc.audit", encode_envelope(signed), envelope.message_id))

    return relay


@pytest.fixture
def pair(tmp_path: Path, unique_name: str) -> Iterator[Pair]:
    buses = {p: connect(f"memory://{unique_name}-{p}") for p in (GUEST, HOST)}
    keys = {p: SigningKey.generate() for p in (GUEST, HOST)}
    audits = {}
    for party, bus in buses.items():
        for topic in ("out.9999", "out.10000", "svc.worker", "svc.scheduler", "svc.audit"):
            bus.declare(topic)
        settings = AuditSettings(
            party_id=party,
            database_url=f"sqlite:///{tmp_path / f'audit-{party}.db'}",
            signing_key=keys[party].to_bytes().hex(),
            min_key_bits=KEY_BITS,
            checkpoint_every=5,
            checkpoint_interval_s=0.2,
            peer_checkpoint_interval_s=0.2,
            timer_interval_s=0.05,
            statement_settle_s=0.5,
            http_port=-1,
            log_json=False,
        )
        audits[party] = Audit(settings, bus=bus)
        audits[party].start()
    subs = [
        buses[GUEST].subscribe(f"out.{HOST}", gateway_relay(buses[HOST])),
        buses[HOST].subscribe(f"out.{GUEST}", gateway_relay(buses[GUEST])),
    ]
    yield Pair(audits, buses, keys)
    for sub in subs:
        sub.cancel()
    for audit in audits.values():
        audit.stop()
    for bus in buses.values():
        bus.close()


def honest_job(traffic: Traffic) -> tuple[list[Envelope], list[Envelope], Envelope]:
    """(the guest's deliveries, the host's, the job's end) of one honest hetero_lr run."""
    sent = traffic.honest(iterations=1)
    guest_task_run = sent[1]
    end = traffic.envelope(
        JobEnd(job_id=traffic.job_id, party_id=HOST, attempt=0, at=datetime.now(UTC)),
        GUEST,
        HOST,
        "end",
        component="job",
    )
    return sent, [e for e in sent if e is not guest_task_run], end


def statements_held(pair: Pair, party: str, job_id: str) -> list[dict[str, object]]:
    return [r for r in pair.held(party) if r["job_id"] == job_id]


def run_job(pair: Pair, *, host_misses: int | None = None) -> str:
    traffic = Traffic()
    guest_sees, host_sees, end = honest_job(traffic)
    if host_misses is not None:
        del host_sees[host_misses]
    pair.feed(GUEST, guest_sees)
    # The initiator's job.end leaves on out.<host> (Traffic routes only data and proposals so)
    pair.buses[GUEST].publish(Message(f"out.{HOST}", encode_envelope(end), end.message_id))
    pair.feed(HOST, [*host_sees, end])
    for party in (GUEST, HOST):
        wait_for(lambda p=party: statements_held(pair, p, traffic.job_id) or None, timeout=10)
    return traffic.job_id


def test_each_party_holds_the_others_signed_checkpoints_and_both_logs_agree(
    pair: Pair, tmp_path: Path
) -> None:
    # Execute: an honest job at both parties, to its end
    job_id = run_job(pair)

    # Assert: each party verified and kept the other's checkpoint and job statement
    for party in (GUEST, HOST):
        held = statements_held(pair, party, job_id)
        assert [r["problem"] for r in held] == [""]
        assert json.loads(str(held[0]["statement"]))["sent"] > 0
    guest, host = pair.export(GUEST), pair.export(HOST)
    assert verify_export(guest) == [] and verify_export(host) == []
    assert verify_pair(guest, host) == [] and verify_pair(host, guest) == []
    # ...as `fedmq audit verify mine --peer theirs` says
    from typer.testing import CliRunner

    from fedmq.cli import app

    files = {}
    for party in (GUEST, HOST):
        files[party] = tmp_path / f"{party}.jsonl"
        with pair.audits[party].engine.connect() as conn:
            audit = pair.audits[party]
            files[party].write_text("\n".join(export_lines(conn, party, audit.public_key_hex)))
    result = CliRunner().invoke(
        app, ["audit", "verify", str(files[GUEST]), "--peer", str(files[HOST])]
    )
    assert result.exit_code == 0, result.output
    assert "what crossed between the two is in both logs" in result.output
    # ...and the post-hoc report of the job shows the peer's statement, agreeing
    with pair.audits[HOST].engine.connect() as conn:
        host = pair.audits[HOST]
        report = job_report(conn, host.ctx.auditor.policy, job_id, host.public_key_hex)
    assert [(s["peer"], s["agrees"]) for s in report["peer_statements"]] == [(GUEST, True)]
    # ...as `fedmq audit report JOB` prints it (the API's answer is that report)
    import fedmq.audit_cli as audit_cli

    class Answer:
        def json(self) -> object:
            return report

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audit_cli, "_get", lambda *_a, **_k: Answer())
        printed = CliRunner().invoke(app, ["audit", "report", job_id, "--token", "t"])
    assert printed.exit_code == 0, printed.output
    assert f"party {GUEST}'s signed statement of the job" in printed.output
    assert "agrees" in printed.output
    # ...and counted: one statement sent each way, the peer's checkpoints all ok
    metrics = pair.audits[GUEST].metrics
    assert metrics.peer_checkpoints_sent.labels(HOST)._value.get() >= 1
    assert metrics.peer_checkpoints.labels(HOST, "ok")._value.get() >= 1
    assert metrics.peer_checkpoints.labels(HOST, "problem")._value.get() == 0
    # ...and the live comparison broke no rule at either party
    for party in (GUEST, HOST):
        with pair.audits[party].engine.connect() as conn:
            rules = conn.execute(sa.text("SELECT rule FROM audit_findings")).scalars().all()
        assert [r for r in rules if r.startswith("control.peer")] == []


def test_a_message_recorded_just_after_the_jobs_end_is_in_both_statements(pair: Pair) -> None:
    # Prepare: the host's audit records the job's last crossing message after the job's end
    # (it comes through the fan-out queue, the end through another)
    traffic = Traffic()
    guest_sees, host_sees, end = honest_job(traffic)
    *early, late = host_sees

    # Execute
    pair.feed(GUEST, guest_sees)
    pair.buses[GUEST].publish(Message(f"out.{HOST}", encode_envelope(end), end.message_id))
    pair.feed(HOST, [*early, end])
    time.sleep(0.2)
    pair.feed(HOST, [late])
    for party in (GUEST, HOST):
        wait_for(lambda p=party: statements_held(pair, p, traffic.job_id) or None, timeout=10)

    # Assert: each statement counts the late message; neither party finds a disagreement
    for party in (GUEST, HOST):
        assert [r["problem"] for r in statements_held(pair, party, traffic.job_id)] == [""]
        with pair.audits[party].engine.connect() as conn:
            rules = conn.execute(sa.text("SELECT rule FROM audit_findings")).scalars().all()
        assert [r for r in rules if r.startswith("control.peer")] == [], party


def test_a_party_that_rewrites_its_log_and_re_signs_it_is_caught_by_its_peers_copy(
    pair: Pair,
) -> None:
    # Prepare: the host rewrites a record of the job (what it received), recomputes the chain
    # and re-signs all its own checkpoints: on its own, its export verifies
    run_job(pair)
    host = pair.export(HOST)
    forged = rewrite(host, seq=5, key=pair.keys[HOST])
    assert verify_export(forged) == []

    # Execute
    problems = verify_pair(pair.export(GUEST), forged)

    # Assert: the guest's copy of the host's checkpoints disagrees with the host's records
    assert any(
        p.kind == "peer_disagrees" and "does not match 10000's records" in str(p) for p in problems
    ), problems


def test_a_message_missing_from_one_log_is_named_live_and_by_the_verifier(pair: Pair) -> None:
    # Execute: the host's log lacks one message the guest sent it (its first residual, after
    # the proposal and the two keys)
    job_id = run_job(pair, host_misses=3)

    # Assert: the host's audit reports that the guest's statement disagrees with its log (at
    # once, or by its timer when the statement came before the job's end there)
    def disagreements() -> list[Any] | None:
        with pair.audits[HOST].engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT rule, party, detail FROM audit_findings WHERE job_id = :j"),
                {"j": job_id},
            ).all()
        return [f for f in found if f.rule == "control.peer_log_disagrees"] or None

    disagree = wait_for(disagreements, timeout=30)
    assert disagree[0].party == GUEST
    assert f"sent by {GUEST} to {HOST}" in disagree[0].detail
    # ...and the verifier names the missing message
    problems = verify_pair(pair.export(GUEST), pair.export(HOST))
    assert [p.kind for p in problems] == ["peer_disagrees"]
    assert f"is not in {HOST}'s log as received" in str(problems[0])


def test_a_checkpoint_signed_by_another_key_or_forking_the_chain_is_reported() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    state = PeerState()

    def message(signer: SigningKey, seq: int, head: str) -> AuditCheckpoint:
        body = {
            "format": "fedmq.audit.checkpoint.v1",
            "party_id": HOST,
            "seq": seq,
            "head_hash": head,
            "at": "2026-12-07T00:00:00+00:00",
            "peer_digests": {},
            "public_key": signer.verify_key().to_bytes().hex(),
        }
        return AuditCheckpoint(
            party_id=HOST,
            body=json.dumps(body, sort_keys=True, separators=(",", ":")),
            signature=sign_checkpoint(body, signer),
        )

    first = check(message(key, 3, "aa" * 32), HOST, state, None)
    swapped = check(message(other, 4, "bb" * 32), HOST, state, None)
    forked = check(message(key, 3, "cc" * 32), HOST, state, None)
    foreign = check(message(key, 5, "dd" * 32), GUEST, state, None)

    addressed = AuditCheckpoint(
        **{
            **message(key, 6, "ee" * 32).model_dump(),
            "statement": '{"format":"fedmq.audit.traffic.v1","party_id":"10000","peer":"10001"}',
            "statement_signature": "00" * 64,
        }
    )
    misaddressed = check(addressed, HOST, state, None, GUEST)

    assert first.problems == []
    assert "not its pinned key" in swapped.problems[0]
    assert "statement of job" in misaddressed.problems[0]
    assert "two different chain heads at record 3" in forked.problems[0]
    assert "arrived from party 9999" in foreign.problems[0]


def rewrite(export: Export, *, seq: int, key: SigningKey) -> Export:
    """`export` with record `seq` changed, the chain recomputed and every checkpoint re-signed
    by the party's own key: a consistent forgery of its own log."""
    records = [dict(r) for r in export.records]
    records[seq - 1]["size"] = int(records[seq - 1]["size"]) + 1
    heads: dict[int, str] = {}
    previous = "0" * 64
    for record in records:
        record["prev_hash"] = previous
        record["hash"] = previous = record_hash(previous, record)
        heads[int(record["seq"])] = previous
    checkpoints = []
    for checkpoint in export.checkpoints:
        body = dict(checkpoint["body"])
        body["head_hash"] = heads[int(body["seq"])]
        checkpoints.append({"body": body, "signature": sign_checkpoint(body, key)})
    return Export(export.party_id, export.public_key, records, checkpoints, [])


def test_a_checkpoint_goes_to_a_peer_once_per_interval_and_only_when_its_traffic_moved(
    pair: Pair,
) -> None:
    # Prepare: the guest recorded the start of a job with the host and signed its head
    from fedaudit import handlers

    traffic = Traffic()
    guest = pair.audits[GUEST]
    sent = traffic.honest(iterations=0)
    pair.feed(GUEST, sent)
    wait_for(lambda: guest.ctx.head.seq >= len(sent) or None, timeout=30)
    handlers.final_checkpoint(guest.ctx)
    assert guest.ctx.latest is not None
    now = guest.ctx.clock() + 1000  # past the interval, whatever the timer did
    signed = guest.ctx.head.seq

    # Execute: the timer's step three times at the same moment
    for _ in range(3):
        handlers.send_checkpoint(guest.ctx, guest.ctx.latest, now)

    # Assert: the host got and kept that one checkpoint (no statement: no job ended)
    def plain_held() -> list[dict[str, object]] | None:
        rows = [r for r in pair.held(HOST) if r["job_id"] == "" and r["seq"] == signed]
        return rows or None

    held = wait_for(plain_held, timeout=30)
    assert [r["problem"] for r in held] == [""]
    assert guest.metrics.peer_checkpoints_sent.labels(HOST)._value.get() == 1
