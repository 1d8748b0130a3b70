"""The audit's entry point: wiring, the fan-out consumer, the timer, HTTP and shutdown.

`python -m fedaudit` reads AuditSettings (FEDMQ_AUDIT_*) and runs the audit in the shared
service shell (fedcommon.service.run_service). It opens the database and migrates it (Alembic,
fedaudit.migrations), loads the chain head and replays the log into the rules' job views,
declares its durable fan-out subscription (so nothing published from then on is lost while it
is down) and consumes it; a timer thread writes time-based checkpoints and reports silent
parties; /healthz and /metrics are served on http_host:http_port.

`Audit(settings)` does the same on background threads, so tests run several in a process.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import structlog
from fedbus import Bus, Subscription, connect
from fedbus.runtime import EnvelopePublisher, RemoteSourceGuard
from fedcommon.service import HealthMetricsServer, lifecycle_status, run_service
from fedcrypto.signing import SigningKey
from fedflow.code_identity import component_code, release
from fedflow.descriptors import CATALOGUE
from fedschemas import PartyRef, topics
from sqlalchemy.engine import Engine

from fedaudit import handlers
from fedaudit.auditor import Auditor
from fedaudit.liveness import Liveness, broker_probe, database_probe
from fedaudit.metrics import AuditMetrics
from fedaudit.priority import lower_priority
from fedaudit.rpc import AuditRpc
from fedaudit.rules.state import AuditPolicy
from fedaudit.settings import AuditSettings
from fedaudit.store import open_engine

log = structlog.get_logger("fedaudit")


def approved_code(settings: AuditSettings) -> dict[str, tuple[str, ...]]:
    """Every component type's approved code hashes: the operator's list, else the hash of the
    code this audit is deployed with (the party's own release of the components)."""
    return {
        ctype: tuple(settings.approved_code.get(ctype, ())) or (component_code(ctype).sha256,)
        for ctype in CATALOGUE
    }


def dependency_probes(settings: AuditSettings, engine: Engine) -> Liveness:
    """The party's database (the audit's own) and broker (from the bus URL; none in memory)."""
    probes = {"database": database_probe(engine)}
    broker = broker_probe(settings.bus_url.get_secret_value(), settings.probe_timeout_s)
    if broker is not None:
        probes["broker"] = broker
    return Liveness(
        probes, down_after_s=settings.dependency_down_after_s, timeout_s=settings.probe_timeout_s
    )


def load_signing_key(settings: AuditSettings) -> SigningKey:
    """The configured key, else the key file (created 0600 on first use)."""
    raw = settings.signing_key.get_secret_value().strip()
    if raw:
        try:
            return SigningKey.from_bytes(bytes.fromhex(raw))
        except ValueError as exc:
            raise ValueError(f"FEDMQ_AUDIT_SIGNING_KEY is not 64 hex digits: {exc}") from None
    path = Path(settings.key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(SigningKey.generate().to_bytes().hex())
    return SigningKey.from_bytes(bytes.fromhex(path.read_text().strip()))


class Audit:
    """The wired service; `start` runs it on background threads, `stop` shuts down in order."""

    def __init__(
        self,
        settings: AuditSettings,
        *,
        bus: Bus | None = None,
        metrics: AuditMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or AuditMetrics()
        self.engine = open_engine(settings.database_url.get_secret_value())
        self.key = load_signing_key(settings)
        if settings.public_key and settings.public_key.strip().lower() != self.public_key_hex:
            raise ValueError(
                "FEDMQ_AUDIT_PUBLIC_KEY does not match the audit's signing key: the scheduler "
                "would refuse every stop request it signs"
            )
        self._owns_bus = bus is None
        self.bus: Bus = bus if bus is not None else connect(settings.bus_url.get_secret_value())
        policy = AuditPolicy(
            party_id=settings.party_id,
            min_key_bits=settings.min_key_bits,
            severities=dict(settings.severities),
            silent_after_s=settings.silent_after_s,
            repeat_memory=settings.repeat_memory,
            service_silent_after_s=settings.service_silent_after_s,
            worker_silent_after_s=settings.worker_silent_after_s,
            stalled_after_s=settings.stalled_after_s,
            stalled_after_max_s=settings.stalled_after_max_s,
            pipeline_floors=dict(settings.pipeline_floors),
            outbound_values=settings.outbound_values,
            approved_code=approved_code(settings),
            approved_versions=tuple(settings.approved_versions) or (release(),),
        )
        self.rpc = AuditRpc(self.bus, self.engine, policy, self.public_key_hex)
        self.ctx = handlers.AuditContext(
            party_id=settings.party_id,
            engine=self.engine,
            auditor=Auditor(policy),
            key=self.key,
            # Signed last, after the publisher stamped the trace context (the signature covers
            # it): the scheduler acts only on stop requests this key signed.
            publisher=EnvelopePublisher(
                self.bus,
                PartyRef(party_id=settings.party_id, role="local"),
                signer=lambda envelope: handlers.sign_stop(envelope, self.key),
            ),
            metrics=self.metrics,
            checkpoint_every=settings.checkpoint_every,
            checkpoint_interval_s=settings.checkpoint_interval_s,
            statement_settle_s=settings.statement_settle_s,
            stop_on_critical=settings.stop_on_critical,
            alert=handlers.webhook(settings.alert_webhook_url)
            if settings.alert_webhook_url
            else None,
            # Unsigned: the party's gateway signs what leaves; the checkpoint inside carries
            # the audit's own signature.
            peer_publisher=EnvelopePublisher(
                self.bus, PartyRef(party_id=settings.party_id, role="local")
            ),
            peer_keys=dict(settings.peer_keys),
            peer_interval_s=settings.peer_checkpoint_interval_s,
            liveness=dependency_probes(settings, self.engine),
        )
        self._subscription: Subscription | None = None
        self._inbox: Subscription | None = None
        self._serving: Subscription | None = None
        self._reports: Subscription | None = None
        self._timer: threading.Thread | None = None
        self._http: HealthMetricsServer | None = None
        self.http_port = 0
        self.started = threading.Event()
        self.stopping = threading.Event()

    @property
    def public_key_hex(self) -> str:
        return self.key.verify_key().to_bytes().hex()

    def start(self) -> None:
        handlers.load(self.ctx)
        # The stop requests' topic, declared in case the scheduler has not started yet.
        self.bus.declare(topics.SCHEDULER)
        self.bus.declare_fanout(self.settings.fanout_name, self.settings.patterns)
        self._subscription = self.bus.subscribe_fanout(
            self.settings.fanout_name,
            self.settings.patterns,
            lambda delivery: handlers.handle_delivery(self.ctx, delivery),
            prefetch=self.settings.prefetch,
            max_deliveries=self.settings.max_deliveries,
            batch_handler=lambda group: handlers.handle_batch(self.ctx, group),
            batch_size=self.settings.batch_size,
        )
        # Peers' checkpoints (audit.* from the gateway): recorded and checked like the fan-out's.
        self.bus.declare(topics.AUDIT)
        # Only the party's gateway may put a peer's message there (docs/security.md).
        guard = RemoteSourceGuard.for_service(
            self.settings.party_id,
            self.settings.bus_url.get_secret_value(),
            self.settings.service_name,
            self.settings.gateway_broker_users,
        )
        self._inbox = self.bus.subscribe(
            topics.AUDIT,
            lambda delivery: handlers.handle_inbox(self.ctx, guard, delivery),
            max_deliveries=self.settings.max_deliveries,
        )
        # The party's serving service's lifecycle events (serving.event, party-local), from
        # its broker user only.
        self.bus.declare(topics.SERVING_EVENTS)
        publishers = handlers.serving_publishers(self.settings.bus_url.get_secret_value())
        self._serving = self.bus.subscribe(
            topics.SERVING_EVENTS,
            lambda delivery: handlers.handle_serving_event(self.ctx, delivery, publishers),
            max_deliveries=self.settings.max_deliveries,
        )
        # The party's workers' reports (report.*: checks of decrypted plaintexts), from the
        # workers' broker user only.
        self.bus.declare(topics.AUDIT_REPORTS)
        reporters = handlers.report_publishers(self.settings.bus_url.get_secret_value())
        self._reports = self.bus.subscribe(
            topics.AUDIT_REPORTS,
            lambda delivery: handlers.handle_report(self.ctx, delivery, reporters),
            max_deliveries=self.settings.max_deliveries,
        )
        self.rpc.start()
        self._timer = threading.Thread(target=self._tick, name="audit-timer", daemon=True)
        self._timer.start()
        if self.settings.http_port >= 0:
            self._http = HealthMetricsServer(
                self.settings.http_host,
                self.settings.http_port,
                health=self.health,
                registry=self.metrics.registry,
                name="audit",
            )
            self.http_port = self._http.start()
        self.started.set()
        log.info(
            "audit_started",
            party_id=self.settings.party_id,
            patterns=list(self.settings.patterns),
            http_port=self.http_port,
            public_key=self.public_key_hex,
        )

    def _tick(self) -> None:
        while not self.stopping.wait(self.settings.timer_interval_s):
            try:  # first: it must run while the database is away
                handlers.check_liveness(self.ctx, self.ctx.clock())
            except Exception as exc:
                log.warning("audit_liveness_failed", error=str(exc))
            try:
                handlers.tick(self.ctx)
            except Exception as exc:  # the database may be away for a moment
                log.warning("audit_tick_failed", error=str(exc))

    def health(self) -> dict[str, Any]:
        return {
            "status": lifecycle_status(self.started, self.stopping),
            "party_id": self.settings.party_id,
            "chain_seq": self.ctx.head.seq,
        }

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        for subscription in (self._subscription, self._inbox, self._serving, self._reports):
            if subscription is not None:
                subscription.cancel()
        self.rpc.stop()
        if self._timer is not None:
            self._timer.join(timeout=5)
        if self.ctx.liveness is not None:
            self.ctx.liveness.close()
        try:
            handlers.final_checkpoint(self.ctx)
        except Exception as exc:  # the database may be gone; the next start signs instead
            log.warning("audit_final_checkpoint_failed", error=str(exc))
        if self._http is not None:
            self._http.stop()
        if self._owns_bus:
            self.bus.close()
        self.engine.dispose()
        log.info("audit_stopped", party_id=self.settings.party_id, seq=self.ctx.head.seq)


def main() -> int:
    settings = AuditSettings()
    lower_priority(settings.nice)
    return run_service("audit", settings, lambda: Audit(settings), ready_event="audit_ready")


if __name__ == "__main__":
    raise SystemExit(main())
