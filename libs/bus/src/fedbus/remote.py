"""Cross-site request/reply for services: call a service of another party, answer such calls.

The caller's side (`RemoteCaller.call`, or `remote_request`) builds an rpc.request envelope with
a deadline (now + timeout) and sends it with `Bus.request` on the party-local topic
`svc.gateway.rpc`. The party's gateway signs it, carries it over the site link in a REQUEST
frame and hands back the reply the peer's gateway signed (docs/gateway.md, "Request/reply").

The responder's side (`serve_remote_requests`) consumes the service's own local topic, to which
the receiving gateway sends each verified request (again with `Bus.request`), runs the handler
and answers with an rpc.reply envelope from this party.

Deadlines: whoever holds a request or reply after its deadline drops it, never delivers it late:
the responder does not run a handler for an expired request nor send a late reply, each gateway
drops both (and counts them), and the caller raises `RemoteTimeout` rather than return a late
answer. Deadlines are absolute UTC instants, so the parties' clocks must agree to well within
the timeouts used (NTP).

Traces: the caller's call is a CLIENT span whose context rides in the request envelope's
`traceparent` (signed with it); the responder's handler runs in a SERVER span under it, so one
trace shows the call from caller to service across both parties.

Nothing here signs or verifies: only the gateways hold and check the parties' keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import structlog
from fedcommon.tracing import inject_traceparent, span_from_remote
from fedschemas import (
    Envelope,
    MalformedMessage,
    PartyRef,
    Role,
    decode_envelope,
    decode_payload,
    encode_envelope,
    encode_payload,
    payload_type,
    topics,
)
from fedschemas.payloads import RemoteReply, RemoteRequest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from fedbus.bus import Bus, BusError, Delivery, Reject, RequestTimeout, Subscription

log = structlog.get_logger("fedbus.remote")

TRACER_NAME: Final = "fedmq.remote"
RPC_COMPONENT: Final = "rpc"
RPC_TAG: Final = "rpc"
MAX_ERROR_CHARS: Final = 4096

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RemoteCallError(Exception):
    """A call got no answer body; `kind` says why (refused, failed, unavailable, timeout)."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class RemoteTimeout(RemoteCallError, TimeoutError):
    """No reply came before the deadline: the peer, its gateway or its service is down or slow,
    or the reply arrived late and was dropped."""

    kind = "timeout"


class RemoteUnavailable(RemoteTimeout):
    """The call cannot be answered before its deadline, known early: the peer's gateway cannot
    be reached, nothing consumes the service topic there, or this party's gateway is not
    running."""

    kind = "unavailable"


class RemoteRefused(RemoteCallError):
    """The peer's gateway refused the request (service not exposed to this party, signature,
    replay): retrying will not help."""

    kind = "refused"


class RemoteFailed(RemoteCallError):
    """The remote service raised while handling the request."""

    kind = "failed"


_ERRORS: Final[dict[str, type[RemoteCallError]]] = {
    "refused": RemoteRefused,
    "unavailable": RemoteUnavailable,
    "failed": RemoteFailed,
}


def request_envelope(
    source: PartyRef,
    destination: PartyRef,
    service: str,
    body: bytes,
    *,
    deadline: datetime,
    created_at: datetime,
    job_id: str = "",
    traceparent: str | None = None,
) -> Envelope:
    """An rpc.request for `service` at `destination`, with a fresh id (calls are not resent)."""
    return _rpc_envelope(
        RemoteRequest(service=service, body=body),
        job_id=job_id,
        task_id="",
        attempt=0,
        source=source,
        destination=destination,
        seq=0,
        created_at=created_at,
        deadline=deadline,
        traceparent=traceparent,
    )


