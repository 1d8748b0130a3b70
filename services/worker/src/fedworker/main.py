"""The worker's entry point: wiring, logging, tracing, and graceful shutdown.

`python -m fedworker` reads WorkerSettings (FEDMQ_WORKER_*), configures JSON logs and tracing,
connects the bus (fedbus.connect on bus_url), opens the inbox (SqlInbox on database_url, with a
Redis cache when redis_url is set, answering duplicates of federation data from the outbox),
migrates the tables it uses (fedbus's, fedflow's and its own task queue, Alembic), consumes
`topic` ("svc.worker") with the handlers in handlers.py, answers the data service's table
commands on `data_topic` (fedworker.data), and starts the task runner threads
(fedworker.tasks), which resume the tasks left running by a worker that died. SIGTERM or
SIGINT stops consuming (the in-flight message finishes, or the broker requeues it),
interrupts the running tasks and releases them for the next worker (no status is reported:
they resume), closes the bus and the database, flushes spans, and exits 0.

Crypto job pool (fedworker.crypto): with `crypto_serve` the worker also serves crypto jobs
from `crypto_topic`; with `crypto_replicas` > 0 its components' ctx.executor is a BusExecutor
over the party's replicas; `crypto_only` runs a lightweight replica with no task queue and no
database.

HTTP (`http_port`, 8083 by default; 0: none): main() runs the worker in the shared service shell
(fedcommon.service.run_service), which serves /healthz and /metrics (Prometheus: the task,
crypto, bus, HTTP and process series of fedworker.metrics) on a background thread; every request
is traced and counted (fedcommon.http).
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from fedbus import Bus, connect
from fedbus.inbox import Inbox
from fedbus.inbox_factory import make_inbox
from fedbus.migrations import MIGRATIONS as BUS_MIGRATIONS
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher, RemoteSourceGuard
from fedbus.sql_inbox import make_engine
from fedcommon.migrations import upgrade_all
from fedcommon.service import HttpEndpoint, lifecycle_status, run_service
from fedflow.bus_federation import FederationEndpoint
from fedflow.cryptopool import BusExecutor
from fedflow.migrations import MIGRATIONS as FLOW_MIGRATIONS
from fedflow.policy import load_policy
from fedflow.runner import PartyRuntime
from fedflow.sealing import CheckpointSealer
from fedflow.tables import TableStore
from fedschemas import PartyRef
from sqlalchemy.engine import Engine

from fedworker.crypto import CryptoWorker, MeteredThreadPool, make_executor, make_replica
from fedworker.data import DataServer, PartyTables, profile_sender
from fedworker.handlers import WorkerContext, bind_handlers
from fedworker.job_metrics import MetricsForwarder
from fedworker.metrics import WorkerMetrics
from fedworker.migrations import MIGRATIONS
from fedworker.settings import WorkerSettings
from fedworker.tasks import StatusReporter, TaskExecutor

log = structlog.get_logger("fedworker")

WORKER_MIGRATIONS = (BUS_MIGRATIONS, FLOW_MIGRATIONS, MIGRATIONS)
"""The packages whose tables the worker uses: the inbox and chunks, fedflow's, its task queue."""


def checkpoint_sealer(settings: WorkerSettings) -> CheckpointSealer:
    """What seals components' secrets in checkpoints: from `checkpoint_key`, or a secret of
    this process only (then a task taken over after this process dies cannot resume)."""
    if settings.checkpoint_key is None:
        log.warning("checkpoint_key_unset", party_id=settings.party_id, resume="this_process_only")
        return CheckpointSealer.in_memory()
    sealer = CheckpointSealer(settings.checkpoint_key.get_secret_value().encode())
    log.info("checkpoint_key_set", party_id=settings.party_id, fingerprint=sealer.fingerprint)
    return sealer


