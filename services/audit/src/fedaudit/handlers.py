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

import hashlib
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from fedbus import Delivery, Reject
from fedbus.bus_factory import url_identity
from fedbus.runtime import EnvelopePublisher, RemoteSourceGuard
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
from fedschemas.audit_payloads import AuditCheckpoint, ColumnStats, DecryptCheck
from fedschemas.payloads import AuditStop
from fedschemas.serving_payloads import ServingEvent
from sqlalchemy.engine import Connection, Engine

from fedaudit import peers, store
from fedaudit.auditor import Auditor, make_record
from fedaudit.chain import ChainHead, canonical_json, checkpoint_body, sign_checkpoint
from fedaudit.facts import kind_of
from fedaudit.liveness import Liveness, Outage
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
    peer_publisher: EnvelopePublisher | None = None
    """Sends checkpoints to peers (unsigned: the party's gateway signs what leaves); None:
    none are sent."""
    peer_keys: dict[str, str] = field(default_factory=dict)
    peer_interval_s: float = 10.0
    peer_states: dict[str, peers.PeerState] = field(default_factory=dict)
    latest: tuple[dict[str, Any], str] | None = None
    """The last checkpoint written (body, signature)."""
    sent_to: dict[str, tuple[float, str]] = field(default_factory=dict)
    """peer -> (when, its digest in the checkpoint last sent to it)."""
    started_at: float = 0.0
    """When this audit loaded its log: the first checkpoint to a peer waits an interval."""
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    stated: set[str] = field(default_factory=set)
    """Jobs whose end this audit announced to the peers (one statement per job)."""
    pending: list[tuple[peers.PeerCheckpoint, int, float]] = field(default_factory=list)
    """Peers' statements of jobs not ended here yet: (checkpoint, its record's seq, since)."""
    pending_for_s: float = 600.0
    statement_settle_s: float = 0.0
    """How long an ended job's messages must be quiet here before its traffic is stated and
    peers' statements of it compared (fedaudit.settings)."""
    settling: dict[str, float] = field(default_factory=dict)
    """Jobs ended here and not settled yet: job -> when their last record came."""
    liveness: Liveness | None = None
    """Probes of the party's broker and database (fedaudit.liveness); None: not watched."""


def load(ctx: AuditContext) -> None:
    """At start-up: the chain head from the log, and the rules' job views replayed from it."""
    with ctx.engine.connect() as conn:
        ctx.head = store.load_head(conn, ctx.party_id)
        ctx.last_checkpoint_seq = store.last_checkpoint_seq(conn)
        ctx.latest = store.latest_checkpoint(conn)
        for record in store.iter_records(conn):
            ctx.auditor.observe(Observation(record))
            if any(f["severity"] == "critical" for f in record["findings"]):
                ctx.stopped.add(str(record["job_id"]))
            if kind_of(record) in JOB_ENDS:
                ctx.stated.add(str(record["job_id"]))
        for peer, key, seq, head in store.iter_peer_heads(conn):
            state = ctx.peer_states.setdefault(peer, peers.PeerState())
            state.key = state.key or key
            state.heads.setdefault(seq, head)
        open_jobs = {j for j, v in ctx.auditor.jobs.items() if not v.ended}
        for job_id, message_id, digests in store.iter_digests(conn, open_jobs):
            seen = ctx.auditor.jobs[job_id].ciphertexts
            for i in range(0, len(digests), 16):
                seen.setdefault(digests[i : i + 16], message_id)
    if ctx.head.seq > ctx.last_checkpoint_seq:
        ctx.first_unsigned_at = ctx.clock()
    ctx.started_at = ctx.clock()
    ctx.metrics.chain_seq.set(ctx.head.seq)
    log.info("audit_log_loaded", seq=ctx.head.seq, checkpoint=ctx.last_checkpoint_seq)


JOB_ENDS = ("job.end", "job.stop")


@dataclass
class _Recorded:
    """One message recorded by this call: what to do once its transaction committed."""

    record: dict[str, Any]
    envelope: Envelope
    found: list[Finding]
    stop: Finding | None
    peer: peers.PeerCheckpoint | None = None
    deferred: bool = False
    """The peer's statement is to be compared once the job ends here (compare_pending)."""
    digests: list[tuple[str, bytes]] = field(default_factory=list)