def reply_envelope(
    request: Envelope, reply: RemoteReply, *, source: PartyRef, created_at: datetime
) -> Envelope:
    """The rpc.reply to `request` from `source`: back to the caller, with the request's deadline."""
    return _rpc_envelope(
        reply,
        job_id=request.job_id,
        task_id=request.task_id,
        attempt=request.attempt,
        source=source,
        destination=request.source,
        seq=1,
        created_at=created_at,
        deadline=request.deadline,
    )


def _rpc_envelope(
    payload: RemoteRequest | RemoteReply,
    *,
    job_id: str,
    task_id: str,
    attempt: int,
    source: PartyRef,
    destination: PartyRef,
    seq: int,
    created_at: datetime,
    deadline: datetime | None,
    traceparent: str | None = None,
) -> Envelope:
    """The fields `new_envelope` would set, but a random message id (a call is never resent, so
    no deterministic id to derive) and the deadline: built and validated once, where
    new_envelope + `replace` validated the envelope twice and hashed an id it threw away
    (~half of the rpc envelope's cost, three times per cross-site call; issue #15)."""
    return Envelope(
        message_id=uuid.uuid4().hex,
        schema_version=type(payload).payload_version,
        type=payload_type(type(payload)),
        job_id=job_id,
        task_id=task_id,
        attempt=attempt,
        source=source,
        destination=destination,
        tag=RPC_TAG,
        iteration=-1,
        seq=seq,
        created_at=created_at,
        traceparent=traceparent,
        payload=encode_payload(payload),
        deadline=deadline,
    )


def error_reply(request: Envelope, kind: str, error: str) -> RemoteReply:
    return RemoteReply(
        request_id=request.message_id,
        ok=False,
        error=error[:MAX_ERROR_CHARS],
        error_kind=kind,  # type: ignore[arg-type]  # one of RemoteErrorKind, checked by pydantic
    )


class RemoteCaller:
    """Calls services of other parties through this party's gateway (thread-safe)."""

    def __init__(
        self,
        bus: Bus,
        party_id: str,
        *,
        role: Role = "local",
        topic: str = topics.GATEWAY_RPC,
        clock: Clock = _utc_now,
        tracer: Tracer | None = None,
    ) -> None:
        self._bus = bus
        self._tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._source = PartyRef(party_id=party_id, role=role)
        self._topic = topic
        self._clock = clock

    def call(
        self, party: str, service: str, body: bytes, timeout: float, *, job_id: str = ""
    ) -> bytes:
        """Send `body` to `service` at `party`; return the reply's body, or raise
        RemoteTimeout (no reply within `timeout` seconds), RemoteUnavailable, RemoteRefused or
        RemoteFailed."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        with self._tracer.start_as_current_span(
            f"call {service}",
            kind=SpanKind.CLIENT,
            attributes={"fedmq.destination_party": party, "fedmq.service": service},
        ):
            return self._call(party, service, body, timeout, job_id)

    def _call(self, party: str, service: str, body: bytes, timeout: float, job_id: str) -> bytes:
        now = self._clock()
        deadline = now + timedelta(seconds=timeout)
        request = request_envelope(
            self._source,
            PartyRef(party_id=party, role="local"),
            service,
            body,
            deadline=deadline,
            created_at=now,
            job_id=job_id,
            traceparent=inject_traceparent(),
        )
        try:
            delivery = self._bus.request(self._topic, encode_envelope(request), timeout=timeout)
        except RequestTimeout:
            raise RemoteTimeout(
                f"no reply from party {party} (service {service}) within {timeout:.3f} s: the "
                "peer, its gateway or the service is down or slow, or the reply came after the "
                "deadline and was dropped"
            ) from None
        except BusError as exc:
            raise RemoteUnavailable(
                f"cannot hand the call to this party's gateway ({self._topic}): {exc}"
            ) from None
        if self._clock() > deadline:
            raise RemoteTimeout(
                f"the reply from party {party} (service {service}) came after the deadline "
                f"({timeout:.3f} s) and was dropped"
            )
        return self._answer(request, delivery, party, service)

    def _answer(self, request: Envelope, delivery: Delivery, party: str, service: str) -> bytes:
        try:
            envelope = decode_envelope(delivery.body)
            reply = decode_payload(envelope, RemoteReply)
        except MalformedMessage as exc:
            raise RemoteCallError(f"malformed reply from the gateway: {exc.reason}") from None
        if reply.request_id != request.message_id:
            raise RemoteCallError("the gateway answered another request")  # a gateway bug
        if reply.ok:
            return reply.body
        error = _ERRORS.get(reply.error_kind or "failed", RemoteFailed)
        # The source says who found the problem: the peer's service or gateway, or this
        # party's gateway (link down, refused locally).
        found_by = envelope.source.party_id
        raise error(
            f"call to {service} at party {party}: {error.kind} "
            f"(found by party {found_by}): {reply.error}"
        )


def remote_request(
    bus: Bus, party_id: str, party: str, service: str, payload: bytes, timeout: float
) -> bytes:
    """One call from party `party_id` to `service` at `party` (see `RemoteCaller.call`)."""
    return RemoteCaller(bus, party_id).call(party, service, payload, timeout)


@dataclass(frozen=True)
class RemoteCall:
    """One request as the responder's handler sees it."""

    caller_party: str
    service: str
    body: bytes
    deadline: datetime
    request_id: str
    job_id: str


