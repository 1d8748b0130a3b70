"""The audit's Prometheus metrics (infra/prometheus/audit.yml alerts on them)."""

from __future__ import annotations

from fedcommon.metrics import CachedLabels
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # Counted per recorded message: the children cached (a labels() call checks and
        # converts its values under the metric's lock every time).
        self.messages = CachedLabels(
            Counter(
                "fedmq_audit_messages_total",
                "Messages recorded in the audit log, by direction and message type.",
                ["direction", "type"],
                registry=self.registry,
            )
        )
        self.duplicates = Counter(
            "fedmq_audit_duplicates_total",
            "Deliveries of messages already recorded (redeliveries), not recorded again.",
            registry=self.registry,
        )
        self.findings = CachedLabels(
            Counter(
                "fedmq_audit_findings_total",
                "Rule findings, by rule and severity.",
                ["rule", "severity"],
                registry=self.registry,
            )
        )
        self.stop_requests = Counter(
            "fedmq_audit_stop_requests_total",
            "Requests to this party's scheduler to stop a job (critical findings).",
            registry=self.registry,
        )
        self.lag = Histogram(
            "fedmq_audit_lag_seconds",
            "From a message's creation to its record in the audit log.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.last_lag = Gauge(
            "fedmq_audit_last_lag_seconds",
            "The lag of the last recorded message.",
            registry=self.registry,
        )
        self.chain_seq = Gauge(
            "fedmq_audit_chain_seq",
            "The seq of the last record in the hash chain.",
            registry=self.registry,
        )
        self.checkpoints = Counter(
            "fedmq_audit_checkpoints_total",
            "Signed checkpoints written.",
            registry=self.registry,
        )
        self.peer_checkpoints = Counter(
            "fedmq_audit_peer_checkpoints_total",
            "Peers' checkpoints received, by peer and result (ok, or problem: see the "
            "control.peer_* findings).",
            ["peer", "result"],
            registry=self.registry,
        )
        self.peer_checkpoints_sent = Counter(
            "fedmq_audit_peer_checkpoints_sent_total",
            "Checkpoints (and job statements) this audit sent to a peer.",
            ["peer"],
            registry=self.registry,
        )
        self.dependency_up = Gauge(
            "fedmq_audit_dependency_up",
            "Whether the party's broker / database answered the audit's last probe (1) or has "
            "not answered for the audit's down interval (0)",
            ["dependency"],
            registry=self.registry,
        )
        self.unreadable = Counter(
            "fedmq_audit_unreadable_total",
            "Deliveries the audit could not decode (dead-lettered on its fan-out).",
            registry=self.registry,
        )