def _decode(delivery: Delivery) -> tuple[Envelope, Any]:
    """The envelope and its payload (None when the payload does not decode: the message is
    recorded with its hashes, and the rules see no payload facts)."""
    envelope = decode_envelope(delivery.body)
    try:
        return envelope, decode_payload(envelope)
    except MalformedMessage:
        return envelope, None


def handle_delivery(ctx: AuditContext, delivery: Delivery) -> None:
    """One delivery (the subscription's per-message path): record it, then act on it."""
    try:
        decoded = _decode(delivery)
    except MalformedMessage as exc:
        ctx.metrics.unreadable.inc()
        raise Reject(f"audit: undecodable message on {delivery.topic}: {exc.reason}") from exc
    _act(ctx, _record(ctx, [(delivery, *decoded)]))


def handle_inbox(ctx: AuditContext, guard: RemoteSourceGuard | None, delivery: Delivery) -> None:
    """One delivery of the audit's inbox (svc.audit: the peers' checkpoints, which only the
    party's gateway may publish): dead-lettered with the reason if another service put it
    there, else recorded and checked like the fan-out's."""
    try:
        envelope, payload = _decode(delivery)
    except MalformedMessage as exc:
        ctx.metrics.unreadable.inc()
        raise Reject(f"audit: undecodable message on {delivery.topic}: {exc.reason}") from exc
    refusal = guard.refusal(envelope, delivery.publisher) if guard is not None else None
    if refusal is not None:
        raise Reject(f"audit inbox: {refusal}")
    if not isinstance(payload, AuditCheckpoint):
        raise Reject(f"audit inbox takes audit.checkpoint, not {envelope.type}")
    _act(ctx, _record(ctx, [(delivery, envelope, payload)]))


def sibling_publishers(bus_url: str, service: str) -> frozenset[str] | None:
    """The broker users that may publish the party's own `service`'s messages to its audit,
    derived from the audit's own user by the naming `fedmq local`, compose and Kubernetes use
    (docs/security.md): "<site>-audit" trusts "<site>-<service>"; a user not named that way is
    shared by the site's services, which then trust it. None (no check) when the URL names no
    user: the bus cannot tell publishers apart (memory:// without an identity, pulsar://)."""
    user = url_identity(bus_url)
    if user is None:
        return None
    if user.endswith("-audit") and len(user) > len("-audit"):
        return frozenset({user[: -len("-audit")] + "-" + service})
    return frozenset({user})


def serving_publishers(bus_url: str) -> frozenset[str] | None:
    """The broker users that may publish serving.event: the party's serving service."""
    return sibling_publishers(bus_url, "serving")


def report_publishers(bus_url: str) -> frozenset[str] | None:
    """The broker users that may publish report.*: the party's workers."""
    return sibling_publishers(bus_url, "worker")


def _own_service_message(
    ctx: AuditContext,
    delivery: Delivery,
    publishers: frozenset[str] | None,
    *,
    kind: str,
    sender: str,
    accepts: tuple[type[ServingEvent | DecryptCheck | ColumnStats], ...],
    takes: str,
    topic_name: str,
) -> None:
    """Record one message of the party's own `sender` (serving events, workers' reports) after
    checking that the broker says that service published it, that it decodes to `accepts`,
    and that it claims this party; anything else is dead-lettered with the reason."""
    if publishers is not None and delivery.publisher not in publishers:
        by = (
            "no broker-validated publisher"
            if delivery.publisher is None
            else f"published by {delivery.publisher!r}"
        )
        raise Reject(f"{kind} not from {sender} ({by})")
    try:
        envelope, payload = _decode(delivery)
    except MalformedMessage as exc:
        ctx.metrics.unreadable.inc()
        raise Reject(f"audit: undecodable message on {delivery.topic}: {exc.reason}") from exc
    if not isinstance(payload, accepts):
        raise Reject(f"{delivery.topic} takes {takes}, not {envelope.type}")
    if envelope.source.party_id != ctx.party_id or payload.party_id != ctx.party_id:
        raise Reject(
            f"{kind} from party {envelope.source.party_id} on party {ctx.party_id}'s "
            f"own {topic_name} topic"
        )
    _act(ctx, _record(ctx, [(delivery, envelope, payload)]))


