"""The scheduler's entry point: wiring, logging, tracing, HTTP, timer and graceful shutdown.

`python -m fedscheduler` reads SchedulerSettings (FEDMQ_SCHEDULER_*) and runs the scheduler in
the shared service shell (fedcommon.service.run_service: JSON logs, tracing, signals). The
scheduler opens the database and migrates it to the latest revision (Alembic), connects the
bus, and then runs
- a consumer of `topic` (svc.scheduler) with the handlers in handlers.py, deduplicated by the
  SQL inbox (a Redis cache in front when redis_url is set);
- the RPC server on `rpc_topic` (rpc.py) for the REST API and the CLI;
- the timer thread (timeouts.py): party silence, proposal timeouts, heartbeats;
- /healthz and /metrics (Prometheus) on http_host:http_port (fedcommon.service's server).
SIGTERM or SIGINT stops taking messages (the in-flight one finishes or goes back to the
broker), stops the timer and the HTTP server, closes the bus and the database, and exits 0.

`Scheduler(settings)` does the same on background threads, so tests run several in a process.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
import structlog
from fedbus import Bus, connect
from fedbus.inbox_factory import make_inbox
from fedbus.metrics import BusMetrics
from fedbus.migrations import MIGRATIONS as BUS_MIGRATIONS
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher, RemoteSourceGuard
from fedcommon.http import HttpMetrics
from fedcommon.service import HealthMetricsServer, lifecycle_status, run_service
from fedflow.policy import load_policy
from fedschemas import PartyRef

from fedscheduler.handlers import SchedulerContext, bind_handlers
from fedscheduler.metrics import SchedulerMetrics
from fedscheduler.models import TERMINAL, Job
from fedscheduler.rpc import RpcServer
from fedscheduler.settings import SchedulerSettings
from fedscheduler.store import open_database
from fedscheduler.timeouts import Timer, job_age

log = structlog.get_logger("fedscheduler")


class Scheduler:
    """The wired service; `start` runs it on background threads, `stop` shuts down in order."""

    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        bus: Bus | None = None,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or SchedulerMetrics(process=True)
        self.engine, self.sessions = open_database(settings.database_url.get_secret_value())
        BUS_MIGRATIONS.upgrade_head(self.engine)  # the inbox's table, before the inbox opens it
        self.metrics.count_running_with(self._jobs_running)
        self.metrics.watch_job_age(self._job_age)
        self.http_metrics = HttpMetrics(self.metrics.registry)
        self.bus_metrics = BusMetrics(self.metrics.registry)
        self.inbox = make_inbox(
            self.engine,
            redis_url=settings.redis_url.get_secret_value() if settings.redis_url else None,
            redis_prefix=settings.inbox_redis_prefix,
            redis_ttl=settings.redis_ttl_s,
        )
        self._owns_bus = bus is None
        self.bus: Bus = bus if bus is not None else connect(settings.bus_url.get_secret_value())
        # The role is a default only: every message is built with the party's role in its job.
        self.publisher = EnvelopePublisher(
            self.bus,
            PartyRef(party_id=settings.party_id, role="local"),
            max_envelope_bytes=settings.max_envelope_bytes,
            metrics=self.bus_metrics,
        )
        self.ctx = SchedulerContext(
            party_id=settings.party_id,
            publisher=self.publisher,
            worker_topic=settings.worker_topic,
            out_topic_prefix=settings.out_topic_prefix,
            party_timeout_s=settings.party_timeout_s,
            heartbeat_every_s=settings.heartbeat_every_s,
            task_timeout_s=settings.task_timeout_s,
            self_grants_implied=settings.self_grants_implied,
            security=load_policy(settings.policy_file),
            legacy_job_status=settings.legacy_job_status,
            audit_key=settings.audit_key,
            metrics=self.metrics,
        )
        self.consumer = EnvelopeConsumer(
            self.bus,
            settings.topic,
            bind_handlers(self.ctx),
            self.inbox,
            max_envelope_bytes=settings.max_envelope_bytes,
            prefetch=settings.prefetch,
            max_deliveries=settings.max_deliveries,
            metrics=self.bus_metrics,
            guard=RemoteSourceGuard.for_service(
                settings.party_id,
                settings.bus_url.get_secret_value(),
                settings.service_name,
                settings.gateway_broker_users,
            ),
        )
        self.rpc = RpcServer(self.bus, settings.rpc_topic, self.sessions, self.ctx)
        self.timer = Timer(self.sessions, self.ctx, settings.timer_interval_s)
        self.http_port = 0
        self._http: HealthMetricsServer | None = None
        self.started = threading.Event()
        self.stopping = threading.Event()

    def start(self) -> None:
        # Declared up front: publishing is mandatory, so a follow-up to a topic nobody
        # declared yet would fail the handler (the worker or gateway may start later).
        self.bus.declare(self.settings.worker_topic)
        self.consumer.start()
        self.rpc.start()
        self.timer.start()
        if self.settings.http_port >= 0:
            self._start_http()
        self.started.set()
        log.info(
            "scheduler_started",
            party_id=self.settings.party_id,
            topic=self.settings.topic,
            rpc_topic=self.settings.rpc_topic,
            http_port=self.http_port,
            party_timeout_s=self.settings.party_timeout_s,
        )

    def _jobs_running(self) -> float:
        try:
            with self.sessions() as session:
                count = session.scalar(
                    sa.select(sa.func.count()).select_from(Job).where(Job.state.not_in(TERMINAL))
                )
        except Exception as exc:  # a scrape must not fail because the database is away
            log.warning("jobs_running_unavailable", error=str(exc))
            return float("nan")
        return float(count or 0)

    def _job_age(self) -> tuple[float, float]:
        try:
            return job_age(self.sessions, self.ctx.clock, self.settings.job_expected_s)
        except Exception as exc:  # a scrape must not fail because the database is away
            log.warning("job_age_unavailable", error=str(exc))
            return float("nan"), float("nan")

    def declare_party(self, party_id: str) -> None:
        """Declare `out.<party>` (the gateway declares it too; tests without one need this)."""
        self.bus.declare(self.settings.out_topic_prefix + party_id)

    def health(self) -> dict[str, Any]:
        return {
            "status": lifecycle_status(self.started, self.stopping),
            "party_id": self.settings.party_id,
        }

    def _start_http(self) -> None:
        self._http = HealthMetricsServer(
            self.settings.http_host,
            self.settings.http_port,
            health=self.health,
            registry=self.metrics.registry,
            http_metrics=self.http_metrics,
            name="scheduler",
        )
        self.http_port = self._http.start()

    def stop(self) -> None:
        """Graceful and idempotent: stop taking work, let the in-flight message finish."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.consumer.stop()
        self.rpc.stop()
        self.timer.stop()
        if self._http is not None:
            self._http.stop()
        if self._owns_bus:
            self.bus.close()
        self.inbox.close()
        self.engine.dispose()
        log.info("scheduler_stopped", party_id=self.settings.party_id)


def main() -> int:
    settings = SchedulerSettings()
    # The Scheduler serves its own /healthz and /metrics (http_port 0: a free port, for tests
    # that run several in one process), so the shell serves none.
    return run_service(
        "scheduler", settings, lambda: Scheduler(settings), ready_event="scheduler_ready"
    )


if __name__ == "__main__":
    raise SystemExit(main())
