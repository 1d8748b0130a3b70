"""Cross-site request/reply through both gateways, running as processes on the real RabbitMQ:
calls reach the remote service and each reply returns to its own caller under concurrency;
what is past its deadline is dropped and counted, never delivered; forged and unsigned requests
are refused; a peer that is down gives the caller a clear timeout error. Also: the gateway
learns that a job attempt ended from the scheduler's gateway.job_ended message."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fedbus import Delivery
from fedbus.remote import (
    RemoteCall,
    RemoteCaller,
    RemoteRefused,
    RemoteTimeout,
    RemoteUnavailable,
    request_envelope,
    serve_remote_requests,
)
from fedcrypto.signing import SigningKey
from fedgateway import pki
from fedgateway.framing import Hello, ReplyOutcome
from fedgateway.link import LinkLoop, client_context, open_client_connection
from fedschemas import PartyRef, canonical_bytes, encode_envelope, topics

from fedmq import local
from tests.gateway.conftest import RECEIVER, SENDER, Deployment
from tests.polling import poll, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ECHO = "svc.rpctest.echo"
SLOW = "svc.rpctest.slow"
HIDDEN = "svc.rpctest.hidden"


@pytest.fixture(scope="module", autouse=True)
def exposed_services(federation: local.LocalState) -> None:
    """Party 10000's gateway lets party 9999 call ECHO and SLOW (not HIDDEN)."""
    local.update_gateway_settings(federation, RECEIVER, rpc_services={ECHO: [SENDER], SLOW: ["*"]})


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Deployment:
    """One gateway pair for the module (the peer-down test starts the gateway it stopped
    again): starting a pair per test took most of this module's time. Counts are `counted`
    from each test's start."""
    return shared_deployment


@pytest.fixture
def echo(deployment: Deployment) -> Iterator[list[RemoteCall]]:
    """The service at party 10000: answers each call with its body reversed."""
    calls: list[RemoteCall] = []

    def handle(call: RemoteCall) -> bytes:
        calls.append(call)
        return call.body[::-1]

    bus = deployment.bus(RECEIVER)
    subs = [serve_remote_requests(bus, RECEIVER, ECHO, handle) for _ in range(2)]
    try:
        yield calls
    finally:
        for sub in subs:
            sub.cancel()
        bus.delete(ECHO)


def caller(deployment: Deployment) -> RemoteCaller:
    return RemoteCaller(deployment.bus(SENDER), SENDER)


def test_calls_cross_both_gateways_and_each_reply_returns_to_its_own_caller(
    deployment: Deployment, echo: list[RemoteCall]
) -> None:
    # Prepare: 8 threads x 25 calls at once, each with its own body.
    client = caller(deployment)
    bodies = [f"call-{i}-{uuid.uuid4().hex}".encode() for i in range(200)]

    # Execute
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda b: client.call(RECEIVER, ECHO, b, 10.0), bodies))

    # Assert: every caller got the answer to its own request...
    assert replies == [b[::-1] for b in bodies]
    # ...the service saw each call once, from party 9999, with the deadline it was sent with...
    assert sorted(c.body for c in echo) == sorted(bodies)
    assert {c.caller_party for c in echo} == {SENDER}
    # ...and both gateways counted them (a gateway counts a call after it passed the reply on,
    # so the last few counts may land just after their callers returned).
    wait_for(
        lambda: deployment.counted(SENDER, "fedmq_gateway_rpc_calls_total", side="caller") == 200,
        timeout=10,
        what="the caller-side gateway to count 200 calls",
    )
    wait_for(
        lambda: (
            deployment.counted(
                RECEIVER, "fedmq_gateway_rpc_calls_total", side="responder", outcome="ok"
            )
            == 200
        ),
        timeout=10,
        what="the responder-side gateway to count 200 calls",
    )
    assert deployment.counted(SENDER, "fedmq_gateway_rpc_calls_total", side="caller") == 200


def test_a_reply_after_its_deadline_is_dropped_and_counted_never_delivered(
    deployment: Deployment,
) -> None:
    # Prepare: a service that answers late (it ignores the deadline, unlike the library's).
    bus = deployment.bus(RECEIVER)
    bus.declare(SLOW)
    answered = threading.Event()

    def slow(delivery: Delivery) -> None:
        time.sleep(1.0)
        bus.reply(delivery, delivery.body)  # after the gateway gave up: its content is moot
        answered.set()

    sub = bus.subscribe(SLOW, slow)
    client = caller(deployment)

    # Execute
    started = time.monotonic()
    with pytest.raises(RemoteTimeout) as raised:
        client.call(RECEIVER, SLOW, b"late", 0.4)
    waited = time.monotonic() - started
    assert answered.wait(5)
    sub.cancel()
    bus.delete(SLOW)

    # Assert: the caller got a timeout at its deadline, not the late answer...
    assert waited < 2.0
    assert "within 0.400 s" in str(raised.value)
    # ...party 10000's gateway dropped the reply at the deadline and counted it...
    assert poll(
        lambda: (
            deployment.counted(
                RECEIVER, "fedmq_gateway_rpc_expired_total", side="responder", message="reply"
            )
            == 1
        ),
        10,
    )
    # ...and party 9999's gateway dropped its wait for the REPLY and counted that too.
    assert poll(
        lambda: deployment.counted(SENDER, "fedmq_gateway_rpc_expired_total", side="caller") == 1,
        10,
    )
    logged = [e for e in deployment.log(RECEIVER) if e.get("event") == "rpc_expired"]
    assert [e["message"] for e in logged] == ["reply"]


