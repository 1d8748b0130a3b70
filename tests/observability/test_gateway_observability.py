"""Two gateways in one process (memory:// brokers, the real link over loopback TLS): the link's
PING/PONG round trip is measured, each relayed message gets a "relay out" / "relay in" span under
the publisher's span, and /metrics exports the process, HTTP and link series."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
from fedbus import Delivery, connect
from fedbus.runtime import EnvelopePublisher
from fedcommon.tracing import make_tracer_provider
from fedgateway import framing
from fedgateway.main import Gateway
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from tests.polling import wait_until
from tests.relay_helpers import InProcessGateways, collect
from tests.runtime.helpers import GUEST, ping

pytestmark = pytest.mark.timeout(60)

SENDER, RECEIVER = "9999", "10000"


@dataclass
class Pair:
    gateways: dict[str, Gateway]
    exporter: InMemorySpanExporter
    provider: TracerProvider
    relay: InProcessGateways

    def bus_url(self, party: str) -> str:
        return self.relay.bus_url(party)


@pytest.fixture
def pair(tmp_path: Path, unique_name: str) -> Iterator[Pair]:
    exporter = InMemorySpanExporter()
    provider = make_tracer_provider("gateway-test", "test", exporter)
    relay = InProcessGateways(
        tmp_path,
        [RECEIVER, SENDER],
        unique_name,
        gateway_options={"tracer": provider.get_tracer("gateway-test")},
        ping_interval_s=0.05,
    )
    try:
        with relay:
            yield Pair(relay.gateways, exporter, provider, relay)
    finally:
        provider.shutdown()


def scrape(gateway: Gateway) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of the gateway's /metrics, by sample name and sorted labels."""
    url = f"http://127.0.0.1:{gateway.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def relay_one(pair: Pair) -> tuple[int, int, Delivery]:
    """Publish one ping at the sender through its out.<receiver> topic, inside a span of our
    own; return that span's (trace id, span id) and the delivery at the receiver."""
    got, arrived = collect(pair.bus_url(RECEIVER), "svc.worker")
    sender_bus = connect(pair.bus_url(SENDER))
    tracer = pair.provider.get_tracer("test-publisher")
    publisher = EnvelopePublisher(sender_bus, GUEST, tracer=tracer)
    envelope = ping(seq=1)  # from the guest, SENDER, to the host, RECEIVER
    publisher.send(f"out.{RECEIVER}", envelope)
    assert arrived.wait(20), "the ping never reached the receiver's svc.worker"
    (publish,) = [s for s in pair.exporter.get_finished_spans() if s.name == "publish demo.ping"]
    return publish.context.trace_id, publish.context.span_id, got[0]


def test_each_relayed_message_has_relay_spans_under_the_publishers_span(pair: Pair) -> None:
    # Execute
    trace_id, publish_span_id, _ = relay_one(pair)
    # Spans end after the delivery may already be there: the sender's at the peer's ACK.
    wait_until(
        lambda: (
            {"relay out demo.ping", "relay in demo.ping"}
            <= {s.name for s in pair.exporter.get_finished_spans()}
        ),
        what="both gateways' spans",
    )

    # Assert: one span per gateway, each a child of the publish span, in the same trace
    spans = {s.name: s for s in pair.exporter.get_finished_spans()}
    out, inbound = spans["relay out demo.ping"], spans["relay in demo.ping"]
    assert out.kind is SpanKind.PRODUCER and inbound.kind is SpanKind.CONSUMER
    for span in (out, inbound):
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == publish_span_id
    assert out.attributes is not None and inbound.attributes is not None
    assert out.attributes["fedmq.peer"] == RECEIVER
    assert inbound.attributes["fedmq.peer"] == SENDER
    assert inbound.attributes["messaging.destination.name"] == "svc.worker"
    assert out.resource.attributes["service.name"] == "gateway-test"


def test_the_link_rtt_is_measured_and_exported_with_process_and_http_metrics(pair: Pair) -> None:
    # Prepare: the outbound link connects on its first message
    relay_one(pair)
    sender = pair.gateways[SENDER]

    # Execute: pings go out every 50 ms; the first scrape is itself an HTTP request
    wait_until(
        lambda: (
            scrape(sender)
            .get("fedmq_gateway_link_rtt_seconds_count", {})
            .get((("peer", RECEIVER),), 0.0)
            >= 3
        ),
        what="three round trips",
    )
    samples = scrape(sender)

    # Assert
    rtt_sum = samples["fedmq_gateway_link_rtt_seconds_sum"][(("peer", RECEIVER),)]
    rtt_count = samples["fedmq_gateway_link_rtt_seconds_count"][(("peer", RECEIVER),)]
    assert 0 < rtt_sum / rtt_count < 1.0  # loopback: well under a second per round trip
    assert samples["fedmq_gateway_relayed_total"][(("direction", "out"), ("peer", RECEIVER))] == 1
    assert samples["process_resident_memory_bytes"][()] > 0
    assert "process_cpu_seconds_total" in samples
    scrapes = samples["fedmq_http_requests_total"][
        (("method", "GET"), ("route", "/metrics"), ("status", "200"))
    ]
    assert scrapes >= 1
    # Each gateway keeps its own outbound link open from start-up (issue #22: an idle link is
    # up), so the receiver measures its round trips to the sender too, without a message.
    wait_until(
        lambda: (
            scrape(pair.gateways[RECEIVER])
            .get("fedmq_gateway_link_rtt_seconds_count", {})
            .get((("peer", SENDER),), 0.0)
            >= 1
        ),
        what="a round trip measured by the receiver",
    )


def test_a_hello_from_an_older_gateway_announces_no_ping_support() -> None:
    # Prepare: a HELLO as gateways before PING/PONG wrote it (no "features" key)
    old = msgpack.packb({"v": 1, "party": "9999", "certs": [b"pem"]}, use_bin_type=True)

    # Execute
    hello = framing.decode_hello(old)
    new = framing.decode_hello(framing.encode_hello(framing.Hello("10000", (b"pem",))))

    # Assert: the client sends PINGs only to servers that list the feature
    assert hello.features == ()
    assert framing.FEATURE_PING in new.features


def test_a_configured_peer_is_reported_down_until_its_link_first_comes_up(pair: Pair) -> None:
    # Prepare: a second gateway of party 9999 whose peer 10000 address has nobody listening
    lonely = Gateway(
        pair.relay.settings(
            SENDER,
            bus_url=f"{pair.bus_url(SENDER)}-lonely",
            peers={RECEIVER: {"address": "127.0.0.1:9"}},
        )
    )
    link_up = (("peer", RECEIVER),)

    # Execute / Assert: the unreachable peer's series exists at 0 (a missing series would
    # never trip the link-down alert); the sender's link is up with no message sent, since
    # each gateway opens its outbound links at start-up and keeps them open
    lonely.start()
    try:
        assert scrape(lonely)["fedmq_gateway_link_up"][link_up] == 0
    finally:
        lonely.stop()
    wait_until(
        lambda: scrape(pair.gateways[SENDER])["fedmq_gateway_link_up"][link_up] == 1,
        what="the link to be reported up",
    )