def handle_serving_event(
    ctx: AuditContext, delivery: Delivery, publishers: frozenset[str] | None = None
) -> None:
    """One delivery of svc.serving.events: the party's own serving service's lifecycle events
    (publish, bind, switch, rollback, unbind...), recorded in the chain like the fan-out's
    (one record per message id: the serving service may send an event twice). Anything else,
    an event claiming another party, or one that the broker says another service published
    (`publishers`, serving_publishers), is dead-lettered with the reason."""
    _own_service_message(
        ctx,
        delivery,
        publishers,
        kind="serving.event",
        sender="the party's serving service",
        accepts=(ServingEvent,),
        takes="serving.event",
        topic_name="serving",
    )


def handle_report(
    ctx: AuditContext, delivery: Delivery, publishers: frozenset[str] | None = None
) -> None:
    """One delivery of svc.audit.reports: a check this party's worker made inside a component
    (report.decrypt_check) or the column statistics of a table it read (report.column_stats),
    recorded in the chain and judged like the fan-out's messages (data.decrypted_bounds,
    data.profile_drift). Anything else, a report claiming another party, or one that the
    broker says another service published, is dead-lettered with the reason."""
    _own_service_message(
        ctx,
        delivery,
        publishers,
        kind="report",
        sender="the party's workers",
        accepts=REPORTS,
        takes="report.*",
        topic_name="reports",
    )


REPORTS = (DecryptCheck, ColumnStats)


def handle_batch(ctx: AuditContext, deliveries: Sequence[Delivery]) -> list[Delivery]:
    """A group of deliveries in one transaction (group commit: one fsync for the group). The
    ones that do not decode go back to handle_delivery, which dead-letters each with its
    reason; if anything here raises, the bus runs handle_delivery on every one of them."""
    leftovers: list[Delivery] = []
    items = []
    for delivery in deliveries:
        try:
            items.append((delivery, *_decode(delivery)))
        except MalformedMessage:
            leftovers.append(delivery)
    _act(ctx, _record(ctx, items))
    return leftovers


def _record(ctx: AuditContext, items: Sequence[tuple[Delivery, Envelope, Any]]) -> list[_Recorded]:
    """Rules, chain and one transaction for `items`, in order; a message already recorded
    (a redelivery) is skipped. The chain head moves only once the transaction committed."""
    done: list[_Recorded] = []
    # One connection for the group: the redelivery check, then the appends in one transaction
    # (store.recording, store.write_group).
    with ctx.lock:
        with store.recording(ctx.engine) as conn:
            seen = store.recorded_among(conn, ((d.topic, e.message_id) for d, e, _ in items))
            now = ctx.clock()
            head = ChainHead(ctx.head.seq, ctx.head.hash, dict(ctx.head.peers))
            stopping = set(ctx.stopped)
            # Heads to sign: one every checkpoint_every records, also inside a group.
            due: list[ChainHead] = []
            last_signed = ctx.last_checkpoint_seq
            for delivery, envelope, payload in items:
                if (delivery.topic, envelope.message_id) in seen:
                    ctx.metrics.duplicates.inc()
                    continue
                seen.add((delivery.topic, envelope.message_id))
                record = make_record(delivery.topic, delivery.body, envelope, payload, ctx.party_id)
                found = ctx.auditor.observe(Observation(record, payload), now)
                got, deferred = None, False
                if isinstance(payload, AuditCheckpoint) and record["direction"] == "in":
                    got, deferred = _peer_checkpoint(ctx, payload, envelope.source.party_id, conn)
                    found += peer_findings(ctx, got)
                    record["facts"]["checkpoint"] = {
                        "seq": got.body.get("seq"),
                        "head_hash": got.body.get("head_hash"),
                        "job_id": got.job_id,
                    }
                view = ctx.auditor.jobs.get(envelope.job_id)
                digests = view.take_unsaved() if view is not None else []
                record["findings"] = [f.to_dict() for f in found]
                head.extend(record, ctx.party_id)
                if head.seq - last_signed >= ctx.checkpoint_every:
                    due.append(ChainHead(head.seq, head.hash, dict(head.peers)))
                    last_signed = head.seq
                critical = [f for f in found if f.severity == "critical"]
                stop = None
                if critical and ctx.stop_on_critical and envelope.job_id not in stopping:
                    stop = critical[0]
                    stopping.add(envelope.job_id)
                done.append(_Recorded(record, envelope, found, stop, got, deferred, digests))
            if not done:
                return done
            ends = [i for i in done if kind_of(i.record) in JOB_ENDS]
            peer_checkpoints = [i for i in done if i.peer is not None]

            def also(conn: Connection) -> None:  # a job's end, a peer's checkpoint: rare
                for item in ends:
                    store.forget_digests(conn, str(item.record["job_id"]))
                for item in peer_checkpoints:
                    assert item.peer is not None
                    store.add_peer_checkpoint(conn, item.peer, item.envelope, item.record["seq"])

            store.write_group(
                conn,
                [(item.record, item.stop is not None) for item in done],
                [(str(i.record["job_id"]), m, d) for i in done for m, d in i.digests],
                also if ends or peer_checkpoints else None,
            )
        for signed in due:
            _checkpoint(ctx, signed)
        # The head moves last: whoever reads it sees its checkpoints written already.
        ctx.head = head
        if ctx.last_checkpoint_seq == head.seq:
            ctx.first_unsigned_at = None
        elif ctx.first_unsigned_at is None:
            ctx.first_unsigned_at = now
        for item in done:
            _count(ctx, item.record, item.envelope, item.found, now)
            if item.peer is not None:
                result = "problem" if item.peer.problems or item.peer.disagreements else "ok"
                ctx.metrics.peer_checkpoints.labels(item.peer.peer, result).inc()
            if item.deferred and item.peer is not None:
                ctx.pending.append((item.peer, int(item.record["seq"]), now))
    return done


