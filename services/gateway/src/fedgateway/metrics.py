"""The gateway's Prometheus metrics, on a registry per gateway (several can share a process).

Besides its own fedmq_gateway_* series the registry carries the REST API's fedmq_http_* series
(fedcommon.http) and the process's CPU and memory (prometheus_client's ProcessCollector). The
relay consumes and publishes raw bus messages, not through fedbus's EnvelopeConsumer, so it has
no fedmq_bus_* series: fedmq_gateway_relayed_total{direction,peer} counts what it relays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from fedcommon.http import HttpMetrics
from fedcommon.metrics import decade_buckets
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fedgateway.transport import TcpInfo

RTT_BUCKETS = decade_buckets(0.0001, 1.0)
"""From loopback (tens of microseconds) to a slow intercontinental link."""

RELAY_BUCKETS = decade_buckets(0.001, 10.0)
"""A publish batch's confirms, or a message's relay until the peer's ACK."""

REFUSAL_REASONS = (
    "malformed",
    "id_mismatch",
    "source_mismatch",
    "wrong_destination",
    "missing_signature",
    "unknown_key",
    "bad_signature",
    "clock_window",
    "finished_job",
    "finished_attempt",
    "no_route",
)
"""fedgateway.verify's refusal codes, whose fedmq_gateway_refused_total series exist at 0 from
start-up: a series born at 1 is invisible to increase(), so the first forged message would fire
no FedmqGatewaySignatureRefusals (issue #22)."""


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.http = HttpMetrics(self.registry)
        ProcessCollector(registry=self.registry)
        self.refused = Counter(
            "fedmq_gateway_refused",
            "Messages refused on arrival (bad or missing signature, replay, ...), by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason)
        self.connections_refused = Counter(
            "fedmq_gateway_connections_refused",
            "Link connections refused (missing certificate, foreign CA, expired, wrong party...).",
            ["side", "reason"],
            registry=self.registry,
        )
        self.relayed = Counter(
            "fedmq_gateway_relayed",
            "Messages relayed: out = acked by the peer, in = published into the local broker.",
            ["direction", "peer"],
            registry=self.registry,
        )
        self.relayed_bytes = Counter(
            "fedmq_gateway_relayed_bytes",
            "Envelope bytes relayed, by direction and peer.",
            ["direction", "peer"],
            registry=self.registry,
        )
        self.link_up = Gauge(
            "fedmq_gateway_link_up",
            "1 while the outbound connection to the peer is open and answering (heartbeats).",
            ["peer"],
            registry=self.registry,
        )
        self.link_reconnects = Counter(
            "fedmq_gateway_link_reconnects",
            "Outbound connections to the peer opened again after one was lost.",
            ["peer"],
            registry=self.registry,
        )
        self.link_outage = LinkOutage(self.registry)
        self.link_transport = LinkTransport(self.registry)
        self.peer_refused = Counter(
            "fedmq_gateway_peer_refused",
            "Messages this gateway relayed that the peer's gateway refused (REFUSED over the "
            "link; each is dead-lettered to out.<peer>.dlq), by peer and the peer's reason.",
            ["peer", "reason"],
            registry=self.registry,
        )
        self.relay_dead_lettered = Counter(
            "fedmq_gateway_relay_dead_lettered",
            "Messages the outbound relay dead-lettered to out.<peer>.dlq, by peer and reason "
            "(refused_by_peer, malformed, wrong_destination, wrong_source, delivery_limit).",
            ["peer", "reason"],
            registry=self.registry,
        )
        self.publish_seconds = self._per_peer(
            "fedmq_gateway_publish_seconds",
            "Inbound: publishing one batch into the local broker until all confirms arrived.",
            RELAY_BUCKETS,
        )
        self.publish_batch = self._per_peer(
            "fedmq_gateway_publish_batch_messages",
            "Inbound: messages per publish batch (one wait for many confirms).",
            (1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.relay_seconds = self._per_peer(
            "fedmq_gateway_relay_seconds",
            "From taking a message off out.<peer> to the peer's ACK (remote publish confirmed).",
            RELAY_BUCKETS,
        )
        self.link_rtt = self._per_peer(
            "fedmq_gateway_link_rtt_seconds",
            "Round trip of a PING frame on the outbound link to the peer (link-level latency).",
            RTT_BUCKETS,
        )
        self.rpc_calls = Counter(
            "fedmq_gateway_rpc_calls",
            "Cross-site calls by side (caller: this party's service called a peer; responder: a "
            "peer called a service here), peer and outcome (ok, refused, failed, unavailable, "
            "expired).",
            ["side", "peer", "outcome"],
            registry=self.registry,
        )
        self.rpc_expired = Counter(
            "fedmq_gateway_rpc_expired",
            "Requests or replies dropped because their deadline had passed (never delivered "
            "late), by side and what was dropped (request, reply).",
            ["side", "message"],
            registry=self.registry,
        )
        self.rpc_seconds = self._per_peer(
            "fedmq_gateway_rpc_seconds",
            "Caller side: from taking a request off svc.gateway.rpc to handing its verified "
            "reply to the caller.",
            RTT_BUCKETS,
        )

    def known_peers(self, peers: Iterable[str]) -> None:
        """Create the per-peer counters at 0 for the peers of the settings (called at start)."""
        for peer in peers:
            for direction in ("in", "out"):
                self.relayed.labels(direction, peer)
                self.relayed_bytes.labels(direction, peer)

    def _per_peer(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
        """A histogram labelled by peer party (the link's and the relay's timings)."""
        return Histogram(name, documentation, ["peer"], buckets=buckets, registry=self.registry)

    def add_peer(self, peer: str) -> None:
        """A configured peer: its link is down until its first connection (a series at 0, which
        the link-down alert sees, not a missing one), and its refusal counters exist at 0."""
        self.link_state(peer, up=False)
        self.link_reconnects.labels(peer)
        for reason in REFUSAL_REASONS:
            self.peer_refused.labels(peer, reason)
        self.peer_refused.labels(peer, OTHER_REASON)
        for reason in RELAY_DEAD_LETTER_REASONS:
            self.relay_dead_lettered.labels(peer, reason)

    def link_state(self, peer: str, up: bool) -> None:
        """The outbound link to `peer` came up or went down (gauge, outage time, reconnects)."""
        if up and self.link_outage.up(peer):
            self.link_reconnects.labels(peer).inc()
        if not up:
            self.link_outage.down(peer)
        self.link_up.labels(peer).set(int(up))

    def count_peer_refusal(self, peer: str, reason: str) -> None:
        """The peer refused a relayed message; an unknown reason (a newer peer's) is "other",
        so a peer cannot grow this gateway's series."""
        known = reason if reason in REFUSAL_REASONS else OTHER_REASON
        self.peer_refused.labels(peer, known).inc()
        self.relay_dead_lettered.labels(peer, "refused_by_peer").inc()


OTHER_REASON = "other"
RELAY_DEAD_LETTER_REASONS = (
    "refused_by_peer",
    "malformed",
    "wrong_destination",
    "wrong_source",
    "delivery_limit",
)
"""Why the outbound relay dead-letters a message of out.<peer>: the peer refused it, it is not
an envelope, it is addressed to another party, it comes from another party, or it could not be
sent in relay_max_deliveries tries (the gateway stopped mid-send that often)."""


class LinkOutage(Collector):
    """fedmq_gateway_link_outage_seconds_total{peer}: seconds the outbound link to each peer has
    been down since start-up, counted up to the moment of the scrape (a counter that moved only
    when an outage ended would show nothing while one lasts). Start-up counts as down until the
    first connection."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._total: dict[str, float] = {}
        self._down_since: dict[str, float] = {}
        self._ever_up: set[str] = set()
        registry.register(self)

    def down(self, peer: str) -> None:
        with self._lock:
            self._total.setdefault(peer, 0.0)
            self._down_since.setdefault(peer, time.monotonic())

    def up(self, peer: str) -> bool:
        """Record the end of an outage; True if the peer's link had been up before."""
        with self._lock:
            since = self._down_since.pop(peer, None)
            if since is not None:
                self._total[peer] = self._total.get(peer, 0.0) + time.monotonic() - since
            self._total.setdefault(peer, 0.0)
            again = peer in self._ever_up
            self._ever_up.add(peer)
            return again

    def seconds(self, peer: str) -> float:
        with self._lock:
            since = self._down_since.get(peer)
            ongoing = time.monotonic() - since if since is not None else 0.0
            return self._total.get(peer, 0.0) + ongoing

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(
            "fedmq_gateway_link_outage_seconds",
            "Seconds the outbound link to the peer was down (not connected, or connected but "
            "silent), since the gateway started.",
            labels=["peer"],
        )
        with self._lock:
            peers = sorted(self._total)
        for peer in peers:
            family.add_metric([peer], self.seconds(peer))
        return [family]


class LinkTransport(Collector):
    """Per peer, read on each scrape from the kernel's TCP_INFO of the link's open streams
    (docs/wan.md): how many are up, the largest smoothed RTT, the bytes in flight, and the
    segments retransmitted since the gateway started: every stream's count, the replaced ones'
    included (their last count is kept when they close), so the counter never drops. Also the
    link's compression counts (PeerLink.compress_stats, docs/wan.md "Compression")."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._sources: dict[str, tuple[Callable[[], Sequence[TcpInfo]], Callable[[], int]]] = {}
        self._compression: dict[str, Callable[[], Mapping[str, int]]] = {}
        registry.register(self)

    def watch(
        self,
        peer: str,
        source: Callable[[], Sequence[TcpInfo]],
        retransmits: Callable[[], int],
        compression: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """`source` gives the TCP_INFO of each open stream to `peer`, `retransmits` the
        segments retransmitted to it so far, over all streams ever open, `compression` the
        link's compression counts ("compressed", "skipped", "raw_bytes", "sent_bytes", all
        since the gateway started); each is called on a scrape (any thread)."""
        self._sources[peer] = (source, retransmits)
        if compression is not None:
            self._compression[peer] = compression

    def collect(self) -> list[Metric]:
        streams = GaugeMetricFamily(
            "fedmq_gateway_link_streams_up",
            "Link TLS streams to the peer that are open and usable.",
            labels=["peer"],
        )
        rtt = GaugeMetricFamily(
            "fedmq_gateway_link_tcp_rtt_seconds",
            "The kernel's smoothed round trip of the link's streams (the largest).",
            labels=["peer"],
        )
        in_flight = GaugeMetricFamily(
            "fedmq_gateway_link_bytes_in_flight",
            "Bytes sent on the link's streams and not yet acknowledged by the peer's TCP.",
            labels=["peer"],
        )
        retransmits = CounterMetricFamily(
            "fedmq_gateway_link_tcp_retransmits",
            "TCP segments retransmitted on the link's streams since the gateway started "
            "(streams that were replaced included).",
            labels=["peer"],
        )
        compressed = CounterMetricFamily(
            "fedmq_gateway_link_compressed_bodies",
            "DATA bodies sent to the peer zstd-compressed.",
            labels=["peer"],
        )
        skipped = CounterMetricFamily(
            "fedmq_gateway_link_compress_skipped_bodies",
            "DATA bodies large enough to try whose samples did not compress (ciphertexts): "
            "sent as they were.",
            labels=["peer"],
        )
        raw = CounterMetricFamily(
            "fedmq_gateway_link_compress_raw_bytes",
            "Bytes of the compressed bodies before compression.",
            labels=["peer"],
        )
        sent = CounterMetricFamily(
            "fedmq_gateway_link_compress_sent_bytes",
            "Bytes of the compressed bodies as sent (after compression).",
            labels=["peer"],
        )
        for peer, (source, retransmitted) in list(self._sources.items()):
            infos = list(source())
            streams.add_metric([peer], len(infos))
            rtt.add_metric([peer], max((i.rtt_s for i in infos), default=0.0))
            in_flight.add_metric([peer], sum(i.bytes_in_flight for i in infos))
            retransmits.add_metric([peer], retransmitted())
        for peer, counts in list(self._compression.items()):
            stats = dict(counts())
            compressed.add_metric([peer], stats.get("compressed", 0))
            skipped.add_metric([peer], stats.get("skipped", 0))
            raw.add_metric([peer], stats.get("raw_bytes", 0))
            sent.add_metric([peer], stats.get("sent_bytes", 0))
        return [streams, rtt, in_flight, retransmits, compressed, skipped, raw, sent]
