"""The Federation over a party's bus: EnvelopePublisher out, durable SQL mailbox in.

`FederationEndpoint` is one party's side (one per process): it publishes federation.data for
remote party P to `out.<P>` (the party's gateway -- or standalone mode's LocalRelay -- carries
it to P's `svc.worker`), and to its own inbound topic for a task of its own (a party that plays
two roles). It owns the mailbox and outbox (fedflow.mailbox), provides the handler that files
received federation.data, answers duplicates from the outbox, and re-publishes a resumed task's
messages. `BusFederation` is one task's view: it checks every send and receive against the
component's ProtocolGuard, records sends in the outbox before publishing, and polls the mailbox
for receives (with backoff, waking early on cancellation).

Message ids are deterministic (fedschemas.make_message_id over job, component, attempt, tag,
iteration, seq, source and destination), so a task that resumes and sends again produces the
same ids, which the receivers' inboxes drop.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import structlog
from fedbus import Bus, Unroutable
from fedbus.inbox import Inbox
from fedbus.runtime import EnvelopeHandler, EnvelopePublisher
from fedschemas import (
    Envelope,
    FederationData,
    MalformedMessage,
    PartyRef,
    Payload,
    decode_envelope,
    decode_payload,
    new_envelope,
    topics,
)
from sqlalchemy.engine import Engine

from fedflow.federation import Federation, RecvTimeout, TaskCanceled
from fedflow.mailbox import AnsweringInbox, Mailbox, Outbox
from fedflow.protocol import ProtocolGuard, ProtocolViolation
from fedflow.task import TaskKey

log = structlog.get_logger("fedflow.federation")

INBOUND_TOPIC = topics.WORKER
OUTBOUND_PREFIX = topics.OUT_PREFIX
_MAX_PAUSE_S = 0.025


class FederationEndpoint:
    """One party's federation plumbing: topics, publisher, mailbox, outbox."""

    def __init__(
        self,
        party_id: str,
        bus: Bus,
        engine: Engine,
        *,
        publisher: EnvelopePublisher | None = None,
        inbound_topic: str = INBOUND_TOPIC,
        outbound_prefix: str = OUTBOUND_PREFIX,
    ) -> None:
        self.party_id = party_id
        self.bus = bus
        self.engine = engine
        self.inbound_topic = inbound_topic
        self.outbound_prefix = outbound_prefix
        self.publisher = publisher or EnvelopePublisher(
            bus, PartyRef(party_id=party_id, role="guest")
        )
        self.mailbox = Mailbox(engine, party_id)
        self.outbox = Outbox(engine)
        self._declared: set[str] = set()
        self._lock = threading.Lock()

    # --- wiring ------------------------------------------------------------------------------

    def handlers(self) -> dict[str, EnvelopeHandler]:
        """What the party's `svc.worker` consumer runs for federation traffic."""
        return {"federation.data": self.mailbox.file}

    def answering(self, inbox: Inbox) -> AnsweringInbox:
        """`inbox`, answering duplicates of federation data from the outbox."""
        return AnsweringInbox(inbox, self.answer_duplicate)

    def topic_for(self, party_id: str) -> str:
        return self.inbound_topic if party_id == self.party_id else self.outbound_prefix + party_id

    # --- publishing --------------------------------------------------------------------------

    def _publish(self, topic: str, envelope: Envelope) -> None:
        with self._lock:
            if topic not in self._declared:
                self.bus.declare(topic)
                self._declared.add(topic)
        self.publisher.send(topic, envelope)

    def send_recorded(
        self, key: TaskKey, component_type: str, envelope: Envelope, *, order: int
    ) -> None:
        """Record in the outbox (committed), then publish (the recorded copy on a resend)."""
        topic = self.topic_for(envelope.destination.party_id)
        envelope = self.outbox.record(key, component_type, envelope, topic=topic, order=order)
        self._publish(topic, envelope)

    def resend_iteration(self, key: TaskKey, iteration: int) -> int:
        """Re-publish a resuming task's recorded messages of `iteration`; returns how many."""
        rows = self.outbox.recorded(key, iteration)
        for row in rows:
            self._publish(row.topic, decode_envelope(row.envelope))
        if rows:
            log.info(
                "resume_resent",
                job_id=key.job_id,
                component=key.component,
                iteration=iteration,
                messages=len(rows),
            )
        return len(rows)

    def answer_duplicate(self, message_id: str) -> int:
        """A duplicate of filed federation data arrived: re-send this party's answers to it."""
        filed = self.mailbox.lookup(message_id)
        if filed is None:
            return 0
        key = TaskKey(
            filed.job_id,
            filed.component,
            filed.attempt,
            filed.destination_party,
            filed.destination_role,
        )
        component_type = self.outbox.component_type_of(key)
        if component_type is None:
            return 0  # this task has sent nothing (yet): nothing to answer with
        from fedflow.components import protocol_of

        rule = protocol_of(component_type).rule(
            filed.tag, filed.source_role, filed.destination_role
        )
        if rule is None:
            return 0
        rows = self.outbox.recorded(
            key, filed.iteration, destination_party=filed.source_party, above_order=rule.order
        )
        for row in rows:
            self._publish(row.topic, decode_envelope(row.envelope))
        if rows:
            log.info(
                "duplicate_answered",
                job_id=key.job_id,
                component=key.component,
                iteration=filed.iteration,
                tag=filed.tag,
                answers=len(rows),
            )
        return len(rows)

    def task_finished(self, key: TaskKey) -> None:
        """Forget a finished task's outbox and mailbox rows."""
        self.outbox.purge(key)
        self.mailbox.purge(key)