RemoteHandler = Callable[[RemoteCall], bytes]
"""Returns the reply body; an exception becomes a `failed` reply with its message."""


def serve_remote_requests(
    bus: Bus,
    party_id: str,
    service: str,
    handler: RemoteHandler,
    *,
    role: Role = "local",
    prefetch: int = 16,
    clock: Clock = _utc_now,
    on_expired: Callable[[RemoteCall], None] | None = None,
    tracer: Tracer | None = None,
) -> Subscription:
    """Answer the calls other parties make to `service` (a local topic this party's gateway
    exposes to them, setting `rpc_services`). Declares the topic, consumes it, and replies
    through the bus; expired requests are dropped without running `handler`, and a reply
    ready only after the deadline is dropped too (both reported to `on_expired`)."""
    source = PartyRef(party_id=party_id, role=role)
    spans = tracer or trace.get_tracer(TRACER_NAME)

    def expired(call: RemoteCall, stage: str) -> None:
        log.info(
            "rpc_expired",
            side="service",
            message=stage,
            service=service,
            caller_party=call.caller_party,
            request_id=call.request_id,
        )
        if on_expired is not None:
            on_expired(call)

    def on_delivery(delivery: Delivery) -> None:
        try:
            request = decode_envelope(delivery.body)
            payload = decode_payload(request, RemoteRequest)
        except MalformedMessage as exc:
            raise Reject(f"malformed rpc.request: {exc.reason}") from None
        if request.deadline is None or delivery.reply_to is None:
            raise Reject("an rpc.request needs a deadline and a reply address")
        call = RemoteCall(
            caller_party=request.source.party_id,
            service=payload.service,
            body=payload.body,
            deadline=request.deadline,
            request_id=request.message_id,
            job_id=request.job_id,
        )
        if clock() > request.deadline:
            expired(call, "request")
            return
        with span_from_remote(
            spans, f"serve {service}", request.traceparent, kind=SpanKind.SERVER
        ) as span:
            span.set_attribute("fedmq.source_party", call.caller_party)
            try:
                reply = RemoteReply(request_id=request.message_id, ok=True, body=handler(call))
            except Exception as exc:  # the handler's failure is the caller's answer, no retry
                reply = error_reply(request, "failed", f"{type(exc).__name__}: {exc}")
        now = clock()
        if now > request.deadline:
            expired(call, "reply")
            return
        bus.reply(
            delivery,
            encode_envelope(reply_envelope(request, reply, source=source, created_at=now)),
        )

    bus.declare(service)
    return bus.subscribe(service, on_delivery, prefetch=prefetch)
