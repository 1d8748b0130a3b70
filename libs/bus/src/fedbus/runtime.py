"""What every service runs on top of the bus: envelopes out, envelopes in, effectively once.

`EnvelopePublisher.send(topic, envelope)`: stamps the W3C traceparent of a "publish <type>"
producer span into the envelope, lets an optional signer sign it, encodes it (fedschemas) and
publishes it with the envelope's deterministic message id, returning once the broker confirmed.

`EnvelopeConsumer`: subscribes a topic and, for each delivery,
  1. decodes the envelope and its payload; anything malformed (bad encoding, oversize, unknown
     type or version, a payload that does not match its type) or of a type this consumer has no
     handler for is logged as `message_dead_lettered` with its reason and rejected, so the bus
     dead-letters it and the consumer keeps running; so is, with a `guard`, an envelope whose
     source is another party that the broker does not vouch the party's gateway published
     (`RemoteSourceGuard`: only the gateway relays other parties' messages onto this broker,
     so anything else claiming a remote source is forged -- docs/security.md);
  2. starts a "handle <type>" consumer span as a child of the publisher's span (the trace
     context rides in the envelope) and binds job_id, task_id, message_id and trace ids to
     every log line of the handler;
  3. runs the handler through the inbox: the handler's effect and the message's done marker
     commit in one transaction, a message already done is dropped (and acked), and a handler
     exception rolls both back so the bus requeues the message (dead-lettered after the
     delivery limit).

Handlers are plain functions keyed by message type: `(envelope, payload, tx) -> None`. They
publish follow-up messages through an `EnvelopePublisher` inside the effect, with deterministic
ids, so a crash before the commit re-sends the same ids and the receivers drop the copies.

Batch mode (`batch_size` > 1, off by default): the consumer subscribes with
`Bus.subscribe_batched` and handles every envelope already waiting (up to `batch_size`, never
more than `prefetch`; with `batch_wait` > 0 it waits that long for a group to fill) through
`Inbox.process_batch`: all their effects and done markers in ONE transaction and one commit,
then one ack for the group. That is what makes the done marker affordable at thousands of
messages per second: the commit (an fsync) is paid per group, not per message. Per message
nothing changes for a handler: malformed envelopes are still dead-lettered one by one with
their reason, duplicates (also two copies inside one group) are dropped, and if any handler of
a group raises, the group's transaction rolls back and its envelopes are handled again one at a
time, so a poison message is retried and dead-lettered on its own while the rest commit. Each
envelope keeps its own "handle <type>" span and log context; in a group the span covers the
handler, and the shared commit follows the last one.

Metrics (optional: `metrics=BusMetrics(registry)`, None counts nothing): the publisher counts
confirmed envelopes and their bytes per topic; the consumer counts envelopes handled (once,
after the commit), duplicates dropped, dead letters by reason code (fedbus.metrics) and the
handler's time per topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from fedcommon.logging import bind_message_context
from fedcommon.tracing import inject_traceparent, span_from_remote, trace_ids
from fedschemas import (
    MAX_ENVELOPE_BYTES,
    Envelope,
    MalformedMessage,
    PartyRef,
    Payload,
    decode_envelope,
    decode_payload,
    encode_envelope,
    new_envelope,
)
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer

from fedbus.bus import Bus, Delivery, Message, Reject, Subscription
from fedbus.bus_factory import url_identity
from fedbus.inbox import BatchItem, Effect, Inbox, InboxTransaction
from fedbus.metrics import BusMetrics, DeadLetterReason

log = structlog.get_logger("fedbus.runtime")

STORE_WAIT_S = 30.0
"""How long a consumer waits for its unreachable inbox database before requeueing anyway."""


def _store_unreachable(exc: BaseException) -> bool:
    """A database connection failure (SQLAlchemy's OperationalError or DisconnectionError,
    by name: the memory inbox needs no SQLAlchemy), not a failure of the message itself."""
    names = {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.startswith("sqlalchemy")}
    return bool(names & {"OperationalError", "DisconnectionError"})


TRACER_NAME = "fedmq.bus"
GATEWAY_SERVICE = "gateway"
"""The service that relays other parties' messages onto a party's broker."""

EnvelopeHandler = Callable[[Envelope, Payload, InboxTransaction], None]
"""A message handler: write the effect through `tx.session`; raise to retry; raise
`fedbus.Reject(reason)` for a message that can never succeed."""

Signer = Callable[[Envelope], Envelope]
"""Returns the envelope with `signature` (and `signer_key_id`) set over canonical_bytes."""


@dataclass(frozen=True)
class RemoteSourceGuard:
    """Who may put another party's envelopes on this party's broker: its gateway only.

    `relays` are the broker identities (`Delivery.publisher`) of the party's gateway; an
    envelope whose source party is not `party_id` is accepted only when the broker vouches that
    one of them published it. Envelopes from the party itself are not checked here (every
    local service publishes those)."""

    party_id: str
    relays: frozenset[str]

    @classmethod
    def of(cls, party_id: str, relays: Collection[str]) -> RemoteSourceGuard:
        return cls(party_id, frozenset(relays))

    @classmethod
    def for_service(
        cls, party_id: str, bus_url: str, service: str, relays: Collection[str] = ()
    ) -> RemoteSourceGuard | None:
        """The guard of `service` on `bus_url`: `relays` when given, else derived from the
        service's own broker user by the naming `fedmq local` uses (docs/security.md):
        "<site>-<service>" trusts "<site>-gateway"; a user not named that way is shared by
        every service of the site, which then trusts it (only publishes that carry a
        broker-validated user-id pass). None -- no check -- when the URL names no user: the
        bus cannot tell publishers apart (memory:// without an identity, pulsar://)."""
        if relays:
            return cls.of(party_id, relays)
        user = url_identity(bus_url)
        if user is None:
            return None
        suffix = f"-{service}"
        if user.endswith(suffix) and len(user) > len(suffix):
            return cls.of(party_id, {user[: -len(suffix)] + f"-{GATEWAY_SERVICE}"})
        return cls.of(party_id, {user})

    def refusal(self, envelope: Envelope, publisher: str | None) -> str | None:
        """Why the delivery must be dead-lettered, or None when it may be handled."""
        source = envelope.source.party_id
        if source == self.party_id or (publisher is not None and publisher in self.relays):
            return None
        by = "no broker-validated publisher" if publisher is None else f"published by {publisher!r}"
        return f"remote source {source} not published by the gateway ({by})"


def _messaging_attributes(topic: str, envelope: Envelope) -> dict[str, str | int]:
    return {
        "messaging.system": "fedmq",
        "messaging.destination.name": topic,
        "messaging.message.id": envelope.message_id,
        "fedmq.message_type": envelope.type,
        "fedmq.job_id": envelope.job_id,
        "fedmq.task_id": envelope.task_id,
        "fedmq.source_party": envelope.source.party_id,
        "fedmq.destination_party": envelope.destination.party_id,
    }


class EnvelopePublisher:
    """Sends envelopes from one party (`source`; its role is the default for `envelope`)."""

    def __init__(
        self,
        bus: Bus,
        source: PartyRef,
        signer: Signer | None = None,
        *,
        tracer: Tracer | None = None,
        max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
        metrics: BusMetrics | None = None,
    ) -> None:
        self.bus = bus
        self.source = source
        self._signer = signer
        self._tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._max_envelope_bytes = max_envelope_bytes
        self._metrics = metrics

    def envelope(
        self,
        payload: Payload,
        *,
        destination: PartyRef,
        job_id: str,
        component: str,
        task_id: str,
        attempt: int,
        tag: str,
        iteration: int = -1,
        seq: int = 0,
        created_at: datetime | None = None,
    ) -> Envelope:
        """An envelope from this publisher's party with its deterministic message id."""
        return new_envelope(
            payload,
            job_id=job_id,
            component=component,
            task_id=task_id,
            attempt=attempt,
            source=self.source,
            destination=destination,
            tag=tag,
            iteration=iteration,
            seq=seq,
            created_at=created_at or datetime.now(UTC),
        )

    def _prepare(self, topic: str, envelope: Envelope) -> Message:
        # The party is fixed per process; the role is per job (a party is guest in one job and
        # host in another), so only the party is checked.
        if envelope.source.party_id != self.source.party_id:
            raise ValueError(
                f"envelope source party {envelope.source.party_id} is not this "
                f"publisher's party {self.source.party_id}"
            )
        # Called inside the publish span: the traceparent names that span, so the handler's
        # span becomes its child. The signature (if any) covers the traceparent.
        stamped = envelope.model_copy(update={"traceparent": inject_traceparent()})
        if self._signer is not None:
            stamped = self._signer(stamped)
        body = encode_envelope(stamped, max_bytes=self._max_envelope_bytes)
        return Message(topic=topic, body=body, message_id=stamped.message_id)

    def send(self, topic: str, envelope: Envelope) -> None:
        """Publish `envelope` to `topic`; returns once the broker confirmed it."""
        with self._tracer.start_as_current_span(
            f"publish {envelope.type}",
            kind=SpanKind.PRODUCER,
            attributes=_messaging_attributes(topic, envelope),
        ):
            message = self._prepare(topic, envelope)
            self.bus.publish(message)
        self._count_published(topic, [(envelope.type, message)])

    def send_many(self, topic: str, envelopes: Iterable[Envelope]) -> None:
        """Publish several envelopes with batched confirms (each still gets its own span)."""
        messages = []
        types = []
        for envelope in envelopes:
            with self._tracer.start_as_current_span(
                f"publish {envelope.type}",
                kind=SpanKind.PRODUCER,
                attributes=_messaging_attributes(topic, envelope),
            ):
                messages.append(self._prepare(topic, envelope))
                types.append(envelope.type)
        self.bus.publish_many(messages)
        self._count_published(topic, list(zip(types, messages, strict=True)))

    def _count_published(self, topic: str, sent: Sequence[tuple[str, Message]]) -> None:
        # Only after the publish returned: the broker confirmed every one of them.
        if self._metrics is None or not sent:
            return
        for message_type, _ in sent:
            self._metrics.published.labels(topic, message_type).inc()
        self._metrics.published_bytes.labels(topic).inc(sum(len(m.body) for _, m in sent))


class EnvelopeConsumer:
    """Consumes one topic, dispatching envelopes by type to handlers, deduplicated by `inbox`."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        handlers: Mapping[str, EnvelopeHandler],
        inbox: Inbox,
        *,
        max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
        tracer: Tracer | None = None,
        prefetch: int = 64,
        max_deliveries: int = 5,
        batch_size: int = 1,
        batch_wait: float = 0.0,
        metrics: BusMetrics | None = None,
        guard: RemoteSourceGuard | None = None,
    ) -> None:
        """`batch_size` > 1 turns on batch mode (module doc); keep `prefetch` at about twice
        `batch_size` so the next group is already delivered while one commits. `guard`: check
        who published envelopes from other parties (None: no check)."""
        if batch_size < 1 or batch_wait < 0:
            raise ValueError("batch_size must be >= 1 and batch_wait >= 0")
        self.bus = bus
        self.topic = topic
        self.handlers = dict(handlers)
        self.inbox = inbox
        self._max_envelope_bytes = max_envelope_bytes
        self._tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._prefetch = prefetch
        self._max_deliveries = max_deliveries
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self._metrics = metrics
        if metrics is not None:  # its series exist at 0 from start-up (fedbus.metrics)
            metrics.consuming(topic)
        self._guard = guard
        self._subscription: Subscription | None = None

    def start(self) -> None:
        """Declare the topic (idempotent) and start consuming it on the bus's threads."""
        if self._subscription is not None:
            return
        self.bus.declare(self.topic)
        if self.batch_size > 1:
            self._subscription = self.bus.subscribe_batched(
                self.topic,
                self.handle,
                self.handle_batch,
                batch_size=self.batch_size,
                batch_wait=self.batch_wait,
                prefetch=self._prefetch,
                max_deliveries=self._max_deliveries,
            )
        else:
            self._subscription = self.bus.subscribe(
                self.topic,
                self.handle,
                prefetch=self._prefetch,
                max_deliveries=self._max_deliveries,
            )
        log.info(
            "consumer_started",
            topic=self.topic,
            message_types=sorted(self.handlers),
            batch_size=self.batch_size,
        )

    def stop(self) -> None:
        """Stop consuming; the in-flight message finishes or is requeued."""
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
            log.info("consumer_stopped", topic=self.topic)

    def _dead_letter(self, delivery: Delivery, code: DeadLetterReason, reason: str) -> Reject:
        if self._metrics is not None:
            self._metrics.dead_letter(self.topic, code)
        log.warning(
            "message_dead_lettered",
            topic=self.topic,
            message_id=delivery.message_id or None,
            delivery_count=delivery.delivery_count,
            size=len(delivery.body),
            reason=reason,
            code=code,
        )
        return Reject(reason)

    def _parse(
        self, delivery: Delivery
    ) -> tuple[Envelope, EnvelopeHandler, Payload] | tuple[DeadLetterReason, str]:
        """The envelope, its handler and payload; or why the delivery must be dead-lettered
        (a reason code for the metric and the reason for the log and the dead copy)."""
        try:
            envelope = decode_envelope(delivery.body, max_bytes=self._max_envelope_bytes)
        except MalformedMessage as exc:
            code: DeadLetterReason = (
                "oversize" if len(delivery.body) > self._max_envelope_bytes else "malformed"
            )
            return code, exc.reason
        if self._guard is not None:
            refusal = self._guard.refusal(envelope, delivery.publisher)
            if refusal is not None:
                return "untrusted_publisher", refusal
        handler = self.handlers.get(envelope.type)
        if handler is None:
            return "no_handler", f"no handler for message type {envelope.type!r} on {self.topic!r}"
        try:
            payload = decode_payload(envelope)
        except MalformedMessage as exc:
            return "bad_payload", exc.reason
        return envelope, handler, payload

    @contextmanager
    def _message_scope(self, delivery: Delivery, envelope: Envelope) -> Iterator[Span]:
        """The "handle <type>" span (child of the publisher's) with the message's ids bound to
        every log line inside it."""
        with span_from_remote(
            self._tracer, f"handle {envelope.type}", envelope.traceparent, kind=SpanKind.CONSUMER
        ) as span:
            for key, value in _messaging_attributes(self.topic, envelope).items():
                span.set_attribute(key, value)
            span.set_attribute("messaging.delivery_count", delivery.delivery_count)
            trace_id, span_id = trace_ids(span)
            with bind_message_context(
                job_id=envelope.job_id or None,
                task_id=envelope.task_id or None,
                message_id=envelope.message_id,
                trace_id=trace_id,
                span_id=span_id,
            ):
                yield span

    def handle(self, delivery: Delivery) -> None:
        """The bus handler: decode, trace, dedupe, dispatch. Returns -> the bus acks."""
        parsed = self._parse(delivery)
        if isinstance(parsed[0], str):
            code, reason = parsed
            raise self._dead_letter(delivery, code, reason)
        envelope, handler, payload = parsed
        with self._message_scope(delivery, envelope) as span:
            started = time.perf_counter()
            try:
                ran = self.inbox.process(
                    envelope.message_id, lambda tx: handler(envelope, payload, tx)
                )
            except Exception as exc:
                if _store_unreachable(exc):
                    self._await_store(envelope.message_id)
                self._count_failure(delivery, exc)
                raise
            span.set_attribute("fedmq.duplicate", not ran)
            self._count_handled(envelope, ran, time.perf_counter() - started)
            if ran:
                log.debug(
                    "message_handled",
                    type=envelope.type,
                    delivery_count=delivery.delivery_count,
                    ms=round((time.perf_counter() - started) * 1000, 3),
                )
            else:
                log.info(
                    "message_duplicate_dropped",
                    type=envelope.type,
                    delivery_count=delivery.delivery_count,
                )

    def _await_store(self, message_id: str) -> None:
        """The inbox's database is away (restarting, failing over): wait until it answers, up
        to STORE_WAIT_S, before the message goes back to the broker. Every message needs the
        database, so waiting holds nothing up; redelivering at once would spend the message's
        max_deliveries within a second and dead-letter it for an outage, not for itself."""
        deadline = time.monotonic() + STORE_WAIT_S
        delay = 0.2
        while time.monotonic() < deadline:
            try:
                self.inbox.is_done(message_id)
                return
            except Exception as exc:
                if not _store_unreachable(exc):
                    return
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        log.warning("inbox_store_unreachable", topic=self.topic, waited_s=STORE_WAIT_S)

    def _count_handled(self, envelope: Envelope, ran: bool, seconds: float | None) -> None:
        if self._metrics is None:
            return
        if ran:
            self._metrics.received.labels(self.topic, envelope.type).inc()
            if seconds is not None:
                self._metrics.handler_seconds.labels(self.topic).observe(seconds)
        else:
            self._metrics.duplicates.labels(self.topic).inc()

    def _count_failure(self, delivery: Delivery, exc: Exception) -> None:
        """The bus dead-letters what a handler rejects, and what still fails at the delivery
        limit (fedbus.handling.run_handler decides the same way); anything else is requeued
        and counted when it finally settles."""
        if self._metrics is None:
            return
        if isinstance(exc, Reject):
            self._metrics.dead_letter(self.topic, "rejected")
        elif delivery.delivery_count >= self._max_deliveries:
            self._metrics.dead_letter(self.topic, "delivery_limit")

    def handle_batch(self, deliveries: Sequence[Delivery]) -> Sequence[Delivery]:
        """The bus's batch handler: every decodable envelope of the group through ONE
        `Inbox.process_batch` transaction. Returns the undecodable deliveries, which the bus
        hands to `handle` one by one (it dead-letters them, with their log line); raises when a
        handler or the commit failed, and the bus handles the whole group one by one."""
        left: list[Delivery] = []
        parsed: list[tuple[Delivery, Envelope, EnvelopeHandler, Payload]] = []
        for delivery in deliveries:
            result = self._parse(delivery)
            if isinstance(result[0], str):
                left.append(delivery)
            else:
                envelope, handler, payload = result
                parsed.append((delivery, envelope, handler, payload))
        if not parsed:
            return left
        started = time.perf_counter()
        items: list[BatchItem] = [
            (envelope.message_id, self._scoped_effect(delivery, envelope, handler, payload))
            for delivery, envelope, handler, payload in parsed
        ]
        ran = self.inbox.process_batch(items)
        ms = round((time.perf_counter() - started) * 1000, 3)
        for (delivery, envelope, _, _), handled in zip(parsed, ran, strict=True):
            # Handler times were observed inside the effects; the group committed now.
            self._count_handled(envelope, handled, None)
            if handled:
                continue
            with self._message_scope(delivery, envelope) as span:
                span.set_attribute("fedmq.duplicate", True)
                log.info(
                    "message_duplicate_dropped",
                    type=envelope.type,
                    delivery_count=delivery.delivery_count,
                )
        log.debug("message_batch_handled", topic=self.topic, size=len(parsed), ran=sum(ran), ms=ms)
        return left

    def _scoped_effect(
        self, delivery: Delivery, envelope: Envelope, handler: EnvelopeHandler, payload: Payload
    ) -> Effect:
        def effect(tx: InboxTransaction) -> None:
            with self._message_scope(delivery, envelope) as span:
                span.set_attribute("fedmq.duplicate", False)
                started = time.perf_counter()
                handler(envelope, payload, tx)
                if self._metrics is not None:
                    self._metrics.handler_seconds.labels(self.topic).observe(
                        time.perf_counter() - started
                    )
                log.debug(
                    "message_handled",
                    type=envelope.type,
                    delivery_count=delivery.delivery_count,
                )

        return effect
