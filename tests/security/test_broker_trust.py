"""Issue 21, item 2: a party's services trust no unauthenticated message on their own broker.

Two parties as separate processes (`fedmq local`: a vhost per party, a broker user per
service), driven as an attacker with broker credentials would:
- a forged job.stop claiming the guest as its source, published straight into the host's
  svc.scheduler with the host worker's credentials (and with the guest user's, unstamped), is
  dead-lettered with its reason and the job succeeds;
- a publish claiming the gateway's user-id is refused by RabbitMQ;
- the worker's user cannot consume the scheduler's command queue;
- an orphan chunk on svc.scheduler.rpc does not hold up the REST API; garbage there is
  dead-lettered with its reason and a caller with a reply address gets the reason back.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import aiormq
import pytest
from fedbus import HEADER_DEAD_REASON, Message, RequestRejected
from fedbus.amqp_bus import AmqpBus
from fedbus.chunking import (
    HEADER_CHUNK_COUNT,
    HEADER_CHUNK_INDEX,
    HEADER_CHUNK_OF,
    HEADER_CHUNK_SHA256,
    HEADER_CHUNK_TOTAL,
)
from fedbus.runtime import EnvelopePublisher
from fedcontrol import SchedulerClient, SchedulerCommandFailed
from fedschemas import PartyRef, new_envelope, topics
from fedschemas.payloads import JobStop

from fedmq import local
from tests.bus.raw_amqp import BasicProperties, RawAmqp
from tests.local_stack import GUEST, HOST, PSI_EVAL, Stack, shared_stack_fixture, upload_breast
from tests.polling import wait_for_dead_letters, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

stack = shared_stack_fixture()


def _url(stack: Stack, service: str | None) -> str:
    """The host's vhost as `service`'s broker user, or as the shared guest user (None)."""
    if service is None:
        return stack.state.parties[HOST].bus_url
    return local.service_bus_url(stack.state, HOST, service)


def _forged_stop(job_id: str, attempt: int, seq: int) -> object:
    return new_envelope(
        JobStop(job_id=job_id, attempt=attempt, state="failed", reason="forged stop"),
        job_id=job_id,
        component="scheduler",
        task_id="",
        attempt=attempt,
        source=PartyRef(party_id=GUEST, role="guest"),
        destination=PartyRef(party_id=HOST, role="host"),
        tag="job.stop",
        iteration=-1,
        seq=seq,
        created_at=datetime.now(UTC),
    )


def test_a_forged_job_stop_on_the_hosts_broker_is_dead_lettered_and_the_job_succeeds(
    stack: Stack,
) -> None:
    # Prepare: a job running at both parties
    upload_breast(stack)
    job = stack.guest.submit(PSI_EVAL, job_id=f"sec-{uuid.uuid4().hex[:6]}")
    wait_until(lambda: _known_at_host(stack, job.job_id), 30, "the job at the host")
    attempt = stack.host.job(job.job_id).attempt

    # Execute: the attacker holds the worker's broker password (a compromised worker) and the
    # guest password; each publishes an unsigned job.stop claiming the guest as its source
    with AmqpBus(_url(stack, "worker")) as as_worker:
        EnvelopePublisher(as_worker, PartyRef(party_id=GUEST, role="guest")).send(
            topics.SCHEDULER,
            _forged_stop(job.job_id, attempt, 1),  # type: ignore[arg-type]
        )
    with AmqpBus(_url(stack, None), stamp_user_id=False) as as_guest:
        EnvelopePublisher(as_guest, PartyRef(party_id=GUEST, role="guest")).send(
            topics.SCHEDULER,
            _forged_stop(job.job_id, attempt, 2),  # type: ignore[arg-type]
        )
    done = stack.guest.wait(job.job_id, timeout=90, poll=0.5)

    # Assert: the job was not stopped; both forgeries are dead-lettered with their reason
    assert done.state == "success", (done.reason, stack.host.logs(job.job_id))
    # the host hears of the end a moment after the guest
    assert stack.host.wait(job.job_id, timeout=30, poll=0.5).state == "success"
    with AmqpBus(_url(stack, None)) as admin:
        dead = wait_for_dead_letters(admin, topics.SCHEDULER, 2, timeout=20)
    reasons = sorted(d.headers[HEADER_DEAD_REASON] for d in dead)
    worker_user = local.broker_user(stack.state.parties[HOST].vhost, "worker")
    assert reasons == [
        f"remote source {GUEST} not published by the gateway (no broker-validated publisher)",
        f"remote source {GUEST} not published by the gateway (published by {worker_user!r})",
    ]


def _known_at_host(stack: Stack, job_id: str) -> bool:
    try:
        return stack.host.job(job_id).state == "running"
    except Exception:
        return False


def test_a_service_user_cannot_publish_as_the_gateway_nor_read_the_schedulers_commands(
    stack: Stack,
) -> None:
    gateway_user = local.broker_user(stack.state.parties[HOST].vhost, "gateway")
    raw = RawAmqp(_url(stack, "worker"))
    try:
        # RabbitMQ checks the user-id property against the connection's user
        with pytest.raises(aiormq.exceptions.AMQPError, match="user_id"):
            raw.basic_publish(
                "fedmq",
                topics.SCHEDULER,
                b"{}",
                BasicProperties(message_id="claims-gateway", user_id=gateway_user),
            )
        # ... and the worker's user may not take the scheduler's commands off their queue
        with pytest.raises(aiormq.exceptions.AMQPError, match="ACCESS_REFUSED"):
            raw.basic_get(topics.SCHEDULER_RPC)
    finally:
        raw.close()


def _orphan_chunk(stack: Stack, topic: str) -> None:
    """One 1 KiB chunk of a set of 2 that never completes."""
    raw = RawAmqp(_url(stack, "gateway"))
    try:
        raw.basic_publish(
            "fedmq",
            topic,
            b"x" * 1024,
            BasicProperties(
                message_id="orphan:c0",
                headers={
                    HEADER_CHUNK_OF: "orphan",
                    HEADER_CHUNK_INDEX: "0",
                    HEADER_CHUNK_COUNT: "2",
                    HEADER_CHUNK_TOTAL: "2048",
                    HEADER_CHUNK_SHA256: "0" * 64,
                },
            ),
        )
    finally:
        raw.close()


def test_an_orphan_chunk_and_garbage_on_the_rpc_queue_do_not_hold_up_the_api(
    stack: Stack,
) -> None:
    # Prepare: an orphan chunk on each command queue (the scheduler's, the data service's)
    _orphan_chunk(stack, topics.SCHEDULER_RPC)
    _orphan_chunk(stack, topics.DATA_RPC)

    # Execute / Assert: the REST API still answers at once, for jobs and for tables
    started = time.monotonic()
    assert isinstance(stack.host.jobs(), list)
    assert isinstance(stack.host.tables(), list)
    assert time.monotonic() - started < 5

    with AmqpBus(_url(stack, "gateway")) as bus:
        # garbage with a reply address: the caller gets the reason, at once
        started = time.monotonic()
        with pytest.raises(RequestRejected, match="malformed command"):
            bus.request(topics.SCHEDULER_RPC, b"\x00not an envelope", timeout=20)
        assert time.monotonic() - started < 5
        # what a command client shows for it: a refusal (400), not "nobody answered"
        client = SchedulerClient(bus, HOST)
        with pytest.raises(SchedulerCommandFailed) as refused:
            client._request("status", b"garbage", 20)  # past the encoder: as a broken client
        assert refused.value.http_status == 400
        assert "malformed command" in refused.value.message
        # the data service (the host's workers) answers garbage the same way
        with pytest.raises(RequestRejected, match="malformed command"):
            bus.request(topics.DATA_RPC, b"\x00not an envelope", timeout=20)
        # garbage with no reply address: dead-lettered with its reason too
        bus.publish(Message(topic=topics.SCHEDULER_RPC, body=b"junk", message_id="junk"))
    with AmqpBus(_url(stack, None)) as admin:
        dead = wait_for_dead_letters(admin, topics.SCHEDULER_RPC, 3, timeout=20)
    reasons = [d.headers[HEADER_DEAD_REASON] for d in dead]
    assert sum(r.startswith("malformed command") for r in reasons) == 2
    assert "a command without reply_to: nobody to answer" in reasons