def _act(ctx: AuditContext, done: Sequence[_Recorded]) -> None:
    """After the commit: stop requests for critical findings, alerts for the others, and the
    job's statement to its peers when it ended."""
    for item in done:
        job_id = str(item.record["job_id"])
        if job_id in ctx.settling:
            ctx.settling[job_id] = ctx.clock()
        if kind_of(item.record) in JOB_ENDS and job_id and job_id not in ctx.stated:
            ctx.stated.add(job_id)
            if ctx.statement_settle_s > 0:
                ctx.settling[job_id] = ctx.clock()
            else:
                _state_job(ctx, job_id)
        if item.stop is not None:
            ctx.stopped.add(item.envelope.job_id)
            request_stop(ctx, item.envelope, item.stop)
        alerts = [_alert(ctx, item.record, f) for f in item.found if f.severity != "info"]
        if alerts and ctx.alert is not None:
            ctx.alert(alerts)


def _state_job(ctx: AuditContext, job_id: str) -> None:
    try:
        announce_job_end(ctx, job_id)
    except Exception as exc:  # the link or the broker away: the log has it all anyway
        log.warning("audit_job_statement_failed", job_id=job_id, error=str(exc))


def state_settled(ctx: AuditContext, now: float) -> None:
    """The timer: the statements of ended jobs whose messages have been quiet for
    statement_settle_s (a message of the job still on its way would be missing from them)."""
    due = [j for j, last in list(ctx.settling.items()) if now - last >= ctx.statement_settle_s]
    for job_id in due:
        ctx.settling.pop(job_id, None)
        _state_job(ctx, job_id)


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


