"""The serving service's entry point: wiring, the bus consumers, HTTP and shutdown.

`python -m fedserving` reads ServingSettings (FEDMQ_SERVING_*) and runs in the shared service
shell (fedcommon.service.run_service). It opens the party's database and migrates the
registry's tables (fedserving.migrations), reads model outputs through fedflow's ArtifactStore
and tables through its TableStore (the party's database and tables folder, which its workers
write), keeps the online features and the rate-limit counters in Redis, and consumes:

- `svc.serving.rpc` (party-local): the REST API's and the CLI's requests (fedserving.handlers);
- `svc.serving`: other parties' calls through the gateways (fedbus.remote), answered within
  their deadline.

Each topic is consumed by `threads` subscriptions, so that many requests are served at once.
`Service(settings)` does the same on background threads, so tests run several in a process.
"""

from __future__ import annotations

import gc
import json
import threading
from pathlib import Path
from typing import Any

import redis
import structlog
from fedbus import Bus, Delivery, Subscription, connect
from fedbus.remote import RemoteCall, RemoteCaller, serve_remote_requests
from fedbus.runtime import EnvelopePublisher
from fedcommon.service import HealthMetricsServer, lifecycle_status, run_service
from fedcontrol import SchedulerClient
from fedflow.artifacts import ArtifactStore
from fedflow.migrations import MIGRATIONS as FLOW_MIGRATIONS
from fedflow.tables import TableStore
from fedschemas import PartyRef, topics

from fedserving.audit_events import AuditForwarder
from fedserving.exports import load_key
from fedserving.features import FeatureRefresher, FeatureSource, FeatureStore, RateLimiter
from fedserving.handlers import RPC_TOPIC, SERVICE_TOPIC, Refused, Serving
from fedserving.http_features import HttpFeatureSource
from fedserving.metrics import ServingMetrics
from fedserving.registry import Registry, open_engine
from fedserving.settings import ServingSettings

log = structlog.get_logger("fedserving")


