"""The worker's Prometheus metrics, on a registry per worker (tests run several in a process);
the service shell (fedcommon.service) serves them at GET /metrics on the worker's port.

Besides the fedmq_worker_* task series (observed by the task runner, fedworker.tasks), the
data service's fedmq_worker_data_requests_total (fedworker.data) and the fedmq_crypto_* series
(observed around each crypto pool job, fedworker.crypto), the registry carries the bus
runtime's fedmq_bus_* series of the worker's publisher and consumers, the HTTP server's
fedmq_http_* series, and the process's CPU and memory.

The task series exist at 0 for every component of fedflow's catalogue (and every final state)
from start-up: a series born at 1 on its first task is invisible to rate() and increase(), so a
component's first failure would fire no FedmqTasksFailing and show on no panel (issue #22).
"""

from __future__ import annotations

from typing import Final

from fedbus.metrics import BusMetrics
from fedcommon.http import HttpMetrics
from fedflow.components import COMPONENT_NAMES
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)

TASK_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""A noop component ends in milliseconds; a hetero LR fit on a large table takes an hour."""
CRYPTO_JOB_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""One chunk of a batch: a few ciphertext additions up to thousands of encryptions."""
TASK_END_STATES: Final = ("success", "failed", "canceled")
"""The final states fedmq_worker_tasks_ended_total counts (a task released by a graceful stop
is not ended: it resumes elsewhere)."""


class WorkerMetrics:
    """Every series the worker exports (docs/metrics.md)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        """`process`: also export the process's CPU and memory (off for tests that run several
        workers in one process and only look at their own counters)."""
        self.registry = registry or CollectorRegistry()
        self.bus = BusMetrics(self.registry)
        self.http = HttpMetrics(self.registry)
        if process:
            ProcessCollector(registry=self.registry)
        self.tasks_started = Counter(
            "fedmq_worker_tasks_started",
            "Tasks this worker started running (resumed ones again), by component type.",
            ["component"],
            registry=self.registry,
        )
        self.tasks_ended = Counter(
            "fedmq_worker_tasks_ended",
            "Tasks that ended on this worker, by component type and final state.",
            ["component", "state"],
            registry=self.registry,
        )
        self.task_duration = Histogram(
            "fedmq_worker_task_duration_seconds",
            "Running time of a task on this worker (from its start to its final state).",
            ["component"],
            buckets=TASK_BUCKETS,
            registry=self.registry,
        )
        self.tasks_running = Gauge(
            "fedmq_worker_tasks_running",
            "Tasks running on this worker now.",
            registry=self.registry,
        )
        self.crypto_ops = Counter(
            "fedmq_crypto_ops",
            "Values processed by crypto pool jobs (one encryption of one number = 1), by "
            "operation and Paillier backend.",
            ["op", "backend"],
            registry=self.registry,
        )
        self.crypto_job_seconds = Histogram(
            "fedmq_crypto_job_seconds",
            "Time of one crypto pool job (one chunk of a batch), by operation and backend.",
            ["op", "backend"],
            buckets=CRYPTO_JOB_BUCKETS,
            registry=self.registry,
        )
        self.data_requests = Counter(
            "fedmq_worker_data_requests",
            "Commands of the data service (tables) this worker answered, by op and outcome "
            "(ok, or the error kind: invalid, not_found, conflict, internal).",
            ["op", "outcome"],
            registry=self.registry,
        )

        for component in sorted(COMPONENT_NAMES):
            self.tasks_started.labels(component)
            self.task_duration.labels(component)
            for state in TASK_END_STATES:
                self.tasks_ended.labels(component, state)

    def crypto_job(self, op: str, backend: str, values: int, seconds: float) -> None:
        """Record one crypto pool job."""
        self.crypto_ops.labels(op, backend).inc(values)
        self.crypto_job_seconds.labels(op, backend).observe(seconds)
