"""The service shell: what every fedmq service's `main()` does, written once.

    def main() -> int:
        settings = WorkerSettings()
        return run_service("worker", settings, lambda: Worker(settings), http=..., ...)

`run_service` configures JSON logging and tracing from the service's settings, builds the
service (its constructor connects), serves /healthz and /metrics when asked to, starts it, and
waits for SIGTERM or SIGINT. Then it stops the service -- `stop()` must stop taking work and let
the in-flight message finish (or go back to the broker) before it returns -- stops the HTTP
server, flushes the spans (waiting at most a couple of seconds for an unreachable collector,
fedcommon.tracing), and returns the exit status (0). Failed span exports are counted in
fedmq_trace_export_failures_total on the service's registry (`registry`, else the service's
own `metrics.registry`). SIGHUP calls `on_reload` on a thread
of its own (the gateway reloads its identity). With `profile_out` set (FEDMQ_PROFILE_OUT, a
folder) the whole run is profiled on each thread's CPU clock and written there at exit
(fedcommon.profiling).

A service is anything with `start()`, `stop()` and `health()`; `health()["status"]` is "ok"
when it serves ("starting" and "stopping" answer 503, which is what compose and Kubernetes
probe). Services that run their own HTTP server (the gateway's REST API, the scheduler's port
that tests run several of in one process) pass no `http` and serve /healthz and /metrics with
`HealthMetricsServer` themselves.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fedcommon.http import HttpMetrics, HttpObservabilityMiddleware
from fedcommon.logging import configure_logging
from fedcommon.profiling import ThreadProfiles, profile_path
from fedcommon.settings import ServiceSettings
from fedcommon.tracing import configure_tracing, export_failures_counter

log = structlog.get_logger("fedcommon.service")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
WAKE_S = 0.5
"""How often the main thread wakes while it waits: a Python signal handler runs only between
bytecodes of the main thread, so it must not block in one long wait."""


class Service(Protocol):
    """What run_service runs: a wired service object."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def health(self) -> Mapping[str, Any]: ...


def lifecycle_status(started: threading.Event, stopping: threading.Event) -> str:
    """A service's /healthz status from its start-up and shutdown events: "starting" until
    start() finished, "ok" then, "stopping" once shutdown began (whatever start() reached)."""
    if stopping.is_set():
        return "stopping"
    return "ok" if started.is_set() else "starting"


@dataclass(frozen=True)
class HttpEndpoint:
    """Where run_service serves /healthz and /metrics; port 0 picks a free one."""

    host: str
    port: int