def _checkpoint(ctx: AuditContext, head: ChainHead | None = None) -> None:
    """Sign `head` (default: the current one; the caller holds the lock)."""
    head = head or ctx.head
    at = datetime.fromtimestamp(ctx.clock(), UTC).isoformat(timespec="microseconds")
    body = checkpoint_body(ctx.party_id, head, at, ctx.key.verify_key())
    signature = sign_checkpoint(body, ctx.key)
    with ctx.engine.begin() as conn:
        store.add_checkpoint(conn, body, signature)
    ctx.latest = (body, signature)
    ctx.last_checkpoint_seq = head.seq
    if head.seq >= ctx.head.seq:
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
            try:
                _checkpoint(ctx)
            except Exception as exc:  # the database away: the silences are still judged
                log.warning("audit_checkpoint_failed", error=str(exc))
        # No worker can be heard while the broker is away: its silence then is the broker's
        # (control.dependency_down), not a reason to stop the job.
        probes = ctx.liveness
        broker_up = probes is None or "broker" not in probes.probes or probes.is_up("broker")
        silent = ctx.auditor.silent(now, workers=broker_up)
        latest = ctx.latest
    if silent:
        record_timer_findings(ctx, silent, now)
    if latest is not None:
        send_checkpoint(ctx, latest, now)
    state_settled(ctx, now)
    compare_pending(ctx, now)


TIMER_TOPIC = "audit.timer"
"""The topic of the records the audit's timer writes: no message broke these rules, the lack
of one did (control.silent_party, control.service_silent, control.worker_silent,
algorithm.stalled)."""
TIMER_TYPE = "audit.finding"


def timer_record(
    ctx: AuditContext, job_id: str, finding: Finding, now: float, component: str = "", n: int = 0
) -> dict[str, Any]:
    """The chain record of a timer's finding: a record of no message (its id names the rule,
    the moment, the finding's place `n` among that tick's, and the job), local, its one finding
    inside, so that the chain, the exports, `fedmq audit report` and the findings index hold
    it like a message's."""
    at = datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")
    # Unique per (topic, id) as the log requires: one tick may find the same rule several
    # times in a job (control.service_silent for the scheduler and the gateway).
    message_id = f"timer:{finding.rule}:{at}:{n}:{job_id}"[:160]
    body = canonical_json({"message_id": message_id, "finding": finding.to_dict()})
    return {
        "observed_at": at,
        "topic": TIMER_TOPIC,
        "direction": "local",
        "message_id": message_id,
        "type": TIMER_TYPE,
        "job_id": job_id,
        "component": component,
        "tag": finding.rule,
        "iteration": -1,
        "seq_no": 0,
        "source_party": ctx.party_id,
        "source_role": "audit",
        "destination_party": ctx.party_id,
        "destination_role": "local",
        "size": 0,
        "payload_sha256": hashlib.sha256(b"").hexdigest(),
        "envelope_sha256": hashlib.sha256(body).hexdigest(),
        "signature": "none",
        "facts": {"timer": finding.rule},
        "findings": [finding.to_dict()],
    }


def record_timer_findings(
    ctx: AuditContext, silent: Sequence[tuple[str, Finding]], now: float
) -> list[dict[str, Any]]:
    """The timer's findings as chained records (one per finding, one transaction), then what a
    message's findings get: metrics, the log, alerts, and for a critical one the stop request
    to this party's scheduler (once per job). Returns the records."""
    with ctx.lock:
        head = ChainHead(ctx.head.seq, ctx.head.hash, dict(ctx.head.peers))
        items: list[tuple[dict[str, Any], Finding, bool]] = []
        stopping = set(ctx.stopped)
        for n, (job_id, finding) in enumerate(silent):
            component = _component_of(finding, ctx, job_id)
            record = timer_record(ctx, job_id, finding, now, component, n)
            stop = (
                finding.severity == "critical"
                and ctx.stop_on_critical
                and bool(job_id)
                and job_id not in stopping
            )
            if stop:
                stopping.add(job_id)
            head.extend(record, ctx.party_id)
            items.append((record, finding, stop))
        try:
            with ctx.engine.begin() as conn:
                store.append_many(conn, [(record, stop) for record, _, stop in items])
        except Exception as exc:
            # The database away (control.dependency_down): the findings still go to the log,
            # the metrics, the webhook and, when critical, the scheduler; only the chain
            # misses them.
            log.warning("audit_timer_record_failed", findings=len(items), error=str(exc))
        else:
            due = head.seq - ctx.last_checkpoint_seq >= ctx.checkpoint_every
            ctx.head = head
            if due:
                _checkpoint(ctx)
            elif ctx.first_unsigned_at is None:
                ctx.first_unsigned_at = now
    ctx.metrics.chain_seq.set(ctx.head.seq)
    for record, finding, stop in items:
        job_id = str(record["job_id"])
        ctx.metrics.findings.labels(finding.rule, finding.severity).inc()
        log.warning(
            "audit_finding",
            rule=finding.rule,
            severity=finding.severity,
            party=finding.party,
            job_id=job_id,
            message_id=record["message_id"],
            detail=finding.detail,
        )
        if stop:
            ctx.stopped.add(job_id)
            request_timer_stop(ctx, record, finding)
    alerts = [_alert(ctx, record, f) for record, f, _ in items if f.severity != "info"]
    if alerts and ctx.alert is not None:
        ctx.alert(alerts)
    return [record for record, _, _ in items]


