"""The scheduler's Prometheus metrics, on a registry per scheduler (tests run several at once)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.jobs_submitted = Counter(
            "fedmq_scheduler_jobs_submitted",
            "Jobs submitted at this party (it is their initiator).",
            registry=self.registry,
        )
        self.proposals = Counter(
            "fedmq_scheduler_proposals",
            "Job proposals this party answered, by answer (accept, refuse).",
            ["answer"],
            registry=self.registry,
        )
        self.jobs_ended = Counter(
            "fedmq_scheduler_jobs_ended",
            "Jobs that reached a final state at this party, by state.",
            ["state"],
            registry=self.registry,
        )
        self.tasks_dispatched = Counter(
            "fedmq_scheduler_tasks_dispatched",
            "task.run messages sent to this party's workers.",
            registry=self.registry,
        )
        self.party_timeouts = Counter(
            "fedmq_scheduler_party_timeouts",
            "Jobs failed because a party stayed silent past party_timeout_s, by phase.",
            ["phase"],
            registry=self.registry,
        )
        self.heartbeats_sent = Counter(
            "fedmq_scheduler_heartbeats_sent",
            "job.status heartbeats sent to initiators.",
            registry=self.registry,
        )
        self.rpc_requests = Counter(
            "fedmq_scheduler_rpc_requests",
            "Local commands served on the RPC topic, by op and outcome.",
            ["op", "outcome"],
            registry=self.registry,
        )
