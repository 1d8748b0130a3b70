"""hetero_lr across two parties as separate processes: each party's gateway (signed link) and
worker on RabbitMQ (a vhost per party) and PostgreSQL (a database per party), set up by the
local launcher's functions; the test plays both schedulers (task.run to each worker). The
host's worker is SIGKILLed in the middle of training and started again (with the party's
checkpoint key, which opens the sealed Paillier key in the checkpoint): the job ends with the
weights of the plaintext reference of the default protocol (the separable sigmoid, one host)
on the rows as psi ordered them (within 1e-6), as an uninterrupted run ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore
from fedflow.components.hetero_lr.math import reference_sgd
from fedflow.tables import read_table

from fedmq import local
from tests.worker.conftest import StartWorker, WorkerProcess
from tests.worker.two_parties import (
    DATA,
    GUEST,
    HOST,
    ROLES,
    TABLES,
    Schedulers,
    gateways,
    upload_breast,
)
from tests.worker.two_parties import start_party_worker as start_worker_of

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

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
    with gateways(amqp_url, pg_admin_url, redis_url, label="hetero-lr") as state:
        yield state


def start_party_worker(
    launch: StartWorker, state: local.LocalState, party: str, tables_dir: Path
) -> WorkerProcess:
    return start_worker_of(launch, state, party, tables_dir, checkpoint_key=CHECKPOINT_KEYS[party])


def test_hetero_lr_across_processes_survives_a_killed_worker_with_the_same_weights(
    stack: local.LocalState,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    # Prepare: each party's table in its own store; both workers; reader and psi done
    tables_dirs = {party: tmp_path / f"tables-{party}" for party in ROLES}
    upload_breast(stack, tables_dirs)
    workers = {
        party: start_party_worker(start_worker, stack, party, tables_dirs[party]) for party in ROLES
    }
    schedulers = Schedulers(stack, JOB, PIPELINE)
    try:
        schedulers.run_to_end(
            "reader_0",
            "reader",
            {GUEST: {"table": TABLES[GUEST]}, HOST: {"table": TABLES[HOST]}},
            {},
        )
        schedulers.run_to_end("psi_0", "psi", {}, {"data": "reader_0.data"})

        # Execute: hetero_lr (2048-bit keys); SIGKILL the host's worker a third of the way in
        restarted = schedulers.run_killing_a_worker(
            "lr_0",
            "hetero_lr",
            LR_PARAMS,
            {"data": "psi_0.data"},
            victim=workers[HOST],
            party=HOST,
            restart=lambda: start_party_worker(start_worker, stack, HOST, tables_dirs[HOST]),
            kill_timeout=180,
            end_timeout=300,
        )

        # Assert: both succeeded, the host resumed from a checkpoint, weights as uninterrupted
        assert [schedulers.final(p, "lr_0").state for p in ROLES] == ["success", "success"]  # type: ignore[union-attr]
        resumed = restarted.wait_for("task_resuming", timeout=5)
        assert resumed["component"] == "lr_0" and resumed["iteration"] >= 0
        got = {}
        for party, role in ROLES.items():
            engine = make_engine(stack.parties[party].database_url)
            got[party] = ArtifactStore(engine).get(JOB, party, role, "lr_0.model")
            if party == GUEST:
                got["psi"] = ArtifactStore(engine).get(JOB, party, role, "psi_0.data")
            engine.dispose()
        rows = got["psi"].ids
        # The plaintext reference (the default sigmoid: separable with one host) on the rows
        # in the order psi gave hetero_lr (the same at both parties)
        guest = read_table(DATA / f"{TABLES[GUEST]}.csv").align_to(rows)
        host = read_table(DATA / f"{TABLES[HOST]}.csv", label_column=None).align_to(rows)
        assert guest.labels is not None
        expected_g, expected_h, _ = reference_sgd(
            guest.features, host.features, guest.labels, LR_PARAMS
        )
        assert got[GUEST].ids.tolist() == [*guest.feature_names, "intercept"]
        assert got[HOST].ids.tolist() == host.feature_names
        np.testing.assert_allclose(got[GUEST].features[:, 0], expected_g, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got[HOST].features[:, 0], expected_h, rtol=0, atol=1e-6)
        assert restarted.terminate() == 0
    finally:
        schedulers.close()
