"""Site-link liveness (issues #21 item 7 and #22): the link is up from start-up with no message
to carry, stays up while idle or while the peer cannot read, goes down when the path is cut
although TCP notices nothing, and comes back by itself; relayed messages the peer refuses are
counted by reason; link events carry no borrowed trace id and relay lines carry the job id.

Two gateways in one process on memory:// brokers, the real link over loopback TLS; between the
sender and the receiver's link port sits a TCP relay that can blackhole the path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fedbus import HEADER_DEAD_REASON, Bus, Message, connect
from fedbus.runtime import EnvelopePublisher
from fedcommon.tracing import make_tracer_provider
from fedcrypto.signing import SigningKey
from fedgateway import framing
from fedgateway.link import LinkStopped
from fedgateway.main import Gateway
from fedgateway.metrics import REFUSAL_REASONS, RELAY_DEAD_LETTER_REASONS, GatewayMetrics
from fedgateway.relay import OutboundRelay, Signer
from fedschemas import encode_envelope
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fedmq.local import free_port
from tests.gateway.blackhole import Blackhole
from tests.polling import wait_for_dead_letters, wait_until
from tests.relay_helpers import InProcessGateways, collect
from tests.runtime.helpers import GUEST, captured_log, events, ping

pytestmark = pytest.mark.timeout(90)

SENDER, RECEIVER = "9999", "10000"


class StallableBus:
    """A bus whose publishes wait while `stalled` (the receiver's broker hangs): the receiving
    gateway stops reading its link once its buffer is full."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._open = threading.Event()
        self._open.set()

    def stall(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def publish_many(self, messages: list[Message]) -> None:
        self._open.wait()
        self._bus.publish_many(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)


@dataclass
class Linked:
    """The sender reaches the receiver through `path`; the receiver reaches the sender directly."""

    sender: Gateway
    receiver: Gateway
    path: Blackhole
    receiver_bus: StallableBus
    parties: InProcessGateways
    provider: TracerProvider

    def receiver_buffered(self) -> int:
        """Bytes the receiver took off the link but could not publish yet."""
        server = self.receiver._server  # a test's look inside
        return sum(s.buffered_bytes for s in server.sessions()) if server else 0  # type: ignore[attr-defined]

    def sample(self, gateway: Gateway, name: str, **labels: str) -> float:
        value = gateway.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def link_up(self) -> float:
        return self.sample(self.sender, "fedmq_gateway_link_up", peer=RECEIVER)

    def outage(self) -> float:
        return self.sender.metrics.link_outage.seconds(RECEIVER)

    def rtts(self) -> float:
        return self.sample(self.sender, "fedmq_gateway_link_rtt_seconds_count", peer=RECEIVER)


@pytest.fixture
def linked(tmp_path: Path, unique_name: str) -> Iterator[Linked]:
    exporter = InMemorySpanExporter()
    provider = make_tracer_provider("gateway-test", "test", exporter)
    # one stream: what is watched is one connection's liveness (the extra streams of the
    # default link_streams would answer PINGs the stalled first one cannot)
    parties = InProcessGateways(
        tmp_path, [SENDER, RECEIVER], unique_name, ping_interval_s=0.1, link_streams=1
    )
    ports = {p: free_port() for p in (SENDER, RECEIVER)}
    path = Blackhole(ports[RECEIVER])
    receiver_bus = StallableBus(connect(parties.bus_url(RECEIVER)))
    receiver = Gateway(
        parties.settings(
            RECEIVER,
            listen_port=ports[RECEIVER],
            peers={SENDER: {"address": f"127.0.0.1:{ports[SENDER]}"}},
            inbound_buffer_bytes=16 << 10,
        ),
        bus=receiver_bus,  # type: ignore[arg-type]  # a Bus by delegation
        tracer=provider.get_tracer("receiver"),
    )
    sender = Gateway(
        parties.settings(
            SENDER,
            listen_port=ports[SENDER],
            peers={RECEIVER: {"address": f"127.0.0.1:{path.port}"}},
        ),
        tracer=provider.get_tracer("sender"),
    )
    try:
        receiver.start()
        sender.start()
        yield Linked(sender, receiver, path, receiver_bus, parties, provider)
    finally:
        receiver_bus.release()
        sender.stop()
        receiver.stop()
        path.close()
        provider.shutdown()


def stays_up(linked: Linked, seconds: float) -> None:
    """Watch the link for `seconds`: it must be up at every look (not a wait: a watch)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert linked.link_up() == 1, "the link was reported down"
        threading.Event().wait(0.05)


def test_an_idle_link_is_up_from_start_up_and_stays_up_while_the_peer_cannot_read(
    linked: Linked,
) -> None:
    # Prepare: the link is up in both directions without any message to carry
    wait_until(lambda: linked.link_up() == 1, 15, "the sender's link up without a message")
    wait_until(
        lambda: linked.sample(linked.receiver, "fedmq_gateway_link_up", peer=SENDER) == 1,
        15,
        "the receiver's link up without a message",
    )
    dead_after = linked.sender.settings.link_dead_after_s

    # Execute 1: idle for longer than a silent link may last
    stays_up(linked, dead_after + 0.5)

    # Execute 2: the receiver's broker hangs; big messages fill its link buffer, so it stops
    # reading the link and answers no PING (only its heartbeats still come)
    linked.receiver_bus.stall()
    bus = connect(linked.parties.bus_url(SENDER))
    for seq in range(12):
        env = ping(seq, "x" * 8000, job_id="stalled-job")
        bus.publish(
            Message(topic=f"out.{RECEIVER}", body=encode_envelope(env), message_id=env.message_id)
        )
    got, _ = collect(linked.parties.bus_url(RECEIVER), "svc.worker")
    wait_until(lambda: linked.receiver_buffered() > 0, 20, "the receiver's link buffer in use")
    pongs_before = linked.rtts()
    stays_up(linked, dead_after + 0.5)
    pongs_during = linked.rtts() - pongs_before
    linked.receiver_bus.release()

    # Assert: never reported down, never reconnected, no outage counted after the first
    # connection; the PINGs really went unanswered while the receiver could not read; and
    # every message arrived once its broker came back
    # (a PING it read just before its buffer filled may still be answered: at most one or two
    # of the ~30 sent during the watch)
    assert pongs_during <= 2, "the receiver kept reading: the stall did not happen"
    assert linked.sample(linked.sender, "fedmq_gateway_link_reconnects_total", peer=RECEIVER) == 0
    wait_until(lambda: len(got) >= 12, 20, "the 12 messages at the receiver")
    assert linked.link_up() == 1


def test_a_sender_whose_own_loop_stalls_does_not_call_the_healthy_peer_dead(
    linked: Linked,
) -> None:
    # Prepare
    wait_until(lambda: linked.link_up() == 1, 15, "the link up")
    dead_after = linked.sender.settings.link_dead_after_s
    stalled = threading.Event()

    def stall() -> None:  # runs on the sender's link loop: nothing else runs there meanwhile
        threading.Event().wait(dead_after + 1.5)
        stalled.set()

    # Execute: the sender's loop does not run for longer than a silent link may last (CPU
    # starvation); the receiver's heartbeats wait unread in the socket meanwhile
    linked.sender._link_loop.call(stall)  # a test's look inside
    wait_until(stalled.is_set, 30, "the stall to end")
    stays_up(linked, 1.0)

    # Assert: the stall was ours, not the peer's silence
    assert linked.sample(linked.sender, "fedmq_gateway_link_reconnects_total", peer=RECEIVER) == 0


def test_a_blackholed_link_goes_down_while_tcp_sees_nothing_and_comes_back_by_itself(
    linked: Linked,
) -> None:
    # Prepare: the link is up and has relayed a message of a job, in that message's trace
    wait_until(lambda: linked.link_up() == 1, 15, "the link up")
    got, _ = collect(linked.parties.bus_url(RECEIVER), "svc.worker")
    publisher = EnvelopePublisher(
        connect(linked.parties.bus_url(SENDER)),
        GUEST,
        tracer=linked.provider.get_tracer("publisher"),
    )
    publisher.send(f"out.{RECEIVER}", ping(1, job_id="job-before-cut"))
    wait_until(lambda: len(got) == 1, 20, "the first message at the receiver")
    outage_before = linked.outage()

    with captured_log("gateway", "INFO") as log:
        # Execute: cut the path (nothing passes; the TCP connection stays open at both ends)
        cut_at = time.monotonic()
        linked.path.cut()
        wait_until(lambda: linked.link_up() == 0, 30, "the link reported down")
        detected_s = time.monotonic() - cut_at
        still_open = linked.path.open_connections
        # ...a message sent during the outage, then the path comes back
        publisher.send(f"out.{RECEIVER}", ping(2, job_id="job-during-cut"))
        wait_until(lambda: linked.outage() > outage_before, 5, "the outage counted")
        linked.path.mend()
        wait_until(lambda: linked.link_up() == 1, 30, "the link up again")
        wait_until(lambda: len(got) == 2, 30, "the message sent during the cut")

    # Assert: detected by silence, not by TCP (the connection was still open at both ends)
    assert still_open >= 1
    (down,) = events(log, "link_down")
    assert down["level"] == "warning" and down["peer_party"] == RECEIVER
    assert str(down["reason"]).startswith("silent: no frame from party 10000")
    assert detected_s < linked.sender.settings.ack_timeout_s  # not the ACK timeout's doing
    # ...logged with no job's trace or id (the link is no job's)
    for event in (down, *events(log, "link_up")):
        assert "trace_id" not in event and "job_id" not in event
    # ...counted: one reconnect, and the outage stopped counting once the link was back
    assert linked.sample(linked.sender, "fedmq_gateway_link_reconnects_total", peer=RECEIVER) == 1
    ended = linked.outage()
    assert ended > outage_before
    assert linked.outage() == ended


def test_relayed_messages_the_peer_refuses_are_counted_by_reason_and_jobs_are_logged(
    tmp_path: Path, unique_name: str
) -> None:
    # Prepare: two gateways; the receiver knows job "done-job" is finished
    with InProcessGateways(tmp_path, [RECEIVER, SENDER], unique_name) as parties:
        sender, receiver = parties.gateways[SENDER], parties.gateways[RECEIVER]
        receiver.finish_attempt("done-job", None)
        registry = sender.metrics.registry

        def count(name: str, reason: str) -> float:
            value = registry.get_sample_value(name, {"peer": RECEIVER, "reason": reason})
            assert value is not None, f"{name}{{reason={reason}}} does not exist"
            return value

        before = {r: count("fedmq_gateway_peer_refused_total", r) for r in REFUSAL_REASONS}
        before_dead = {
            r: count("fedmq_gateway_relay_dead_lettered_total", r)
            for r in RELAY_DEAD_LETTER_REASONS
        }
        bus = connect(parties.bus_url(SENDER))
        got, _ = collect(parties.bus_url(RECEIVER), "svc.worker")
        topic = f"out.{RECEIVER}"

        with captured_log("gateway", "INFO") as log:
            # Execute: a replay of a finished job, garbage, and two messages of a live job
            for env in (ping(1, job_id="done-job"), ping(2, job_id="ok-job")):
                bus.publish(
                    Message(topic=topic, body=encode_envelope(env), message_id=env.message_id)
                )
            bus.publish(Message(topic=topic, body=b"not an envelope", message_id="garbage-1"))
            dead = wait_for_dead_letters(bus, topic, 2)
            wait_until(lambda: len(got) == 1, 20, "the live job's first message")
            third = ping(3, job_id="ok-job")
            bus.publish(
                Message(topic=topic, body=encode_envelope(third), message_id=third.message_id)
            )
            wait_until(lambda: len(got) == 2, 20, "the live job's second message")

    # Assert: every series existed at 0 before; the peer's refusal is counted with its reason
    # and as a dead letter of out.10000, next to the garbage the sender refused itself
    assert set(before.values()) == {0.0} and set(before_dead.values()) == {0.0}
    assert count("fedmq_gateway_peer_refused_total", "finished_job") == 1
    assert count("fedmq_gateway_relay_dead_lettered_total", "refused_by_peer") == 1
    assert count("fedmq_gateway_relay_dead_lettered_total", "malformed") == 1
    reasons = sorted(str(d.headers.get(HEADER_DEAD_REASON)) for d in dead)
    assert reasons[1] == f"refused by party {RECEIVER}: finished_job"
    # ...and the live job is in both gateways' logs at info with its job and task id, once per
    # direction (the second message of the job is a debug line)
    relayed = [e for e in events(log, "relayed") if e["job_id"] == "ok-job"]
    assert sorted(e["direction"] for e in relayed) == ["in", "out"]
    assert {e["task_id"] for e in relayed} == {"task-1"}
    assert all(e["level"] == "info" and e["first_of_job"] for e in relayed)


class StoppedLink:
    """A peer link that is stopping whenever asked to send (the gateway stops mid-send)."""

    def send(self, message_id: str, headers: object, body: bytes) -> None:
        raise LinkStopped("link to party 10000 stopped")


def test_a_message_dead_lettered_at_its_delivery_limit_is_counted(unique_name: str) -> None:
    # Prepare: the relay of party 9999 whose sends to 10000 always stop; 2 deliveries at most
    bus = connect(f"memory://{unique_name}")
    metrics = GatewayMetrics()
    metrics.add_peer(RECEIVER)
    relay = OutboundRelay(
        bus,
        {RECEIVER: StoppedLink()},  # type: ignore[dict-item]  # a PeerLink's send is all it uses
        party_id=SENDER,
        signer=lambda: Signer(SigningKey.generate(), "k1"),
        metrics=metrics,
        window=1,
        max_deliveries=2,
        max_envelope_bytes=1 << 20,
    )
    relay.start()
    env = ping(1)

    # Execute
    try:
        bus.publish(
            Message(topic=f"out.{RECEIVER}", body=encode_envelope(env), message_id=env.message_id)
        )
        (dead,) = wait_for_dead_letters(bus, f"out.{RECEIVER}", 1)
    finally:
        relay.stop()
        bus.close()

    # Assert: the bus dead-lettered it at the limit, and the gateway counted exactly that
    assert "delivery" in str(dead.headers.get(HEADER_DEAD_REASON))
    assert (
        metrics.registry.get_sample_value(
            "fedmq_gateway_relay_dead_lettered_total",
            {"peer": RECEIVER, "reason": "delivery_limit"},
        )
        == 1
    )


def test_a_hello_announces_the_servers_heartbeat_and_refuses_a_bogus_one() -> None:
    # Prepare
    hello = framing.Hello("10000", (b"pem",), keepalive_s=0.5)
    bogus = framing.encode_hello(framing.Hello("10000", (b"pem",), keepalive_s=float("nan")))

    # Execute
    decoded = framing.decode_hello(framing.encode_hello(hello))
    with pytest.raises(framing.ProtocolError) as raised:
        framing.decode_hello(bogus)

    # Assert: heartbeats only to clients that announce they understand them
    assert decoded.keepalive_s == 0.5
    assert framing.FEATURE_KEEPALIVE in decoded.features
    assert "keepalive_s" in str(raised.value)
