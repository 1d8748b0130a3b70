"""What the audit does with each delivery of its fan-out subscription, and its timer's work.

One delivery: decode the envelope (an undecodable one is dead-lettered on the audit's own
fan-out queue, never on the topic), skip it if (topic, message id) is recorded already (a
redelivery after a crash between commit and ack), run the rules, chain the record, append it
with its findings in one transaction, and only then ack. A critical finding then asks this
party's scheduler to stop the job (control.audit_stop, signed) and alerts.

Consumption is one thread (the fan-out subscription's) and the chain has one writer: the lock
serialises it with the timer's checkpoints and silence checks.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from fedbus import Delivery, Reject
from fedbus.runtime import EnvelopePublisher
from fedcrypto.signing import SigningKey
from fedschemas import (
    Envelope,
    MalformedMessage,
    PartyRef,
    canonical_bytes,
    decode_envelope,
    decode_payload,
    topics,
)
from fedschemas.payloads import AuditStop
from sqlalchemy.engine import Engine

from fedaudit import store
from fedaudit.auditor import Auditor, make_record
from fedaudit.chain import ChainHead, checkpoint_body, sign_checkpoint
from fedaudit.metrics import AuditMetrics
from fedaudit.rules.catalogue import Finding
from fedaudit.rules.state import Observation

log = structlog.get_logger("fedaudit")


@dataclass
class AuditContext:
    party_id: str
    engine: Engine
    auditor: Auditor
    key: SigningKey
    publisher: EnvelopePublisher
    metrics: AuditMetrics
    checkpoint_every: int = 100
    checkpoint_interval_s: float = 10.0
    stop_on_critical: bool = True
    alert: Callable[[list[dict[str, Any]]], None] | None = None
    clock: Callable[[], float] = time.time
    head: ChainHead = field(default_factory=ChainHead)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_checkpoint_seq: int = 0
    first_unsigned_at: float | None = None
    stopped: set[str] = field(default_factory=set)
    """Jobs this audit already asked to stop (one request per job)."""


def load(ctx: AuditContext) -> None:
    """At start-up: the chain head from the log, and the rules' job views replayed from it."""
    with ctx.engine.connect() as conn:
        ctx.head = store.load_head(conn, ctx.party_id)
        ctx.last_checkpoint_seq = store.last_checkpoint_seq(conn)
        for record in store.iter_records(conn):
            ctx.auditor.observe(Observation(record))
            if any(f["severity"] == "critical" for f in record["findings"]):
                ctx.stopped.add(str(record["job_id"]))
    if ctx.head.seq > ctx.last_checkpoint_seq:
        ctx.first_unsigned_at = ctx.clock()
    ctx.metrics.chain_seq.set(ctx.head.seq)
    log.info("audit_log_loaded", seq=ctx.head.seq, checkpoint=ctx.last_checkpoint_seq)


def handle_delivery(ctx: AuditContext, delivery: Delivery) -> None:
    try:
        envelope = decode_envelope(delivery.body)
    except MalformedMessage as exc:
        ctx.metrics.unreadable.inc()
        raise Reject(f"audit: undecodable message on {delivery.topic}: {exc.reason}") from exc
    try:
        payload = decode_payload(envelope)
    except MalformedMessage:
        payload = None  # recorded with its hashes; the rules see no payload facts
    with ctx.lock:
        with ctx.engine.connect() as conn:
            if store.is_recorded(conn, delivery.topic, envelope.message_id):
                ctx.metrics.duplicates.inc()
                return
        now = ctx.clock()
        record = make_record(delivery.topic, delivery.body, envelope, payload, ctx.party_id)
        found = ctx.auditor.observe(Observation(record, payload), now)
        record["findings"] = [f.to_dict() for f in found]
        head = ChainHead(ctx.head.seq, ctx.head.hash, dict(ctx.head.peers))
        head.extend(record, ctx.party_id)
        critical = [f for f in found if f.severity == "critical"]
        stop = bool(critical) and ctx.stop_on_critical and envelope.job_id not in ctx.stopped
        with ctx.engine.begin() as conn:
            store.append(conn, record, stop)
        ctx.head = head
        if ctx.first_unsigned_at is None:
            ctx.first_unsigned_at = now
        _count(ctx, record, envelope, found, now)
        if head.seq - ctx.last_checkpoint_seq >= ctx.checkpoint_every:
            _checkpoint(ctx)
    if stop:
        ctx.stopped.add(envelope.job_id)
        request_stop(ctx, envelope, critical[0])
    if found and ctx.alert is not None:
        alerts = [_alert(ctx, record, f) for f in found if f.severity != "info"]
        if alerts:
            ctx.alert(alerts)