def test_a_request_already_past_its_deadline_is_dropped_and_counted(
    deployment: Deployment, echo: list[RemoteCall]
) -> None:
    # Prepare: a request whose deadline passed before the gateway took it.
    now = dt.datetime.now(dt.UTC)
    request = request_envelope(
        PartyRef(party_id=SENDER, role="local"),
        PartyRef(party_id=RECEIVER, role="local"),
        ECHO,
        b"too late",
        deadline=now - dt.timedelta(milliseconds=1),
        created_at=now,
    )

    # Execute
    with pytest.raises(Exception, match="no reply"):
        deployment.bus(SENDER).request(topics.GATEWAY_RPC, encode_envelope(request), timeout=1.0)

    # Assert: dropped at the calling party's gateway, counted there, never reached the service.
    assert (
        deployment.counted(
            SENDER, "fedmq_gateway_rpc_expired_total", side="caller", message="request"
        )
        == 1
    )
    assert echo == []


def _link_to_receiver(deployment: Deployment, loop: LinkLoop):  # type: ignore[no-untyped-def]
    """A second link connection as party 9999 (its real identity): REQUEST frames by hand."""
    identity = pki.PartyIdentity.load(deployment.party_dir(SENDER) / "identity")
    return loop.run(
        open_client_connection(
            f"127.0.0.1:{deployment.state.parties[RECEIVER].link_port}",
            context=client_context(identity),
            hello=Hello(party_id=SENDER, certificates=(identity.certificate.pem,)),
            expected_party=RECEIVER,
            ca_cert=identity.ca_cert,
            max_frame_bytes=1 << 20,
        ),
        timeout=20,
    )


def test_forged_unsigned_and_unexposed_requests_are_refused(
    deployment: Deployment, echo: list[RemoteCall]
) -> None:
    # Prepare
    identity = pki.PartyIdentity.load(deployment.party_dir(SENDER) / "identity")
    now = dt.datetime.now(dt.UTC)

    def request(service: str) -> object:
        return request_envelope(
            PartyRef(party_id=SENDER, role="local"),
            PartyRef(party_id=RECEIVER, role="local"),
            service,
            b"x",
            deadline=now + dt.timedelta(seconds=10),
            created_at=now,
        )

    unsigned = request(ECHO)
    forged = request(ECHO).model_copy(update={"signer_key_id": identity.key_id})  # type: ignore[attr-defined]
    forged = forged.model_copy(
        update={"signature": SigningKey.generate().sign(canonical_bytes(forged))}
    )
    loop = LinkLoop("test-link")
    loop.start()
    conn = _link_to_receiver(deployment, loop)

    # Execute
    outcomes = [
        conn.submit_request(encode_envelope(env), 10.0).result(15)  # type: ignore[arg-type]
        for env in (unsigned, forged)
    ]
    conn.close()
    loop.stop()
    with pytest.raises(RemoteRefused) as hidden:
        caller(deployment).call(RECEIVER, HIDDEN, b"x", 5.0)

    # Assert: refused with the reason, never delivered to the service, counted and logged.
    assert outcomes == [
        (ReplyOutcome.REFUSED, b"missing_signature"),
        (ReplyOutcome.REFUSED, b"bad_signature"),
    ]
    assert "not_exposed" in str(hidden.value)
    assert echo == []
    for reason in ("missing_signature", "bad_signature", "not_exposed"):
        assert deployment.counted(RECEIVER, "fedmq_gateway_refused_total", reason=reason) == 1
    logged = {e["reason"] for e in deployment.log(RECEIVER) if e.get("event") == "message_refused"}
    assert logged == {"missing_signature", "bad_signature", "not_exposed"}


def test_a_peer_that_is_down_gives_the_caller_a_clear_timeout_error(
    deployment: Deployment, echo: list[RemoteCall]
) -> None:
    # Prepare: the call works, then party 10000's gateway stops.
    client = caller(deployment)
    assert client.call(RECEIVER, ECHO, b"up", 10.0) == b"pu"
    deployment.stop(RECEIVER)

    # Execute
    started = time.monotonic()
    with pytest.raises(RemoteTimeout) as raised:
        client.call(RECEIVER, ECHO, b"down", 2.0)
    waited = time.monotonic() - started

    # Assert: a timeout error (RemoteUnavailable is one) naming the party, within the timeout.
    assert isinstance(raised.value, RemoteUnavailable)
    assert "party 10000 unreachable" in str(raised.value)
    assert waited <= 2.5
    assert deployment.counted(SENDER, "fedmq_gateway_rpc_calls_total", outcome="unavailable") == 1
    deployment.start(RECEIVER)  # the fixture stops both


def test_the_gateway_learns_that_a_job_attempt_ended_from_the_schedulers_message(
    deployment: Deployment,
    sink,
    envelope,
    to_message,  # type: ignore[no-untyped-def]
) -> None:
    # Prepare: party 10000's scheduler says attempt 0 of the job ended.
    job = f"job-{uuid.uuid4().hex[:6]}"
    deployment.end_attempt(RECEIVER, job, 0)
    replayed = envelope(1, job_id=job, attempt=0)
    rerun = envelope(2, job_id=job, attempt=1)

    # Execute
    bus = deployment.bus(SENDER)
    for env in (replayed, rerun):
        bus.publish(to_message(env))
    sink.wait_for(1, timeout=20)

    # Assert: the ended attempt's message is refused as a replay; the next attempt's passes.
    assert poll(
        lambda: (
            deployment.counted(RECEIVER, "fedmq_gateway_refused_total", reason="finished_attempt")
            == 1
        ),
        10,
    )
    assert [m for m, _ in sink.rows()] == [rerun.message_id]
