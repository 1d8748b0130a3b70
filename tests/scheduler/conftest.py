"""A federation of schedulers in one process: memory buses, SQLite, a relay, fake workers.

Each party gets its own in-memory broker (memory://<unique>-<party>), its own SQLite file and a
real `Scheduler` (consumer, inbox, RPC server, timer). `Relay` plays both gateways: it drains
`out.<party>` on every broker and publishes the envelope bytes, unchanged, on the destination
party's broker at the topic its type routes to (job.*/task.* -> svc.scheduler), as the
gateways do (without the signing, which tests/gateway covers). `FakeWorker` consumes
svc.worker: it records task.run and task.cancel, reads the reader's table from a fedflow
TableStore (so a test can count reads), and answers with task.status as its script says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fedbus import Bus, Delivery, Message, connect
from fedbus.runtime import EnvelopePublisher
from fedflow.tables import TableStore
from fedscheduler import store
from fedscheduler.main import Scheduler
from fedscheduler.rpc import SchedulerClient
from fedscheduler.settings import SchedulerSettings
from fedschemas import Envelope, PartyRef, decode_envelope, decode_payload, new_envelope
from fedschemas.payloads import TaskCancel, TaskRun, TaskStatus

from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DATA = REPO / "examples" / "data"
GUEST, HOST = "9999", "10000"

PSI_EVAL = (REPO / "examples" / "pipelines" / "psi_eval.yaml").read_text()
"""The example PSI + evaluation pipeline (the one tests/local_stack.py runs end to end)."""

ROUTES = {"job.": "svc.scheduler", "task.": "svc.scheduler"}


class Relay:
    """Both gateways at once: out.<dst> on src's broker -> dst's broker, by type prefix."""

    def __init__(self, buses: dict[str, Bus]) -> None:
        self.buses = buses
        self.crossed: list[Envelope] = []
        self._lock = threading.Lock()
        self._subs: list[Any] = []

    def start(self) -> None:
        for src, bus in self.buses.items():
            for dst in self.buses:
                if dst != src:
                    bus.declare(f"out.{dst}")
                    self._subs.append(bus.subscribe(f"out.{dst}", self._forward(dst)))

    def _forward(self, dst: str) -> Callable[[Delivery], None]:
        def forward(delivery: Delivery) -> None:
            envelope = decode_envelope(delivery.body)
            topic = next(t for prefix, t in ROUTES.items() if envelope.type.startswith(prefix))
            self.buses[dst].declare(topic)
            self.buses[dst].publish(
                Message(topic=topic, body=delivery.body, message_id=delivery.message_id)
            )
            with self._lock:
                self.crossed.append(envelope)

        return forward

    def of_type(self, type_name: str) -> list[Envelope]:
        with self._lock:
            return [e for e in self.crossed if e.type == type_name]

    def stop(self) -> None:
        for sub in self._subs:
            sub.cancel()


Script = Callable[[TaskRun], tuple[str, str | None] | None]
"""task.run -> (final state, reason) to report after "running", or None to hold the task."""


def succeed(_run: TaskRun) -> tuple[str, str | None]:
    return ("success", None)


def hold_psi(run: TaskRun) -> tuple[str, str | None] | None:
    """Hold psi_0 (it runs until canceled); every other component succeeds."""
    return None if run.component == "psi_0" else ("success", None)


@dataclass
class FakeWorker:
    party_id: str
    bus: Bus
    tables: TableStore
    script: Script = succeed
    runs: list[TaskRun] = field(default_factory=list)
    run_envelopes: list[Envelope] = field(default_factory=list)
    cancels: list[TaskCancel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._publisher = EnvelopePublisher(self.bus, PartyRef(party_id=self.party_id, role="host"))
        self._lock = threading.Lock()
        self._sub: Any = None

    def start(self) -> None:
        self.bus.declare("svc.worker")
        self.bus.declare("svc.scheduler")
        self._sub = self.bus.subscribe("svc.worker", self._handle)

    def stop(self) -> None:
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None

    def _handle(self, delivery: Delivery) -> None:
        envelope = decode_envelope(delivery.body)
        payload = decode_payload(envelope)
        if isinstance(payload, TaskCancel):
            with self._lock:
                self.cancels.append(payload)
            self.report(payload.job_id, payload.component, payload.attempt, "canceled", seq=9)
            return
        assert isinstance(payload, TaskRun)
        with self._lock:
            self.runs.append(payload)
            self.run_envelopes.append(envelope)
        if payload.component_type == "reader":
            self.tables.read(str(payload.params["table"]))
        self.report(payload.job_id, payload.component, payload.attempt, "running", seq=1)
        outcome = self.script(payload)
        if outcome is not None:
            state, reason = outcome
            outputs = (
                {"data": f"{payload.job_id}/{payload.component}"} if state == "success" else None
            )
            self.report(
                payload.job_id,
                payload.component,
                payload.attempt,
                state,
                seq=2,
                reason=reason,
                outputs=outputs,
            )

    def report(
        self,
        job_id: str,
        component: str,
        attempt: int,
        state: str,
        *,
        seq: int,
        reason: str | None = None,
        outputs: dict[str, str] | None = None,
        progress: float | None = None,
    ) -> None:
        me = PartyRef(party_id=self.party_id, role="host")
        status = TaskStatus(
            job_id=job_id,
            component=component,
            attempt=attempt,
            party_id=self.party_id,
            state=state,  # type: ignore[arg-type]
            reason=reason,
            progress=progress,
            outputs=outputs,
        )
        envelope = new_envelope(
            status,
            job_id=job_id,
            component=component,
            task_id=f"{job_id}:{component}:{attempt}",
            attempt=attempt,
            source=me,
            destination=me,
            tag="task.status",
            iteration=-1,
            seq=seq,
            created_at=datetime.now(UTC),
        )
        self._publisher.send("svc.scheduler", envelope)

    def components_run(self, job_id: str, attempt: int | None = None) -> list[str]:
        with self._lock:
            return [
                r.component
                for r in self.runs
                if r.job_id == job_id and (attempt is None or r.attempt == attempt)
            ]


@dataclass
class Federation:
    schedulers: dict[str, Scheduler]
    workers: dict[str, FakeWorker]
    buses: dict[str, Bus]
    relay: Relay

    def client(self, party: str) -> SchedulerClient:
        return SchedulerClient(self.buses[party], party, timeout=10.0)

    def job(self, party: str, job_id: str) -> dict[str, Any]:
        return self.client(party).status(job_id)

    def wait_state(
        self, party: str, job_id: str, state: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            try:
                view = self.job(party, job_id)
            except Exception:
                return None
            return view if view["state"] == state else None

        return wait_for(check, timeout, f"job {job_id} {state} at party {party}")

    def stop_site_until_failed(
        self, stopped: str, watcher: str, job_id: str, timeout: float
    ) -> tuple[dict[str, Any], float]:
        """Stops `stopped`'s scheduler and worker (its site dies) and waits for the job to fail
        at `watcher`: the failed job's view and the seconds from the stop to the failure."""
        self.schedulers[stopped].stop()
        self.workers[stopped].stop()
        stopped_at = time.monotonic()
        failed = self.wait_state(watcher, job_id, "failed", timeout=timeout)
        return failed, time.monotonic() - stopped_at


