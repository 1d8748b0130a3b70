"""Prometheus metrics of the bus runtime (EnvelopePublisher / EnvelopeConsumer).

One `BusMetrics` per service registry, shared by every publisher and consumer of that service.
The registry is always passed in: several services share one process in tests, and the global
default registry would make their counters collide.

Labels stay bounded: `topic` is a topic name (svc.*, out.<peer>, the crypto topics), `type` a
message type from fedschemas' registry, and `reason` one of the `DeadLetterReason` codes, never
the free-text reason that goes to the log line and the dead copy's header.

`consuming(topic)` creates a consumed topic's dead-letter (every reason) and duplicate series
at 0: a series born at 1 on its first dead letter is invisible to increase() and rate(), so the
first dead letter after a restart would fire no alert and show as 0 (issue #22).
"""

from __future__ import annotations

from typing import Final, Literal

from fedcommon.metrics import decade_buckets
from prometheus_client import CollectorRegistry, Counter, Histogram

DeadLetterReason = Literal[
    "oversize",
    "malformed",
    "no_handler",
    "bad_payload",
    "untrusted_publisher",
    "rejected",
    "delivery_limit",
]
"""Why the runtime dead-lettered an envelope:
- oversize: the delivery is larger than the consumer's max_envelope_bytes;
- malformed: the bytes do not decode to a valid envelope;
- no_handler: a valid envelope of a type this consumer does not handle;
- bad_payload: the payload does not decode to its type's model (or the type/version is unknown);
- untrusted_publisher: its source is another party but the broker does not vouch that the
  party's gateway published it (fedbus.runtime.RemoteSourceGuard);
- rejected: the handler raised `fedbus.Reject` (a message that can never succeed);
- delivery_limit: the handler kept failing until the delivery limit."""

DEAD_LETTER_REASONS: Final[tuple[DeadLetterReason, ...]] = (
    "oversize",
    "malformed",
    "no_handler",
    "bad_payload",
    "untrusted_publisher",
    "rejected",
    "delivery_limit",
)

HANDLER_BUCKETS: Final = (0.0005, *decade_buckets(0.001, 10.0), 30.0)
"""Handlers range from a sub-millisecond insert to seconds of task bookkeeping."""


class BusMetrics:
    """The fedmq_bus_* series of one service (docs/metrics.md)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.received = Counter(
            "fedmq_bus_messages_received",
            "Envelopes handed to a handler that committed (duplicates and dead letters excluded).",
            ["topic", "type"],
            registry=registry,
        )
        self.published = Counter(
            "fedmq_bus_messages_published",
            "Envelopes published and confirmed by the broker.",
            ["topic", "type"],
            registry=registry,
        )
        self.published_bytes = Counter(
            "fedmq_bus_published_bytes",
            "Encoded envelope bytes published and confirmed by the broker.",
            ["topic"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "fedmq_bus_messages_dead_lettered",
            "Deliveries the runtime dead-lettered, by reason code.",
            ["topic", "reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "fedmq_bus_duplicates_dropped",
            "Deliveries whose message id the inbox had already handled (dropped and acked).",
            ["topic"],
            registry=registry,
        )
        self.handler_seconds = Histogram(
            "fedmq_bus_handler_seconds",
            "Time from dispatch to commit of one envelope (batch mode: the handler alone; the "
            "group's shared commit is not split among its envelopes).",
            ["topic"],
            buckets=HANDLER_BUCKETS,
            registry=registry,
        )

    def consuming(self, topic: str) -> None:
        """Create `topic`'s per-consumer series at 0 (EnvelopeConsumer calls it when built)."""
        for reason in DEAD_LETTER_REASONS:
            self.dead_lettered.labels(topic, reason)
        self.duplicates.labels(topic)
        self.handler_seconds.labels(topic)

    def dead_letter(self, topic: str, reason: DeadLetterReason) -> None:
        self.dead_lettered.labels(topic, reason).inc()
