"""The audit in standalone mode (`fedmq standalone run --audit`): one audit per party, in the
same process, on that party's in-memory broker, with its log in SQLite in the run's directory.

It is the service's own code (`fedaudit.main.Audit`), on the same topics as on a real stack:
the worker's `out.<peer>`, and `svc.worker`, where fedflow's LocalRelay publishes what the
peers sent after checking their signature, as a gateway does. What standalone lacks is a
scheduler, so the approved pipeline, which the audit otherwise learns from the job's proposal,
is published to each party's `svc.scheduler` as a proposal of the initiator (the first guest)
before anything runs, and the job's end likewise after the last task. Nor is there a worker to
say which code runs each task: this process is that worker, so each party's tasks are reported
running (task.status on `svc.scheduler`, as fedworker reports its claims) with the release and
the code hash (fedflow.code_identity) of the components this process has loaded, before any of
them runs, and control.component_code judges them against the approved list
(FEDMQ_AUDIT_APPROVED_CODE, read as by the service; else the audit's own code, which in one
process is the same). A critical finding's stop request (control.audit_stop, which a scheduler
would act on) sets the run's abort event, and the run fails naming the rule, the party and the
message.

Used as run_pipeline's `watch` (fedflow.standalone.Watcher): `AuditedRun(...)` is called with
the world, the job id and the abort event.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedbus import Delivery, Message, Subscription
from fedcrypto.signing import BadSignature, SigningKey
from fedflow.code_identity import component_code
from fedflow.pipeline import Pipeline
from fedflow.standalone import LocalWorld, StandaloneError
from fedschemas import (
    PartyRef,
    canonical_bytes,
    decode_envelope,
    decode_payload,
    encode_envelope,
    new_envelope,
    topics,
)
from fedschemas.payloads import AuditStop, JobEnd, JobPropose, TaskStatus
from pydantic import SecretStr

from fedaudit import store
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedaudit.verify import parse_export, verify_export


class StoppedByAudit(StandaloneError):
    """A party's audit found a critical finding and stopped the standalone job."""


@dataclass
class PartyAudit:
    party_id: str
    audit: Audit
    database: Path

    def findings(self, job_id: str) -> list[dict[str, Any]]:
        with self.audit.engine.connect() as conn:
            return store.list_findings(conn, job_id=job_id)

    def records(self, job_id: str, direction: str | None = None) -> list[dict[str, Any]]:
        """The job's records (those that went `direction`: out, in, local)."""
        with self.audit.engine.connect() as conn:
            found = list(store.iter_records(conn, job_id=job_id))
        return [r for r in found if direction is None or r["direction"] == direction]

    def chain_problems(self) -> list[str]:
        with self.audit.engine.connect() as conn:
            lines = list(store.export_lines(conn, self.party_id, self.audit.public_key_hex))
        return [str(p) for p in verify_export(parse_export(lines))]