def submit_held_psi(
    federation_factory: Callable[..., Federation], job_id: str, **settings: Any
) -> Federation:
    """A federation (scheduler `settings` as given) where the guest submitted PSI_EVAL as
    `job_id`, whose psi never finishes at either party."""
    fed = federation_factory(scripts={GUEST: hold_psi, HOST: hold_psi}, **settings)
    fed.client(GUEST).submit(PSI_EVAL, job_id=job_id)
    return fed


def held_psi_job(
    federation_factory: Callable[..., Federation], job_id: str, **settings: Any
) -> Federation:
    """submit_held_psi, returning once the host runs psi_0."""
    fed = submit_held_psi(federation_factory, job_id, **settings)
    wait_for(lambda: "psi_0" in fed.workers[HOST].components_run(job_id))
    return fed


PARTY_TIMEOUT_S = 1.0
"""The party timeout of the timeout tests' federations (heartbeats every 0.2 s)."""


def timed_psi_job(federation_factory: Callable[..., Federation], job_id: str) -> Federation:
    """held_psi_job under a party timeout of PARTY_TIMEOUT_S, heartbeats every 0.2 s."""
    return held_psi_job(
        federation_factory, job_id, party_timeout_s=PARTY_TIMEOUT_S, heartbeat_interval_s=0.2
    )


@pytest.fixture
def federation_factory(tmp_path: Path, unique_name: str) -> Iterator[Callable[..., Federation]]:
    made: list[Federation] = []

    def make(
        parties: tuple[str, ...] = (GUEST, HOST),
        *,
        scripts: dict[str, Script] | None = None,
        start: tuple[str, ...] | None = None,
        database_urls: dict[str, str] | None = None,
        grants: list[tuple[str, str, str, list[str]]] | None = None,
        **settings: Any,
    ) -> Federation:
        buses = {p: connect(f"memory://{unique_name}-{p}") for p in parties}
        relay = Relay(buses)
        relay.start()
        schedulers: dict[str, Scheduler] = {}
        workers: dict[str, FakeWorker] = {}
        for p in parties:
            db = (database_urls or {}).get(p) or f"sqlite:///{tmp_path / p / 'scheduler.db'}"
            options: dict[str, Any] = {
                "party_id": p,
                "bus_url": f"memory://{unique_name}-{p}",
                "database_url": db,
                "http_port": -1,
                "timer_interval_s": 0.05,
                "log_json": False,
            }
            options.update(settings)
            schedulers[p] = Scheduler(SchedulerSettings(**options), bus=buses[p])
            engine = sa.create_engine(f"sqlite:///{tmp_path / p / 'tables.db'}")
            tables = TableStore(engine, tmp_path / p / "tables")
            for name in ("breast_hetero_guest", "breast_hetero_host"):
                label = "y" if name.endswith("guest") else None
                tables.upload(name, EXAMPLE_DATA / f"{name}.csv", label_column=label)
            workers[p] = FakeWorker(p, buses[p], tables, (scripts or {}).get(p, succeed))
            workers[p].start()
        # Default: the host lets the guest's jobs read its table into psi (what PSI_EVAL needs).
        default_grants = [(HOST, "breast_hetero_host", GUEST, ["psi"])] if HOST in parties else []
        for party, table, grantee, types in default_grants if grants is None else grants:
            with schedulers[party].sessions.begin() as session:
                store.add_grant(session, table, grantee, types, datetime.now(UTC))
        for p in start if start is not None else parties:
            schedulers[p].start()
        fed = Federation(schedulers, workers, buses, relay)
        made.append(fed)
        return fed

    yield make
    for fed in made:
        fed.relay.stop()
        for worker in fed.workers.values():
            worker.stop()
        for scheduler in fed.schedulers.values():
            scheduler.stop()
        for bus in fed.buses.values():
            bus.close()
