"""Two parties' gateways (signed link) on RabbitMQ and PostgreSQL, with the test playing both
schedulers, for tests that run real worker processes across parties (resume after a kill).

`gateways(...)` sets up what the local launcher would (a vhost and a database per party, the
PKI, both gateways running) and removes it again; `Schedulers` sends task.run to each party's
worker and collects the task.status reports, as the parties' schedulers would;
`start_party_worker` starts a worker process of one party on its vhost and database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedbus import Bus, Delivery, connect
from fedbus.runtime import EnvelopePublisher
from fedbus.sql_inbox import make_engine
from fedflow.tables import TableStore
from fedschemas import PartyRef, decode_envelope, decode_payload, new_envelope
from fedschemas.payloads import TaskRun, TaskStatus

from fedmq import local
from tests.polling import wait_until
from tests.relay_helpers import gateway_federation
from tests.worker.conftest import StartWorker, WorkerProcess

GUEST, HOST = "9999", "10000"
ROLES = {GUEST: "guest", HOST: "host"}
PARTIES = {"guest": [GUEST], "host": [HOST]}
DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
TABLES = {GUEST: "breast_hetero_guest", HOST: "breast_hetero_host"}


def gateways(
    amqp_url: str, pg_admin_url: str, redis_url: str, *, label: str
) -> AbstractContextManager[local.LocalState]:
    """Both parties' vhosts, databases, PKI and running gateways."""
    return gateway_federation(
        [GUEST, HOST],
        amqp_url=amqp_url,
        redis_url=redis_url,
        pg_admin_url=pg_admin_url,
        label=label,
        start=True,
    )


def upload_breast(state: local.LocalState, tables_dirs: dict[str, Path]) -> None:
    """Each party's half of the breast data, in its own table store."""
    for party in ROLES:
        engine = make_engine(state.parties[party].database_url)
        TableStore(engine, tables_dirs[party]).upload(
            TABLES[party],
            DATA / f"{TABLES[party]}.csv",
            label_column="y" if party == GUEST else None,
            replace=True,
        )
        engine.dispose()


class Schedulers:
    """Plays each party's scheduler: sends task.run to its worker, collects task.status."""

    def __init__(
        self,
        state: local.LocalState,
        job_id: str,
        pipeline_yaml: str,
        roles: Mapping[str, str] = ROLES,
    ) -> None:
        """`roles`: party id -> role of every party in the job (default: GUEST and HOST)."""
        self.job_id = job_id
        self.pipeline_yaml = pipeline_yaml
        self.roles = dict(roles)
        self.parties: dict[str, list[str]] = {}
        for party, role in self.roles.items():
            self.parties.setdefault(role, []).append(party)
        self.buses: dict[str, Bus] = {}
        self.statuses: dict[str, list[TaskStatus]] = {party: [] for party in self.roles}
        self.lock = threading.Lock()
        for party in self.roles:
            bus = connect(state.parties[party].bus_url)
            outs = [f"out.{p}" for p in self.roles]
            for topic in ("svc.worker", "svc.scheduler", *outs):
                bus.declare(topic)
            bus.subscribe("svc.scheduler", self._collector(party))
            self.buses[party] = bus

    def _collector(self, party: str) -> Any:
        def collect(delivery: Delivery) -> None:
            envelope = decode_envelope(delivery.body)
            if envelope.type != "task.status":
                return  # task.metrics: the scheduler's read model, not a status
            status = decode_payload(envelope, TaskStatus)
            with self.lock:
                self.statuses[party].append(status)

        return collect

    def run(
        self, component: str, ctype: str, params: dict[str, Any], inputs: dict[str, str]
    ) -> None:
        """task.run of `component` to every party's worker; `params` may be per party."""
        for party, role in self.roles.items():
            me = PartyRef(party_id=party, role=role)  # type: ignore[arg-type]
            payload = TaskRun(
                job_id=self.job_id,
                component=component,
                component_type=ctype,
                attempt=0,
                role=role,
                party_id=party,
                parties=self.parties,
                params=params.get(party, params),
                inputs=inputs,
                pipeline_yaml=self.pipeline_yaml,
            )
            envelope = new_envelope(
                payload,
                job_id=self.job_id,
                component=component,
                task_id=f"{self.job_id}.{component}",
                attempt=0,
                source=me,
                destination=me,
                tag="task.run",
                iteration=-1,
                seq=0,
                created_at=datetime.now(UTC),
            )
            EnvelopePublisher(self.buses[party], me).send("svc.worker", envelope)

    def of(self, party: str, component: str) -> list[TaskStatus]:
        with self.lock:
            return [s for s in self.statuses[party] if s.component == component]

    def final(self, party: str, component: str) -> TaskStatus | None:
        ended = [s for s in self.of(party, component) if s.state != "running"]
        return ended[0] if ended else None

    def progress(self, party: str, component: str) -> float:
        return max((s.progress or 0.0 for s in self.of(party, component)), default=0.0)

    def wait_end(self, component: str, timeout: float) -> None:
        """Until `component` reported its final state at every party."""
        wait_until(
            lambda: all(self.final(p, component) is not None for p in self.roles),
            timeout=timeout,
            what=f"{component} to end at both parties",
        )

    def run_to_end(
        self, component: str, ctype: str, params: dict[str, Any], inputs: dict[str, str]
    ) -> None:
        self.run(component, ctype, params, inputs)
        self.wait_end(component, timeout=120)
        assert [self.final(p, component).state for p in self.roles] == ["success"] * len(self.roles)  # type: ignore[union-attr]

    def run_killing_a_worker(
        self,
        component: str,
        ctype: str,
        params: dict[str, Any],
        inputs: dict[str, str],
        *,
        victim: WorkerProcess,
        party: str,
        restart: Callable[[], WorkerProcess],
        kill_timeout: float,
        end_timeout: float,
    ) -> WorkerProcess:
        """Run `component`; SIGKILL `party`'s worker `victim` once the party reported a third of
        the progress, start a new one with `restart`, and wait for the end at both parties.
        Returns the restarted worker."""
        self.run(component, ctype, params, inputs)
        wait_until(
            lambda: self.progress(party, component) >= 0.3,
            timeout=kill_timeout,
            what=f"a third of {component} at {party}",
        )
        victim.kill()
        killed_at = self.progress(party, component)
        assert killed_at < 1.0
        restarted = restart()
        self.wait_end(component, timeout=end_timeout)
        return restarted

    def close(self) -> None:
        for bus in self.buses.values():
            bus.close()


def start_party_worker(
    launch: StartWorker,
    state: local.LocalState,
    party: str,
    tables_dir: Path,
    **settings: str,
) -> WorkerProcess:
    """A worker process of `party` on its vhost and database; `settings` add to its own.

    It connects as its own broker user, as `fedmq local` starts it: its guard then trusts the
    party's gateway user, which publishes the other party's envelopes (on the shared user it
    would trust only that user and dead-letter everything the gateway relays)."""
    plan = state.parties[party]
    return launch(
        party_id=party,
        bus_url=local.service_bus_url(state, party, "worker"),
        database_url=plan.database_url,
        data_dir=str(tables_dir),
        task_lease_s="3",
        task_poll_s="0.2",
        progress_interval_s="0",
        log_level="INFO",
        **settings,
    )
