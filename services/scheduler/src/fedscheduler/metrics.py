"""The scheduler's Prometheus metrics, on a registry per scheduler (tests run several at once)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

JOB_SECONDS_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
"""Jobs run from seconds (an empty pipeline) to hours (training on millions of rows)."""


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = False) -> None:
        self.registry = registry or CollectorRegistry()
        if process:
            # CPU and memory of this process (one per service; tests share a process, so off).
            ProcessCollector(registry=self.registry)
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
            "Jobs failed because a party stayed silent past party_timeout_s, by phase "
            "(proposal, running: at the initiator; initiator: at a participant).",
            ["phase"],
            registry=self.registry,
        )
        self.heartbeats_sent = Counter(
            "fedmq_scheduler_heartbeats_sent",
            "job.status heartbeats sent (participants to initiators and back).",
            registry=self.registry,
        )
        self.task_timeouts = Counter(
            "fedmq_scheduler_task_timeouts",
            "Jobs failed at this initiator because a task ran past its timeout.",
            registry=self.registry,
        )
        self.rpc_requests = Counter(
            "fedmq_scheduler_rpc_requests",
            "Local commands served on the RPC topic, by op and outcome.",
            ["op", "outcome"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "fedmq_scheduler_job_duration_seconds",
            "From a job's creation at this party to its final state, by that state.",
            ["state"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.jobs_running = Gauge(
            "fedmq_scheduler_jobs_running",
            "Jobs not yet in a final state at this party (read from the database at scrape time).",
            registry=self.registry,
        )

    def count_running_with(self, count: Callable[[], float]) -> None:
        """Read fedmq_scheduler_jobs_running from `count` at each scrape: the database is the
        truth (a restarted scheduler has no in-memory count of the jobs it left running)."""
        self.jobs_running.set_function(count)
