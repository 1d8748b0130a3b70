"""The gateway's Prometheus metrics, on a registry per gateway (several can share a process).

Besides its own fedmq_gateway_* series the registry carries the REST API's fedmq_http_* series
(fedcommon.http) and the process's CPU and memory (prometheus_client's ProcessCollector). The
relay consumes and publishes raw bus messages, not through fedbus's EnvelopeConsumer, so it has
no fedmq_bus_* series: fedmq_gateway_relayed_total{direction,peer} counts what it relays.
"""

from __future__ import annotations

from fedcommon.http import HttpMetrics
from fedcommon.metrics import decade_buckets
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

RTT_BUCKETS = decade_buckets(0.0001, 1.0)
"""From loopback (tens of microseconds) to a slow intercontinental link."""

RELAY_BUCKETS = decade_buckets(0.001, 10.0)
"""A publish batch's confirms, or a message's relay until the peer's ACK."""


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
            "1 while the outbound connection to the peer is up.",
            ["peer"],
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

    def _per_peer(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
        """A histogram labelled by peer party (the link's and the relay's timings)."""
        return Histogram(name, documentation, ["peer"], buckets=buckets, registry=self.registry)
