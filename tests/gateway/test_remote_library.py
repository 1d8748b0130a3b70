"""fedbus.remote's responder on the in-memory bus: answers within the deadline, reports a
handler's exception as `failed`, and drops (never sends) what is past the deadline."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from fedbus import RequestTimeout, connect
from fedbus.remote import RemoteCall, request_envelope, serve_remote_requests
from fedschemas import PartyRef, decode_envelope, decode_payload, encode_envelope
from fedschemas.payloads import RemoteReply

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
