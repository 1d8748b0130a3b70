"""hetero_lr across two parties as separate processes: each party's gateway (signed link) and
worker on RabbitMQ (a vhost per party) and PostgreSQL (a database per party), set up by the
local launcher's functions; the test plays both schedulers (task.run to each worker). The
host's worker is SIGKILLed in the middle of training and started again (with the party's
checkpoint key, which opens the sealed Paillier key in the checkpoint): the job ends with the
weights of the same pipeline run uninterrupted in standalone mode (within 1e-6).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedbus import Bus, Delivery, connect
from fedbus.runtime import EnvelopePublisher
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline
from fedflow.tables import TableStore
from fedschemas import PartyRef, decode_envelope, decode_payload, new_envelope
from fedschemas.payloads import TaskRun, TaskStatus

from fedmq import local
from tests.runtime.helpers import wait_until
from tests.worker.conftest import StartWorker, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

GUEST, HOST = "9999", "10000"
ROLES = {GUEST: "guest", HOST: "host"}
PARTIES = {"guest": [GUEST], "host": [HOST]}
DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
TABLES = {GUEST: "breast_hetero_guest", HOST: "breast_hetero_host"}
JOB = "job-hetero-lr"
# Each party's checkpoint key (FEDMQ_WORKER_CHECKPOINT_KEY): the restarted worker must open the
# Paillier key its predecessor sealed into the checkpoint.
CHECKPOINT_KEYS = {party: os.urandom(32).hex() for party in ROLES}
LR_PARAMS = {"epochs": 6, "batch_size": 128, "learning_rate": 0.5, "alpha": 0.01, "seed": 2}
PIPELINE = f"""
name: hetero-lr-processes
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: {TABLES[GUEST]}}}
      host: {{table: {TABLES[HOST]}}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: lr_0
    type: hetero_lr
    inputs: {{data: psi_0.data}}
    params:
      common: {{epochs: 6, batch_size: 128, learning_rate: 0.5, alpha: 0.01, seed: 2}}
"""


@pytest.fixture(scope="module")
def stack(amqp_url: str, pg_admin_url: str, redis_url: str) -> Iterator[local.LocalState]:
    """Both parties' vhosts, databases, PKI and running gateways."""
    root = Path(tempfile.mkdtemp(prefix="fedmq-hetero-lr-"))
    state = local.plan(
        [GUEST, HOST],
        root,
        prefix=f"fedmql{uuid.uuid4().hex[:8]}",
        federation="test",
        amqp_url=amqp_url.rsplit("/", 1)[0],
        redis_url=redis_url.rsplit("/", 1)[0],
        pg_admin_url=pg_admin_url,
    )
    local.prepare(state)
    try:
        for party in (HOST, GUEST):
            local.start_service(state, party, "gateway")
        for party in (HOST, GUEST):
            local.wait_healthy(state, party, timeout=90)
        yield state
    finally:
        for party in state.parties:
            local.stop_service(state, party, "gateway", timeout=10)
        for p in state.parties.values():
            local.delete_vhost(p.vhost)
            local.drop_database(pg_admin_url, p.database)
        shutil.rmtree(root, ignore_errors=True)


class Schedulers:
    """Plays each party's scheduler: sends task.run to its worker, collects task.status."""

    def __init__(self, state: local.LocalState) -> None:
        self.buses: dict[str, Bus] = {}
        self.statuses: dict[str, list[TaskStatus]] = {GUEST: [], HOST: []}
        self.lock = threading.Lock()
        for party in ROLES:
            bus = connect(state.parties[party].bus_url)
            for topic in ("svc.worker", "svc.scheduler", f"out.{GUEST}", f"out.{HOST}"):
                bus.declare(topic)
            bus.subscribe("svc.scheduler", self._collector(party))
            self.buses[party] = bus

    def _collector(self, party: str) -> Any:
        def collect(delivery: Delivery) -> None:
            status = decode_payload(decode_envelope(delivery.body), TaskStatus)
            with self.lock:
                self.statuses[party].append(status)

        return collect

    def run(
        self, component: str, ctype: str, params: dict[str, Any], inputs: dict[str, str]
    ) -> None:
        for party, role in ROLES.items():
            me = PartyRef(party_id=party, role=role)  # type: ignore[arg-type]
            payload = TaskRun(
                job_id=JOB,
                component=component,
                component_type=ctype,
                attempt=0,
                role=role,
                party_id=party,
                parties=PARTIES,
                params=params.get(party, params),
                inputs=inputs,
                pipeline_yaml=PIPELINE,
            )
            envelope = new_envelope(
                payload,
                job_id=JOB,
                component=component,
                task_id=f"{JOB}.{component}",
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

    def run_to_end(
        self, component: str, ctype: str, params: dict[str, Any], inputs: dict[str, str]
    ) -> None:
        self.run(component, ctype, params, inputs)
        wait_until(
            lambda: all(self.final(p, component) is not None for p in ROLES),
            timeout=120,
            what=component,
        )
        assert [self.final(p, component).state for p in ROLES] == ["success", "success"]  # type: ignore[union-attr]

    def close(self) -> None:
        for bus in self.buses.values():
            bus.close()


def start_party_worker(
    launch: StartWorker, state: local.LocalState, party: str, tables_dir: Path
) -> WorkerProcess:
    plan = state.parties[party]
    return launch(
        party_id=party,
        bus_url=plan.bus_url,
        database_url=plan.database_url,
        data_dir=str(tables_dir),
        task_lease_s="3",
        task_poll_s="0.2",
        progress_interval_s="0",
        log_level="INFO",
        checkpoint_key=CHECKPOINT_KEYS[party],
    )


def test_hetero_lr_across_processes_survives_a_killed_worker_with_the_same_weights(
    stack: local.LocalState,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    # Prepare: each party's table in its own store; both workers; reader and psi done
    tables_dirs = {party: tmp_path / f"tables-{party}" for party in ROLES}
    for party in ROLES:
        engine = make_engine(stack.parties[party].database_url)
        TableStore(engine, tables_dirs[party]).upload(
            TABLES[party],
            DATA / f"{TABLES[party]}.csv",
            label_column="y" if party == GUEST else None,
            replace=True,
        )
        engine.dispose()
    workers = {
        party: start_party_worker(start_worker, stack, party, tables_dirs[party]) for party in ROLES
    }
    schedulers = Schedulers(stack)
    try:
        schedulers.run_to_end(
            "reader_0",
            "reader",
            {GUEST: {"table": TABLES[GUEST]}, HOST: {"table": TABLES[HOST]}},
            {},
        )
        schedulers.run_to_end("psi_0", "psi", {}, {"data": "reader_0.data"})

        # Execute: hetero_lr (2048-bit keys); SIGKILL the host's worker a third of the way in
        schedulers.run("lr_0", "hetero_lr", LR_PARAMS, {"data": "psi_0.data"})
        wait_until(
            lambda: schedulers.progress(HOST, "lr_0") >= 0.3,
            timeout=180,
            what="a third of the iterations",
        )
        workers[HOST].kill()
        killed_at = schedulers.progress(HOST, "lr_0")
        assert killed_at < 1.0
        restarted = start_party_worker(start_worker, stack, HOST, tables_dirs[HOST])
        wait_until(
            lambda: all(schedulers.final(p, "lr_0") is not None for p in ROLES),
            timeout=300,
            what="hetero_lr to end at both parties",
        )

        # Assert: both succeeded, the host resumed from a checkpoint, weights as uninterrupted
        assert [schedulers.final(p, "lr_0").state for p in ROLES] == ["success", "success"]  # type: ignore[union-attr]
        resumed = restarted.wait_for("task_resuming", timeout=5)
        assert resumed["component"] == "lr_0" and resumed["iteration"] >= 0
        got = {}
        for party, role in ROLES.items():
            engine = make_engine(stack.parties[party].database_url)
            got[party] = ArtifactStore(engine).get(JOB, party, role, "lr_0.model")
            engine.dispose()
        reference = run_pipeline(
            Pipeline.from_yaml(PIPELINE), {GUEST: DATA, HOST: DATA}, tmp_path / "reference"
        )
        for party, role in ROLES.items():
            expected = reference.output(party, role, "lr_0", "model")
            assert got[party].ids.tolist() == expected.ids.tolist()
            np.testing.assert_allclose(
                got[party].features[:, 0], expected.features[:, 0], rtol=0, atol=1e-6
            )
        assert restarted.terminate() == 0
    finally:
        schedulers.close()