def _component_of(finding: Finding, ctx: AuditContext, job_id: str) -> str:
    """The component a timer's finding is about, when one is (algorithm.stalled,
    control.worker_silent name it in their detail)."""
    view = ctx.auditor.jobs.get(job_id)
    if view is None or finding.rule not in ("algorithm.stalled", "control.worker_silent"):
        return ""
    for name in sorted(view.components, key=len, reverse=True):
        if f"component {name} " in finding.detail or f"task {name} " in finding.detail:
            return name
    return ""


def request_timer_stop(ctx: AuditContext, record: dict[str, Any], finding: Finding) -> None:
    """control.audit_stop for a timer's finding: as request_stop, the record's id standing for
    the message (there was none)."""
    me = PartyRef(party_id=ctx.party_id, role="local")
    job_id = str(record["job_id"])
    stop = ctx.publisher.envelope(
        AuditStop(
            job_id=job_id,
            rule=finding.rule,
            severity=finding.severity,
            # algorithm.stalled names every peer ("a,b") when no message crossed: the first.
            party_id=finding.party.split(",")[0],
            message_id=str(record["message_id"]),
            detail=finding.detail[:4000],
        ),
        destination=me,
        job_id=job_id,
        component="audit",
        task_id="",
        attempt=0,
        tag="audit_stop",
    )
    ctx.publisher.send(topics.SCHEDULER, stop)  # signed by the publisher's signer
    ctx.metrics.stop_requests.inc()
    log.warning(
        "audit_stop_requested",
        job_id=job_id,
        rule=finding.rule,
        party=finding.party,
        message_id=record["message_id"],
    )


def check_liveness(ctx: AuditContext, now: float) -> None:
    """The timer's probes of the broker and the database (fedaudit.liveness): an outage is
    alerted when it starts (log, metric, webhook: what needs neither) and becomes a
    control.dependency_down finding in the log once it ends."""
    if ctx.liveness is None:
        return
    down, back = ctx.liveness.check(now)
    for outage in down:
        ctx.metrics.dependency_up.labels(outage.dependency).set(0)
        log.warning(
            "audit_dependency_down",
            dependency=outage.dependency,
            for_s=round(now - outage.since, 1),
            error=outage.error,
        )
        if ctx.alert is not None:
            ctx.alert([_dependency_alert(ctx, outage)])
    for outage in back:
        _record_outage(ctx, outage)
    for name in ctx.liveness.probes:
        if ctx.liveness.is_up(name):
            ctx.metrics.dependency_up.labels(name).set(1)


def _dependency_alert(ctx: AuditContext, outage: Outage) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": "FedmqAuditDependencyDown",
            "rule": "control.dependency_down",
            "severity": ctx.auditor.policy.severity("control.dependency_down"),
            "party": ctx.party_id,
            "dependency": outage.dependency,
        },
        "annotations": {
            "summary": f"this party's {outage.dependency} does not answer: {outage.error}"
        },
        "startsAt": datetime.fromtimestamp(outage.since, UTC).isoformat(),
    }


