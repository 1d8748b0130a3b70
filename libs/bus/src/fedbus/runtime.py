"""What every service runs on top of the bus: envelopes out, envelopes in, effectively once.

`EnvelopePublisher.send(topic, envelope)`: stamps the W3C traceparent of a "publish <type>"
producer span into the envelope, lets an optional signer sign it, encodes it (fedschemas) and
publishes it with the envelope's deterministic message id, returning once the broker confirmed.

`EnvelopeConsumer`: subscribes a topic and, for each delivery,
  1. decodes the envelope and its payload; anything malformed (bad encoding, oversize, unknown
     type or version, a payload that does not match its type) or of a type this consumer has no
     handler for is logged as `message_dead_lettered` with its reason and rejected, so the bus
     dead-letters it and the consumer keeps running;
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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
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
from opentelemetry.trace import SpanKind, Tracer

from fedbus.bus import Bus, Delivery, Message, Reject, Subscription
from fedbus.inbox import Inbox, InboxTransaction

log = structlog.get_logger("fedbus.runtime")

TRACER_NAME = "fedmq.bus"

EnvelopeHandler = Callable[[Envelope, Payload, InboxTransaction], None]
"""A message handler: write the effect through `tx.session`; raise to retry; raise
`fedbus.Reject(reason)` for a message that can never succeed."""

Signer = Callable[[Envelope], Envelope]
"""Returns the envelope with `signature` (and `signer_key_id`) set over canonical_bytes."""


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
    ) -> None:
        self.bus = bus
        self.source = source
        self._signer = signer
        self._tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._max_envelope_bytes = max_envelope_bytes

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
            self.bus.publish(self._prepare(topic, envelope))

    def send_many(self, topic: str, envelopes: Iterable[Envelope]) -> None:
        """Publish several envelopes with batched confirms (each still gets its own span)."""
        messages = []
        for envelope in envelopes:
            with self._tracer.start_as_current_span(
                f"publish {envelope.type}",
                kind=SpanKind.PRODUCER,
                attributes=_messaging_attributes(topic, envelope),
            ):
                messages.append(self._prepare(topic, envelope))
        self.bus.publish_many(messages)


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
    ) -> None:
        self.bus = bus
        self.topic = topic
        self.handlers = dict(handlers)
        self.inbox = inbox
        self._max_envelope_bytes = max_envelope_bytes
        self._tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._prefetch = prefetch
        self._max_deliveries = max_deliveries
        self._subscription: Subscription | None = None

    def start(self) -> None:
        """Declare the topic (idempotent) and start consuming it on the bus's threads."""
        if self._subscription is not None:
            return
        self.bus.declare(self.topic)
        self._subscription = self.bus.subscribe(
            self.topic,
            self.handle,
            prefetch=self._prefetch,
            max_deliveries=self._max_deliveries,
        )
        log.info("consumer_started", topic=self.topic, message_types=sorted(self.handlers))

    def stop(self) -> None:
        """Stop consuming; the in-flight message finishes or is requeued."""
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
            log.info("consumer_stopped", topic=self.topic)

    def _dead_letter(self, delivery: Delivery, reason: str) -> Reject:
        log.warning(
            "message_dead_lettered",
            topic=self.topic,
            message_id=delivery.message_id or None,
            delivery_count=delivery.delivery_count,
            size=len(delivery.body),
            reason=reason,
        )
        return Reject(reason)

    def _decode(self, delivery: Delivery) -> tuple[Envelope, EnvelopeHandler, Payload]:
        try:
            envelope = decode_envelope(delivery.body, max_bytes=self._max_envelope_bytes)
        except MalformedMessage as exc:
            raise self._dead_letter(delivery, exc.reason) from exc
        handler = self.handlers.get(envelope.type)
        if handler is None:
            raise self._dead_letter(
                delivery, f"no handler for message type {envelope.type!r} on {self.topic!r}"
            )
        try:
            payload = decode_payload(envelope)
        except MalformedMessage as exc:
            raise self._dead_letter(delivery, exc.reason) from exc
        return envelope, handler, payload

    def handle(self, delivery: Delivery) -> None:
        """The bus handler: decode, trace, dedupe, dispatch. Returns -> the bus acks."""
        envelope, handler, payload = self._decode(delivery)
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
                started = time.perf_counter()
                ran = self.inbox.process(
                    envelope.message_id, lambda tx: handler(envelope, payload, tx)
                )
                span.set_attribute("fedmq.duplicate", not ran)
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