class HealthMetricsServer:
    """/healthz (the service's health, 503 unless "ok") and /metrics (Prometheus text of
    `registry`) served by uvicorn on a daemon thread; every request is traced and counted in
    `http_metrics` when given (fedcommon.http)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        health: Callable[[], Mapping[str, Any]],
        registry: CollectorRegistry | None = None,
        http_metrics: HttpMetrics | None = None,
        name: str = "service",
    ) -> None:
        self._host = host
        self._port = port
        self._health = health
        self._registry = registry
        self._http_metrics = http_metrics
        self._name = name
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _app(self) -> Starlette:
        def healthz(_request: Request) -> Response:
            health = dict(self._health())
            return JSONResponse(health, status_code=200 if health.get("status") == "ok" else 503)

        def metrics(_request: Request) -> Response:
            if self._registry is None:
                return Response(status_code=404)
            return Response(generate_latest(self._registry), media_type=CONTENT_TYPE_LATEST)

        app = Starlette(
            routes=[Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics)]
        )
        app.add_middleware(HttpObservabilityMiddleware, metrics=self._http_metrics)
        return app

    def start(self) -> int:
        """Listen (bound here, so a taken port fails the start) and serve; returns the port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", access_log=False)
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name=f"{self._name}-http", daemon=True
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop answering (idempotent); waits up to 5 s for the server thread."""
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None


@contextmanager
def shutdown_signals(
    name: str, stopping: threading.Event, on_reload: Callable[[], object] | None = None
) -> Iterator[None]:
    """SIGTERM/SIGINT set `stopping`; SIGHUP runs `on_reload` on a thread (main thread only).
    The previous handlers come back on exit."""

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        log.info(f"{name}_stopping", signal=signal.Signals(signum).name)
        stopping.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        if on_reload is not None:
            threading.Thread(target=on_reload, name=f"{name}-reload", daemon=True).start()

    wanted: dict[signal.Signals, Callable[[int, FrameType | None], None]] = dict.fromkeys(
        STOP_SIGNALS, on_stop
    )
    if on_reload is not None:
        wanted[signal.SIGHUP] = on_hup
    previous = {sig: signal.signal(sig, handler) for sig, handler in wanted.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _registry_of(service: Service) -> CollectorRegistry | None:
    """The registry a service serves itself (every fedmq service keeps one as
    `metrics.registry`), for the series the shell adds (fedmq_trace_export_failures_total)."""
    registry = getattr(getattr(service, "metrics", None), "registry", None)
    return registry if isinstance(registry, CollectorRegistry) else None


def run_service(
    name: str,
    settings: ServiceSettings,
    build: Callable[[], Service],
    *,
    http: HttpEndpoint | None = None,
    registry: CollectorRegistry | None = None,
    http_metrics: HttpMetrics | None = None,
    on_reload: Callable[[], object] | None = None,
    ready_event: str | None = None,
    ready_fields: Callable[[], Mapping[str, Any]] | None = None,
    stopping: threading.Event | None = None,
) -> int:
    """Run one service until SIGTERM or SIGINT (or `stopping` is set); returns the exit status.

    `http`: serve /healthz and /metrics (of `registry`) there, before the service starts, so a
    probe sees "starting" rather than a refused connection. `ready_event`: the log event that
    says the service is started and its HTTP port answers (with `ready_fields()`, the pid and
    the port). Must be called from the main thread (signal handlers)."""
    configure_logging(name, settings.log_level, settings.log_json)
    export_failures = export_failures_counter()
    provider = configure_tracing(
        name,
        settings.party_id,
        otlp_endpoint=settings.otlp_endpoint,
        trace_file=settings.trace_file,
        export_failures=export_failures,
    )
    profiles: ThreadProfiles | None = None
    if settings.profile_out:
        profiles = ThreadProfiles()
        profiles.start()
    stopping = stopping if stopping is not None else threading.Event()
    server: HealthMetricsServer | None = None
    service: Service | None = None
    try:
        with shutdown_signals(name, stopping, on_reload):
            service = build()
            metrics_registry = registry if registry is not None else _registry_of(service)
            if metrics_registry is not None:
                metrics_registry.register(export_failures)
            if http is not None:
                server = HealthMetricsServer(
                    http.host,
                    http.port,
                    health=service.health,
                    registry=registry,
                    http_metrics=http_metrics,
                    name=name,
                )
                server.start()
            service.start()
            if ready_event is not None:
                fields = dict(ready_fields() if ready_fields is not None else {})
                fields.setdefault("pid", os.getpid())
                if server is not None:
                    fields.setdefault("http_port", server.port)
                log.info(ready_event, **fields)
            while not stopping.wait(WAKE_S):
                pass
            # Still inside the handlers: a second SIGTERM during the stop must not kill the
            # process with the default action halfway through releasing its work.
            service.stop()
            service = None
    finally:
        if service is not None:  # start failed: release what was built, then fail
            try:
                service.stop()
            except Exception as exc:
                log.warning(f"{name}_stop_failed", error=str(exc))
        if server is not None:
            server.stop()
        provider.shutdown()
        if profiles is not None:
            written = profiles.stop(
                profile_path(settings.profile_out or ".", name, settings.party_id)
            )
            log.info(f"{name}_profile_written", path=str(written))
    return 0
