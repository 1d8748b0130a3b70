"""fedbus.remote's responder on the in-memory bus: answers within the deadline, reports a
handler's exception as `failed`, drops (never sends) what is past the deadline, and runs the
handler in a span under the caller's trace."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from fedbus import RequestTimeout, connect
from fedbus.remote import RemoteCall, request_envelope, serve_remote_requests
from fedcommon.tracing import inject_traceparent, make_tracer_provider
from fedschemas import PartyRef, decode_envelope, decode_payload, encode_envelope
from fedschemas.payloads import RemoteReply
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

CALLER = PartyRef(party_id="9999", role="local")
HERE = PartyRef(party_id="10000", role="local")
SERVICE = "svc.lib.test"


def _request(body: bytes, timeout: float) -> bytes:
    now = dt.datetime.now(dt.UTC)
    env = request_envelope(
        CALLER, HERE, SERVICE, body, deadline=now + dt.timedelta(seconds=timeout), created_at=now
    )
    return encode_envelope(env)


@pytest.fixture
def bus():  # type: ignore[no-untyped-def]
    b = connect(f"memory://remote-{uuid.uuid4().hex[:6]}")
    yield b
    b.close()


def test_the_responder_answers_with_a_reply_from_its_party_to_the_caller(bus) -> None:  # type: ignore[no-untyped-def]
    serve_remote_requests(bus, "10000", SERVICE, lambda call: call.body.upper())

    answer = decode_envelope(bus.request(SERVICE, _request(b"abc", 5.0), timeout=5.0).body)

    reply = decode_payload(answer, RemoteReply)
    assert (reply.ok, reply.body) == (True, b"ABC")
    assert (answer.source.party_id, answer.destination.party_id) == ("10000", "9999")
    assert answer.deadline is not None


def test_a_failing_handler_becomes_a_failed_reply(bus) -> None:  # type: ignore[no-untyped-def]
    def broken(call: RemoteCall) -> bytes:
        raise KeyError("no model")

    serve_remote_requests(bus, "10000", SERVICE, broken)

    answer = decode_envelope(bus.request(SERVICE, _request(b"x", 5.0), timeout=5.0).body)

    reply = decode_payload(answer, RemoteReply)
    assert (reply.ok, reply.error_kind, reply.error) == (False, "failed", "KeyError: 'no model'")


def test_a_reply_ready_after_the_deadline_is_dropped_not_sent(bus) -> None:  # type: ignore[no-untyped-def]
    # Prepare: the clock jumps past the deadline while the handler runs.
    late: list[RemoteCall] = []
    shift = [dt.timedelta(0)]

    def clock() -> dt.datetime:
        return dt.datetime.now(dt.UTC) + shift[0]

    def slow(call: RemoteCall) -> bytes:
        shift[0] = dt.timedelta(seconds=10)
        return b"too late"

    serve_remote_requests(bus, "10000", SERVICE, slow, clock=clock, on_expired=late.append)

    # Execute / Assert: no reply comes, and the drop is reported.
    with pytest.raises(RequestTimeout):
        bus.request(SERVICE, _request(b"x", 5.0), timeout=0.5)
    assert [c.body for c in late] == [b"x"]


def test_the_handler_runs_in_a_span_under_the_callers_trace(bus) -> None:  # type: ignore[no-untyped-def]
    # Prepare: the caller's span, whose context the request envelope carries.
    exporter = InMemorySpanExporter()
    provider = make_tracer_provider("test", "10000", exporter)
    tracer = provider.get_tracer("test")
    serve_remote_requests(bus, "10000", SERVICE, lambda call: b"ok", tracer=tracer)
    now = dt.datetime.now(dt.UTC)
    with tracer.start_as_current_span("caller") as caller:
        request = request_envelope(
            CALLER,
            HERE,
            SERVICE,
            b"x",
            deadline=now + dt.timedelta(seconds=5),
            created_at=now,
            traceparent=inject_traceparent(),
        )

    # Execute
    bus.request(SERVICE, encode_envelope(request), timeout=5.0)
    provider.force_flush()

    # Assert
    served = [s for s in exporter.get_finished_spans() if s.name == f"serve {SERVICE}"]
    assert len(served) == 1
    assert served[0].kind is SpanKind.SERVER
    assert served[0].context.trace_id == caller.get_span_context().trace_id
    assert served[0].parent is not None
    assert served[0].parent.span_id == caller.get_span_context().span_id
    provider.shutdown()