def _record_outage(ctx: AuditContext, outage: Outage) -> None:
    """The ended outage as a finding of each job open during it (of no job when none was)."""
    until = outage.until if outage.until is not None else ctx.clock()
    began = datetime.fromtimestamp(outage.since, UTC).isoformat(timespec="seconds")
    detail = (
        f"this party's {outage.dependency} did not answer from {began} for "
        f"{until - outage.since:.0f} s ({outage.error}); the audit recorded nothing meanwhile"
        if outage.dependency == "database"
        else f"this party's {outage.dependency} did not answer from {began} for "
        f"{until - outage.since:.0f} s ({outage.error})"
    )
    finding = ctx.auditor.policy.finding("control.dependency_down", ctx.party_id, detail)
    with ctx.lock:
        jobs = sorted(j for j, v in ctx.auditor.jobs.items() if v.known and not v.ended) or [""]
        at = datetime.fromtimestamp(until, UTC).isoformat(timespec="microseconds")
        records = [
            {
                "seq": ctx.head.seq,
                "job_id": job_id,
                "message_id": f"liveness:{outage.dependency}",
                "observed_at": at,
            }
            for job_id in jobs
        ]
        with ctx.engine.begin() as conn:
            for record in records:
                store.add_finding(conn, record, finding.to_dict())
    ctx.metrics.findings.labels(finding.rule, finding.severity).inc()
    log.warning(
        "audit_finding",
        rule=finding.rule,
        severity=finding.severity,
        party=finding.party,
        job_id=",".join(jobs),
        detail=finding.detail,
    )
    alerts = [_alert(ctx, record, finding) for record in records if finding.severity != "info"]
    if alerts and ctx.alert is not None:
        ctx.alert(alerts)


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


# --- peer checkpoints (fedaudit.peers) ---------------------------------------------------------


def _peer_checkpoint(
    ctx: AuditContext, payload: AuditCheckpoint, sender: str, conn: Connection
) -> tuple[peers.PeerCheckpoint, bool]:
    """Check a peer's checkpoint as it is recorded (`conn`: the recording's transaction);
    compare its job statement with this log when the job ended here too; else (True) the
    timer compares it later (compare_pending)."""
    state = ctx.peer_states.setdefault(sender, peers.PeerState())
    got = peers.check(payload, sender, state, ctx.peer_keys.get(sender), ctx.party_id)
    if got.statement is None or got.problems:
        return got, False
    view = ctx.auditor.jobs.get(got.job_id)
    if view is not None and view.ended and got.job_id not in ctx.settling:
        got.disagreements.extend(_disagreements(ctx, got, conn))
        return got, False
    return got, True


def peer_findings(ctx: AuditContext, got: peers.PeerCheckpoint) -> list[Finding]:
    policy = ctx.auditor.policy
    return [policy.finding("control.peer_checkpoint", got.peer, p) for p in got.problems] + [
        policy.finding("control.peer_log_disagrees", got.peer, p) for p in got.disagreements
    ]


def _disagreements(
    ctx: AuditContext, got: peers.PeerCheckpoint, conn: Connection | None = None
) -> list[str]:
    """The peer's statement of a job against this log's records of it, read on `conn` (the
    recording's open transaction) or a connection of its own."""
    assert got.statement is not None
    if conn is not None:
        records = list(store.iter_records(conn, job_id=got.job_id))
    else:
        with ctx.engine.connect() as own:
            records = list(store.iter_records(own, job_id=got.job_id))
    sent, received = peers.job_traffic(records, got.peer)
    mine = peers.statement(ctx.party_id, got.peer, got.job_id, ctx.head.seq, sent, received)
    return peers.compare(mine, got.statement)


def compare_pending(ctx: AuditContext, now: float) -> None:
    """The peers' statements of jobs that have ended here since they came (or never will)."""
    if not ctx.pending:
        return
    with ctx.lock:
        keep: list[tuple[peers.PeerCheckpoint, int, float]] = []
        for got, seq, since in ctx.pending:
            view = ctx.auditor.jobs.get(got.job_id)
            if view is not None and view.ended and got.job_id not in ctx.settling:
                problems = _disagreements(ctx, got)
            elif now - since > ctx.pending_for_s:
                problems = [
                    f"messages of job {got.job_id}: party {got.peer} says it ended, and it did "
                    f"not end here within {ctx.pending_for_s:g} s"
                ]
            else:
                keep.append((got, seq, since))
                continue
            _late_findings(ctx, got, seq, problems)
        ctx.pending = keep


