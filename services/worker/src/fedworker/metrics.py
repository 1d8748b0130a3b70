"""The worker's Prometheus metrics, on a registry per worker (tests run several in a process),
and `MetricsHttpServer`, which serves them at GET /metrics (with /healthz) on the worker's port.

Besides the fedmq_worker_* task series (observed by the task runner, fedworker.tasks), the
data service's fedmq_worker_data_requests_total (fedworker.data) and the fedmq_crypto_* series
(observed around each crypto pool job, fedworker.crypto), the registry carries the bus
runtime's fedmq_bus_* series of the worker's publisher and consumers, the HTTP server's
fedmq_http_* series, and the process's CPU and memory.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any, Final

import uvicorn
from fastapi import FastAPI, Response
from fedbus.metrics import BusMetrics
from fedcommon.http import HttpMetrics, HttpObservabilityMiddleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

TASK_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""A noop component ends in milliseconds; a hetero LR fit on a large table takes an hour."""
CRYPTO_JOB_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""One chunk of a batch: a few ciphertext additions up to thousands of encryptions."""


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

    def crypto_job(self, op: str, backend: str, values: int, seconds: float) -> None:
        """Record one crypto pool job."""
        self.crypto_ops.labels(op, backend).inc(values)
        self.crypto_job_seconds.labels(op, backend).observe(seconds)


class MetricsHttpServer:
    """/healthz and /metrics of one worker process, served by uvicorn on a daemon thread."""

    def __init__(
        self, host: str, port: int, metrics: WorkerMetrics, health: Callable[[], dict[str, Any]]
    ) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._health = health
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _app(self) -> FastAPI:
        app = FastAPI(title="fedmq worker", docs_url=None, redoc_url=None, openapi_url=None)
        app.add_middleware(HttpObservabilityMiddleware, metrics=self._metrics.http)

        @app.get("/healthz")
        def healthz(response: Response) -> dict[str, Any]:
            health = self._health()
            if health["status"] != "ok":
                response.status_code = 503
            return health

        @app.get("/metrics")
        def metrics() -> Response:
            return Response(generate_latest(self._metrics.registry), media_type=CONTENT_TYPE_LATEST)

        return app

    def start(self) -> int:
        """Listen (bound here, so a taken port fails the start) and serve; returns the port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", access_log=False)
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="worker-http", daemon=True
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