def _count(
    ctx: AuditContext, record: dict[str, Any], envelope: Envelope, found: list[Finding], now: float
) -> None:
    m = ctx.metrics
    m.messages.labels(record["direction"], record["type"]).inc()
    lag = max(0.0, now - envelope.created_at.timestamp())
    m.lag.observe(lag)
    m.last_lag.set(lag)
    m.chain_seq.set(record["seq"])
    for finding in found:
        m.findings.labels(finding.rule, finding.severity).inc()
        if finding.severity != "info":
            log.warning(
                "audit_finding",
                rule=finding.rule,
                severity=finding.severity,
                party=finding.party,
                job_id=envelope.job_id,
                message_id=envelope.message_id,
                detail=finding.detail,
            )


def request_stop(ctx: AuditContext, envelope: Envelope, finding: Finding) -> None:
    """control.audit_stop to this party's scheduler, signed by the audit's key."""
    me = PartyRef(party_id=ctx.party_id, role="local")
    stop = ctx.publisher.envelope(
        AuditStop(
            job_id=envelope.job_id,
            rule=finding.rule,
            severity=finding.severity,
            party_id=finding.party,
            message_id=envelope.message_id,
            detail=finding.detail[:4000],
        ),
        destination=me,
        job_id=envelope.job_id,
        component="audit",
        task_id="",
        attempt=envelope.attempt,
        tag="audit_stop",
    )
    ctx.publisher.send(topics.SCHEDULER, stop)  # signed by the publisher's signer
    ctx.metrics.stop_requests.inc()
    log.warning(
        "audit_stop_requested",
        job_id=envelope.job_id,
        rule=finding.rule,
        party=finding.party,
        message_id=envelope.message_id,
    )


def sign_stop(envelope: Envelope, key: SigningKey) -> Envelope:
    unsigned = envelope.model_copy(
        update={"signer_key_id": "audit-" + key.verify_key().fingerprint()[:16]}
    )
    return unsigned.model_copy(update={"signature": key.sign(canonical_bytes(unsigned))})


def _checkpoint(ctx: AuditContext) -> None:
    """Sign the head (caller holds the lock)."""
    at = datetime.fromtimestamp(ctx.clock(), UTC).isoformat(timespec="microseconds")
    body = checkpoint_body(ctx.party_id, ctx.head, at, ctx.key.verify_key())
    with ctx.engine.begin() as conn:
        store.add_checkpoint(conn, body, sign_checkpoint(body, ctx.key))
    ctx.last_checkpoint_seq = ctx.head.seq
    ctx.first_unsigned_at = None
    ctx.metrics.checkpoints.inc()


def final_checkpoint(ctx: AuditContext) -> None:
    """On a graceful stop: sign what the last checkpoint does not cover."""
    with ctx.lock:
        if ctx.head.seq > ctx.last_checkpoint_seq:
            _checkpoint(ctx)


def tick(ctx: AuditContext) -> None:
    """The timer: a checkpoint when records wait longer than the interval; silent parties."""
    now = ctx.clock()
    with ctx.lock:
        due = (
            ctx.first_unsigned_at is not None
            and now - ctx.first_unsigned_at >= ctx.checkpoint_interval_s
        )
        if due and ctx.head.seq > ctx.last_checkpoint_seq:
            _checkpoint(ctx)
        silent = ctx.auditor.silent(now)
    for job_id, finding in silent:
        ctx.metrics.findings.labels(finding.rule, finding.severity).inc()
        log.warning(
            "audit_finding",
            rule=finding.rule,
            severity=finding.severity,
            party=finding.party,
            job_id=job_id,
            detail=finding.detail,
        )


def _alert(ctx: AuditContext, record: dict[str, Any], finding: Finding) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": "FedmqAuditFinding",
            "rule": finding.rule,
            "severity": finding.severity,
            "party": ctx.party_id,
            "offender": finding.party,
            "job_id": str(record["job_id"]),
        },
        "annotations": {"summary": finding.detail, "message_id": str(record["message_id"])},
        "startsAt": record["observed_at"],
    }


def webhook(url: str) -> Callable[[list[dict[str, Any]]], None]:
    """POST alerts to an Alertmanager-compatible receiver, off the consumer thread; a receiver
    that is down loses the alert, never a record (the log and the metrics still have it)."""

    def post(alerts: list[dict[str, Any]]) -> None:
        def send() -> None:
            request = urllib.request.Request(  # noqa: S310 - the operator's own URL
                url,
                data=json.dumps(alerts).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                urllib.request.urlopen(request, timeout=5).close()  # noqa: S310
            except OSError as exc:
                log.warning("audit_webhook_failed", url=url, error=str(exc))

        threading.Thread(target=send, name="audit-webhook", daemon=True).start()

    return post