class Service:
    """The wired service; `start` runs it on background threads, `stop` shuts down in order."""

    def __init__(self, settings: ServingSettings, *, metrics: ServingMetrics | None = None) -> None:
        if settings.redis_url is None:
            raise ValueError("FEDMQ_SERVING_REDIS_URL is required (the online feature cache)")
        self.settings = settings
        self.metrics = metrics or ServingMetrics()
        self.engine = open_engine(settings.database_url.get_secret_value())
        # fedflow's tables (the party's table catalogue, the jobs' model outputs) through
        # fedflow's migrations, under the advisory lock the worker's start-up takes too: the
        # two start together on one database, and a plain create_all here raced the worker's
        # Alembic run (a unique violation on pg_type, seen booting the compose stack).
        FLOW_MIGRATIONS.upgrade_head(self.engine)
        self.redis = redis.Redis.from_url(settings.redis_url.get_secret_value())
        prefix = settings.redis_prefix or f"fedmq:{settings.party_id}:serving:"
        self.bus: Bus = connect(settings.bus_url.get_secret_value())
        caller = RemoteCaller(self.bus, settings.party_id)
        scheduler = SchedulerClient(self.bus, settings.party_id)

        def job_parties(job_id: str) -> dict[str, list[str]]:
            try:
                job = scheduler.status(job_id)
            except Exception as exc:
                raise Refused(
                    503,
                    f"party {settings.party_id}'s scheduler did not tell the job's parties: {exc}",
                ) from None
            return {str(p["party_id"]): list(p["roles"]) for p in job.get("parties", [])}

        registry = Registry(self.engine, settings.party_id)
        # Lifecycle events to the party's audit (an outbox, woken by each committed action).
        self.forwarder = AuditForwarder(
            registry,
            EnvelopePublisher(self.bus, PartyRef(party_id=settings.party_id, role="local")),
        )
        registry.on_events = self.forwarder.wake
        features = FeatureStore(self.redis, prefix)
        tables = TableStore(self.engine, Path(settings.tables_dir))
        # A re-uploaded feature table is loaded again (its catalogue sha256 changed).
        self.refresher = FeatureRefresher(
            features, tables.get, tables.read, interval_s=settings.feature_refresh_s
        )
        self.http_features: HttpFeatureSource | None = None
        lookup: FeatureSource = features
        if settings.feature_source == "http":
            self.http_features = HttpFeatureSource(
                settings.feature_http_url,
                timeout_s=settings.feature_http_timeout_s,
                retries=settings.feature_http_retries,
                deadline_s=settings.feature_http_deadline_s,
                headers={k: v.get_secret_value() for k, v in settings.feature_http_headers.items()},
            )
            lookup = self.http_features
        self.serving = Serving(
            settings.party_id,
            registry,
            lookup=lookup,
            features=features,
            limiter=RateLimiter(self.redis, prefix),
            call=lambda party, service, body, timeout: caller.call(party, service, body, timeout),
            artifacts=ArtifactStore(self.engine),
            tables=tables,
            job_parties=job_parties,
            metrics=self.metrics,
            accept_models_from=settings.accept_models_from,
            host_timeout_s=settings.host_timeout_s,
            rate_limit_rows_per_s=settings.rate_limit_rows_per_s,
            host_rate_limit_rows_per_s=settings.host_rate_limit_rows_per_s,
            max_batch_rows=settings.max_batch_rows,
            host_call_concurrency=settings.host_call_concurrency,
            binding_refresh_s=settings.binding_refresh_s,
            signing_key=load_key(settings.signing_key.get_secret_value(), settings.key_file),
            import_trusted_keys=settings.import_trusted_keys,
        )
        self._subscriptions: list[Subscription] = []
        self._http: HealthMetricsServer | None = None
        self.http_port = 0
        self.started = threading.Event()
        self.stopping = threading.Event()

    def _local(self, delivery: Delivery) -> None:
        try:
            request = json.loads(delivery.body)
            answer = self.serving.local(request)
        except ValueError as exc:
            answer = {"ok": False, "status": 400, "error": f"bad request: {exc}"}
        if delivery.reply_to:
            self.bus.reply(delivery, json.dumps(answer).encode())

    def _remote(self, call: RemoteCall) -> bytes:
        return self.serving.remote(call.caller_party, call.body)

    def start(self) -> None:
        self.bus.declare(RPC_TOPIC)
        self.bus.declare(topics.SERVING_EVENTS)
        self.forwarder.start()
        if self.http_features is None:
            self.refresher.start()
        for _ in range(self.settings.threads):
            self._subscriptions.append(self.bus.subscribe(RPC_TOPIC, self._local, prefetch=2))
            self._subscriptions.append(
                serve_remote_requests(
                    self.bus, self.settings.party_id, SERVICE_TOPIC, self._remote, prefetch=2
                )
            )
        if self.settings.http_port >= 0:
            self._http = HealthMetricsServer(
                self.settings.http_host,
                self.settings.http_port,
                health=self.health,
                registry=self.metrics.registry,
                name="serving",
            )
            self.http_port = self._http.start()
        self.started.set()
        log.info("serving_started", party_id=self.settings.party_id, http_port=self.http_port)

    def health(self) -> dict[str, Any]:
        return {
            "status": lifecycle_status(self.started, self.stopping),
            "party_id": self.settings.party_id,
        }

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        for subscription in self._subscriptions:
            subscription.cancel()
        self.serving.close()
        self.forwarder.stop()
        self.refresher.stop()
        if self.http_features is not None:
            self.http_features.close()
        if self._http is not None:
            self._http.stop()
        self.bus.close()
        self.redis.close()
        self.engine.dispose()
        log.info("serving_stopped", party_id=self.settings.party_id)


def freeze_heap_once_started(started: threading.Event) -> None:
    """Once the service is started, take what is alive then (modules, settings, the models'
    caches: ~160,000 objects) out of the cyclic collector's reach (gc.freeze), so that a full
    collection does not walk them all: 80-100 ms in which no thread of the process runs and
    every request in flight waits (issue #15). Start-up's garbage is collected first; a
    reference cycle among the frozen objects, if one is ever dropped, is never freed."""
    started.wait()
    gc.collect()
    gc.freeze()


def build(settings: ServingSettings) -> Service:
    service = Service(settings)
    threading.Thread(
        target=freeze_heap_once_started, args=(service.started,), name="serving-gc", daemon=True
    ).start()
    return service


def main() -> int:
    settings = ServingSettings()
    return run_service("serving", settings, lambda: build(settings), ready_event="serving_ready")


if __name__ == "__main__":
    raise SystemExit(main())