class BusFederation(Federation):
    """One task's Federation over its party's FederationEndpoint."""

    def __init__(
        self,
        endpoint: FederationEndpoint,
        key: TaskKey,
        component_type: str,
        parties: dict[str, list[str]],
        guard: ProtocolGuard,
        *,
        cancel: threading.Event | None = None,
        default_timeout: float | None = None,
    ) -> None:
        super().__init__(key.party_id, key.role, parties, guard)
        self.endpoint = endpoint
        self.key = key
        self.component_type = component_type
        self.cancel = cancel or threading.Event()
        self.default_timeout = default_timeout
        self.me = PartyRef(party_id=key.party_id, role=key.role)  # type: ignore[arg-type]

    def send(
        self, payload: FederationData, *, to: str, tag: str, iteration: int = -1, seq: int = 0
    ) -> None:
        if self.cancel.is_set():
            raise TaskCanceled(f"task {self.key.task_id} was canceled")
        destinations = self.resolve(to)
        # Check every destination before sending to any: a refused send sends nothing.
        rules = [
            self.guard.check_send(payload, to_role=d.role, tag=tag, iteration=iteration, seq=seq)
            for d in destinations
        ]
        for destination, rule in zip(destinations, rules, strict=True):
            envelope = new_envelope(
                payload,
                job_id=self.key.job_id,
                component=self.key.component,
                task_id=self.key.task_id,
                attempt=self.key.attempt,
                source=self.me,
                destination=destination,
                tag=tag,
                iteration=iteration,
                seq=seq,
                created_at=datetime.now(UTC),
            )
            self.endpoint.send_recorded(self.key, self.component_type, envelope, order=rule.order)

    def report(self, payload: Payload, *, tag: str, iteration: int = -1) -> None:
        """Publish `payload` on this party's svc.audit.reports (party-local: no gateway relays
        it); its message id is deterministic, so a redone step's report is recorded once.

        Only the audit service declares that topic, never the worker: at a party without an
        audit the report is unroutable and dropped here, so nothing piles up in a queue no one
        reads (on RabbitMQ or in memory). Where the audit runs, its durable queue keeps the
        reports while it is down, as the fan-out does, and it catches up."""
        envelope = new_envelope(
            payload,
            job_id=self.key.job_id,
            component=self.key.component,
            task_id=self.key.task_id,
            attempt=self.key.attempt,
            source=self.me,
            destination=PartyRef(party_id=self.key.party_id, role="local"),
            tag=tag,
            iteration=iteration,
            seq=0,
            created_at=datetime.now(UTC),
        )
        try:
            self.endpoint.publisher.send(topics.AUDIT_REPORTS, envelope)
        except Unroutable:
            log.debug("audit_report_dropped", job_id=self.key.job_id, tag=tag, reason="no audit")

    def recv(
        self,
        *,
        frm: str,
        tag: str,
        iteration: int = -1,
        seq: int = 0,
        timeout: float | None = None,
    ) -> FederationData:
        source = self.resolve_one(frm)
        self.guard.expected(from_role=source.role, tag=tag)  # an undeclared tag fails now
        wait = timeout if timeout is not None else self.default_timeout
        deadline = None if wait is None else time.monotonic() + wait
        pause = 0.001
        while True:
            envelope = self.endpoint.mailbox.find(
                self.key,
                tag=tag,
                iteration=iteration,
                seq=seq,
                source_party=source.party_id,
                source_role=source.role,
            )
            if envelope is not None:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise RecvTimeout(
                    f"party {self.party_id} ({self.role}) got no {tag!r} (iteration {iteration}, "
                    f"seq {seq}) from party {source.party_id} ({source.role}) within {wait:.0f} s"
                )
            if self.cancel.wait(pause):
                raise TaskCanceled(f"task {self.key.task_id} was canceled")
            pause = min(pause * 2, _MAX_PAUSE_S)
        try:
            payload = decode_payload(envelope, FederationData)
        except MalformedMessage as exc:
            raise ProtocolViolation(f"{tag!r} from {source.party_id}: {exc.reason}") from exc
        self.guard.check_accept(
            payload, from_role=source.role, tag=tag, iteration=iteration, seq=seq
        )
        return payload
