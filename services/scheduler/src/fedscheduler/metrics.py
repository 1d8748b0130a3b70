"""The scheduler's Prometheus metrics, on a registry per scheduler (tests run several at once).

Every labelled counter an alert or a dashboard reads is created at 0 for each of its known label
values when the registry is built (final states, proposal answers, timeout phases): a series
born at 1 on its first event is invisible to increase() and rate(), so the first failed job
would page nobody (issue #22).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fedscheduler.domain import CANCELED, FAILED, SUCCESS

JOB_SECONDS_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
"""Jobs run from seconds (an empty pipeline) to hours (training on millions of rows)."""

FINAL_STATES: Final = (SUCCESS, FAILED, CANCELED)
PROPOSAL_ANSWERS: Final = ("accept", "refuse")
TIMEOUT_PHASES: Final = ("proposal", "running", "initiator")
"""fedscheduler.domain's `Counted("party_timeout", phase)` labels."""

JobAge = tuple[float, float]
"""(age, expected duration) in seconds of the running job most past its expected duration."""


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
        self._job_age = _JobAgeCollector(lambda: (0.0, 0.0))  # no jobs until watch_job_age
        self.registry.register(self._job_age)
        for state in FINAL_STATES:
            self.jobs_ended.labels(state)
            self.job_duration.labels(state)
        for answer in PROPOSAL_ANSWERS:
            self.proposals.labels(answer)
        for phase in TIMEOUT_PHASES:
            self.party_timeouts.labels(phase)

    def watch_job_age(self, read: Callable[[], JobAge]) -> None:
        """Export fedmq_scheduler_job_age_seconds and fedmq_scheduler_job_expected_seconds,
        both from one call of `read` at each scrape: the database knows every open job, also
        those a restarted scheduler left running."""
        self._job_age.read = read

    def count_running_with(self, count: Callable[[], float]) -> None:
        """Read fedmq_scheduler_jobs_running from `count` at each scrape: the database is the
        truth (a restarted scheduler has no in-memory count of the jobs it left running)."""
        self.jobs_running.set_function(count)


class _JobAgeCollector(Collector):
    """The two job-age gauges from one read, so that they always describe the same job."""

    def __init__(self, read: Callable[[], JobAge]) -> None:
        self.read = read

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # unchecked names: read() queries the database, never at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        age, expected = self.read()
        yield GaugeMetricFamily(
            "fedmq_scheduler_job_age_seconds",
            "Age of the open job most past its expected duration (0: no open job); above "
            "fedmq_scheduler_job_expected_seconds it fires FedmqJobOverdue.",
            value=age,
        )
        yield GaugeMetricFamily(
            "fedmq_scheduler_job_expected_seconds",
            "Expected duration of that same job's pipeline (fedscheduler.timeouts.job_age).",
            value=expected,
        )