class Worker:
    """The wired service; `start` consumes, `stop` shuts down in order."""

    def __init__(self, settings: WorkerSettings, metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.started = threading.Event()
        self.stopping = threading.Event()
        self.engine: Engine = make_engine(settings.database_url.get_secret_value())
        # Every table the worker uses, at its latest revision, before anything opens them.
        upgrade_all(self.engine, WORKER_MIGRATIONS)
        inbox = make_inbox(
            self.engine,
            redis_url=settings.redis_url.get_secret_value() if settings.redis_url else None,
            redis_prefix=settings.inbox_redis_prefix,
            redis_ttl=settings.redis_ttl_s,
        )
        self.bus: Bus = connect(settings.bus_url.get_secret_value())
        # The role is a default only: answers are sent as whatever role the request addressed.
        self.publisher = EnvelopePublisher(
            self.bus,
            PartyRef(party_id=settings.party_id, role="host"),
            max_envelope_bytes=settings.max_envelope_bytes,
            metrics=self.metrics.bus,
        )
        self.endpoint = FederationEndpoint(
            settings.party_id,
            self.bus,
            self.engine,
            publisher=self.publisher,
            inbound_topic=settings.topic,
            outbound_prefix=settings.outbound_prefix,
        )
        inbox = self.endpoint.answering(inbox)
        if settings.test_hooks:
            # Test-only code (demo.ping's table, the crash hook) is imported only here, when a
            # test asked for it; the settings refuse test_hooks in production.
            from fedworker import testing

            inbox = testing.install(settings, self.engine, inbox)
        self.inbox: Inbox = inbox
        self.tables = TableStore(self.engine, settings.tables_dir)
        # The party's tables are the workers' own: any replica answers the data service's
        # commands (upload, list, show) on data_topic (fedworker.data).
        self.data = DataServer(
            self.bus,
            settings.data_topic,
            settings.party_id,
            PartyTables(
                self.tables,
                upload_ttl_s=settings.upload_ttl_s,
                # Each table's label profile goes to the scheduler, which checks pipelines
                # against it before anything runs (it reads no table of ours).
                on_stored=profile_sender(
                    self.publisher, settings.party_id, settings.scheduler_topic
                ),
            ),
            metrics=self.metrics,
        )
        self.crypto_replica = make_replica(self.bus, settings, self.metrics)
        self.crypto_executor = make_executor(self.bus, settings, self.metrics)
        self.runtime = PartyRuntime(
            self.endpoint,
            self.tables,
            executor=self.crypto_executor,
            sealer=checkpoint_sealer(settings),
            options=settings.runtime_options,
        )
        self.reporter = StatusReporter(self.publisher, settings.party_id, settings.scheduler_topic)
        self.executor = TaskExecutor(
            self.runtime,
            self.engine,
            self.reporter,
            threads=settings.task_threads,
            lease_s=settings.task_lease_s,
            poll_s=settings.task_poll_s,
            recv_timeout=settings.recv_timeout_s or None,
            progress_interval_s=settings.progress_interval_s,
            metrics=self.metrics,
            policy=load_policy(settings.policy_file),
            # Metrics reach the scheduler as task.metrics messages (it reads no table of ours).
            forwarder=MetricsForwarder(
                self.engine, self.publisher, settings.party_id, settings.scheduler_topic
            ),
        )
        ctx = WorkerContext(
            party_id=settings.party_id,
            publisher=self.publisher,
            reply_topic=settings.reply_topic,
            endpoint=self.endpoint,
            executor=self.executor,
            reporter=self.reporter,
        )
        self.consumer = EnvelopeConsumer(
            self.bus,
            settings.topic,
            bind_handlers(ctx, test_hooks=settings.test_hooks),
            self.inbox,
            max_envelope_bytes=settings.max_envelope_bytes,
            prefetch=settings.prefetch,
            max_deliveries=settings.max_deliveries,
            metrics=self.metrics.bus,
            guard=RemoteSourceGuard.for_service(
                settings.party_id,
                settings.bus_url.get_secret_value(),
                settings.service_name,
                settings.gateway_broker_users,
            ),
        )

    def health(self) -> dict[str, Any]:
        return {
            "status": lifecycle_status(self.started, self.stopping),
            "party_id": self.settings.party_id,
        }

    def start(self) -> None:
        # Declared up front so answers are kept even before anyone consumes them (publishing
        # is mandatory: an undeclared reply topic would make every ping fail).
        self.bus.declare(self.settings.reply_topic)
        self.bus.declare(self.settings.scheduler_topic)
        if self.crypto_replica is not None:
            self.crypto_replica.start()
        self.consumer.start()
        self.data.start()
        self.executor.start()
        self.started.set()

    def stop(self) -> None:
        self.stopping.set()
        self.consumer.stop()
        self.data.stop()
        if self.crypto_replica is not None:
            self.crypto_replica.stop()
        self.executor.stop()
        if isinstance(self.crypto_executor, BusExecutor | MeteredThreadPool):
            self.crypto_executor.shutdown(wait=False)
        self.bus.close()
        self.inbox.close()
        self.engine.dispose()


def main() -> int:
    settings = WorkerSettings()
    metrics = WorkerMetrics()

    def build() -> Worker | CryptoWorker:
        if settings.crypto_only:
            return CryptoWorker(settings, metrics)
        return Worker(settings, metrics)

    # The process's port, not the Worker's: tests run several Workers in one process.
    http = HttpEndpoint(settings.http_host, settings.http_port) if settings.http_port > 0 else None
    code = run_service(
        "worker",
        settings,
        build,
        http=http,
        registry=metrics.registry,
        http_metrics=metrics.http,
        ready_event="worker_started",
        ready_fields=lambda: {
            "party_id": settings.party_id,
            "topic": settings.topic,
            "redis_cache": settings.redis_url is not None,
            "crypto_serve": settings.crypto_serve or settings.crypto_only,
            "crypto_only": settings.crypto_only,
            "crypto_replicas": settings.crypto_replicas,
        },
    )
    log.info("worker_stopped")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