def _late_findings(
    ctx: AuditContext, got: peers.PeerCheckpoint, seq: int, problems: list[str]
) -> None:
    """Findings of a comparison made after the statement's record was chained: kept in the
    findings index under that record (and alerted), not in the chained record itself."""
    found = [
        ctx.auditor.policy.finding("control.peer_log_disagrees", got.peer, p) for p in problems
    ]
    record = {"seq": seq, "job_id": got.job_id, "message_id": f"statement of {got.peer}"}
    record["observed_at"] = datetime.fromtimestamp(ctx.clock(), UTC).isoformat()
    with ctx.engine.begin() as conn:
        store.settle_peer_statement(conn, seq, "; ".join(problems))
        for finding in found:
            store.add_finding(conn, record, finding.to_dict())
    for finding in found:
        ctx.metrics.findings.labels(finding.rule, finding.severity).inc()
        log.warning(
            "audit_finding",
            rule=finding.rule,
            severity=finding.severity,
            party=finding.party,
            job_id=got.job_id,
            detail=finding.detail,
        )
    alerts = [_alert(ctx, record, f) for f in found if f.severity != "info"]
    if alerts and ctx.alert is not None:
        ctx.alert(alerts)


def _send(ctx: AuditContext, peer: str, message: AuditCheckpoint, tag: str, seq: int) -> None:
    publisher = ctx.peer_publisher
    if publisher is None:
        return
    envelope = publisher.envelope(
        message,
        destination=PartyRef(party_id=peer, role="local"),
        job_id="",
        component="audit",
        task_id="",
        attempt=0,
        tag=tag,
        seq=seq,
    )
    topic = topics.out_topic(peer)
    publisher.bus.declare(topic)
    publisher.send(topic, envelope)
    ctx.metrics.peer_checkpoints_sent.labels(peer).inc()


def send_checkpoint(ctx: AuditContext, latest: tuple[dict[str, Any], str], now: float) -> None:
    """The latest checkpoint to each peer whose traffic moved since the last one it got, at most
    one per peer_interval_s."""
    body, signature = latest
    with ctx.send_lock:  # the timer and a job's end may both send
        for peer, digest in body.get("peer_digests", {}).items():
            # The first one waits an interval too, from the audit's start.
            when, sent = ctx.sent_to.get(peer, (ctx.started_at, ""))
            if sent == digest or now - when < ctx.peer_interval_s:
                continue
            message = AuditCheckpoint(
                party_id=ctx.party_id, body=canonical_json(body).decode(), signature=signature
            )
            try:
                _send(ctx, peer, message, peers.CHECKPOINT_TAG, int(body["seq"]))
            except Exception as exc:  # the broker away for a moment: the next tick sends it
                log.warning("audit_checkpoint_send_failed", peer=peer, error=str(exc))
                continue
            ctx.sent_to[peer] = (now, digest)


def announce_job_end(ctx: AuditContext, job_id: str) -> None:
    """A checkpoint of the log as it stands at the job's end, with the job's traffic with each
    peer, signed, to that peer."""
    view = ctx.auditor.jobs.get(job_id)
    if view is None or ctx.peer_publisher is None:
        return
    with ctx.lock:
        if ctx.head.seq > ctx.last_checkpoint_seq or ctx.latest is None:
            _checkpoint(ctx)
        assert ctx.latest is not None
        body, signature = ctx.latest
        with ctx.engine.connect() as conn:
            records = list(store.iter_records(conn, job_id=job_id))
    now = ctx.clock()
    for peer in sorted(set(view.roles) - {ctx.party_id}):
        sent, received = peers.job_traffic(records, peer)
        stated = peers.statement(ctx.party_id, peer, job_id, int(body["seq"]), sent, received)
        message = AuditCheckpoint(
            party_id=ctx.party_id,
            body=canonical_json(body).decode(),
            signature=signature,
            statement=canonical_json(stated).decode(),
            statement_signature=peers.sign(stated, ctx.key),
        )
        with ctx.send_lock:
            _send(ctx, peer, message, peers.JOB_END_TAG_PREFIX + job_id, int(body["seq"]))
            ctx.sent_to[peer] = (now, str(body.get("peer_digests", {}).get(peer, "")))
        log.info("audit_job_statement_sent", job_id=job_id, peer=peer, seq=body["seq"])