@dataclass
class AuditedRun:
    """run_pipeline's `watch`: the parties' audits around one standalone job."""

    pipeline: Pipeline
    pipeline_yaml: str
    workdir: Path
    min_key_bits: dict[str, int] = field(default_factory=dict)
    """Party -> its policy's floor for Paillier keys (default 2048)."""
    severities: dict[str, str] = field(default_factory=dict)
    drain_timeout_s: float = 60.0
    audits: dict[str, PartyAudit] = field(default_factory=dict)
    job_id: str = ""
    stop: dict[str, Any] | None = None
    """The first stop request: job, rule, party, message id, detail."""

    @property
    def initiator(self) -> str:
        guests = self.pipeline.parties.by_role().get("guest") or self.pipeline.party_ids()
        return str(guests[0])

    @contextmanager
    def __call__(
        self, world: LocalWorld, job_id: str, abort: threading.Event
    ) -> Iterator[AuditedRun]:
        subscriptions: list[Subscription] = []
        self.job_id = job_id
        try:
            for party_id, bus in world.buses.items():
                self.audits[party_id] = self._start(party_id, bus)
                on_scheduler = functools.partial(self._on_scheduler, party_id, abort=abort)
                subscriptions.append(bus.subscribe(topics.SCHEDULER, on_scheduler))
                self._announce(bus, party_id, job_id)
                self._report_code(bus, party_id, job_id)
            yield self
            for party_id, bus in world.buses.items():
                self._end(bus, party_id, job_id)
            for party in self.audits.values():
                _drained(party.audit, job_id, self.drain_timeout_s)
        finally:
            for subscription in subscriptions:
                subscription.cancel()
            for party in self.audits.values():
                party.audit.stop()
        if self.stop is not None:
            raise StoppedByAudit(
                f"stopped by the audit of party {self.stop['by']}: rule {self.stop['rule']} "
                f"broken by party {self.stop['party_id']} (message {self.stop['message_id']}): "
                f"{self.stop['detail']}"
            )

    def _start(self, party_id: str, bus: Any) -> PartyAudit:
        database = self.workdir / f"audit-{party_id}.db"
        for stale in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            stale.unlink(missing_ok=True)
        settings = AuditSettings(
            party_id=party_id,
            bus_url=SecretStr("memory://standalone"),
            database_url=SecretStr(f"sqlite:///{database}"),
            signing_key=SecretStr(SigningKey.generate().to_bytes().hex()),
            key_file=str(self.workdir / f"audit-{party_id}.key"),
            min_key_bits=self.min_key_bits.get(party_id, 2048),
            severities=self.severities,  # type: ignore[arg-type]
            http_port=-1,
            log_json=False,
        )
        audit = Audit(settings, bus=bus)
        # No checkpoints to the peers: the parties' logs are side by side in the run's
        # directory, and the relay would hand them to the workers (it has no svc.audit).
        audit.ctx.peer_publisher = None
        audit.start()
        return PartyAudit(party_id, audit, database)

    def _announce(self, bus: Any, party_id: str, job_id: str) -> None:
        """The approved pipeline, as the initiator's proposal reaches each party's scheduler."""
        me = PartyRef(party_id=party_id, role="local")
        envelope = new_envelope(
            JobPropose(job_id=job_id, initiator=self.initiator, pipeline_yaml=self.pipeline_yaml),
            job_id=job_id,
            component="job",
            task_id="",
            attempt=0,
            source=me,
            destination=me,
            tag="propose",
            iteration=-1,
            seq=0,
            created_at=datetime.now(UTC),
        )
        _publish(bus, topics.SCHEDULER, envelope)

    def _report_code(self, bus: Any, party_id: str, job_id: str) -> None:
        """Each of the party's tasks reported running with the code this process loaded for
        its component type, as a worker's claim report carries it (the tasks run in this
        process, with this code, once the audits have seen the reports)."""
        for seq, (spec, role) in enumerate(self.pipeline.tasks_for(party_id)):
            code = component_code(spec.type)
            envelope = new_envelope(
                TaskStatus(
                    job_id=job_id,
                    component=spec.name,
                    attempt=0,
                    party_id=party_id,
                    state="running",
                    component_version=code.version,
                    code_sha256=code.sha256,
                ),
                job_id=job_id,
                component=spec.name,
                task_id=f"{job_id}/{spec.name}/{party_id}/{role}",
                attempt=0,
                source=PartyRef(party_id=party_id, role=role),  # type: ignore[arg-type]
                destination=PartyRef(party_id=party_id, role="local"),
                tag="task.status.running",
                iteration=-1,
                seq=seq,
                created_at=datetime.now(UTC),
            )
            _publish(bus, topics.SCHEDULER, envelope)

    def _end(self, bus: Any, party_id: str, job_id: str) -> None:
        me = PartyRef(party_id=party_id, role="local")
        envelope = new_envelope(
            JobEnd(job_id=job_id, party_id=party_id, attempt=0, at=datetime.now(UTC)),
            job_id=job_id,
            component="job",
            task_id="",
            attempt=0,
            source=me,
            destination=me,
            tag="end",
            iteration=-1,
            seq=1,
            created_at=datetime.now(UTC),
        )
        _publish(bus, topics.SCHEDULER, envelope)

    def _on_scheduler(self, party_id: str, delivery: Delivery, *, abort: threading.Event) -> None:
        """What a scheduler would get: only the audit's stop requests matter here, and only
        those its own key signed."""
        envelope = decode_envelope(delivery.body)
        if envelope.type != "control.audit_stop":
            return
        payload = decode_payload(envelope)
        audit = self.audits.get(party_id)
        if not isinstance(payload, AuditStop) or audit is None:
            return
        if not _signed_by(envelope, audit.audit):
            return
        if self.stop is None:
            self.stop = {"by": party_id, **payload.model_dump()}
        abort.set()


def _signed_by(envelope: Any, audit: Audit) -> bool:
    if envelope.signature is None:
        return False
    try:
        audit.key.verify_key().verify(canonical_bytes(envelope), envelope.signature)
    except BadSignature:
        return False
    return True


def _publish(bus: Any, topic: str, envelope: Any) -> None:
    bus.declare(topic)
    bus.publish(
        Message(topic=topic, body=encode_envelope(envelope), message_id=envelope.message_id)
    )


def _drained(audit: Audit, job_id: str, timeout_s: float) -> None:
    """Wait until the audit recorded the job's end (its fan-out queue is FIFO: everything
    before the end is recorded too)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = audit.ctx.auditor.jobs.get(job_id)
        if view is not None and view.ended:
            return
        time.sleep(0.02)
    raise StandaloneError(f"the audit of party {audit.settings.party_id} did not catch up")
