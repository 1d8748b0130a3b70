"""hetero_secureboost across two parties as separate processes: each party's gateway (signed
link) and worker on RabbitMQ (a vhost per party) and PostgreSQL (a database per party); the
test plays both schedulers (task.run to each worker). The host's worker is SIGKILLed in the
middle of training (a third of the levels done) and started again with the party's checkpoint
key: the job ends with exactly the plaintext reference's model, and hetero_secureboost_predict
then scores the rows as the reference does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore, ModelArtifact
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.params import HeteroSecureBoostParams

from fedmq import local
from tests.relay_helpers import gateway_federation
from tests.secureboost.data import example
from tests.worker.conftest import StartWorker, WorkerProcess
from tests.worker.two_parties import GUEST, HOST, ROLES, TABLES, Schedulers, upload_breast
from tests.worker.two_parties import start_party_worker as start_worker_of

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

JOB = "job-secureboost"
CHECKPOINT_KEYS = {party: os.urandom(32).hex() for party in ROLES}
BOOST_PARAMS = {"num_trees": 2, "max_depth": 3, "max_bin": 16, "seed": 3}
PIPELINE = f"""
name: secureboost-processes
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
  - name: boost_0
    type: hetero_secureboost
    inputs: {{data: psi_0.data}}
    params:
      common: {{num_trees: 2, max_depth: 3, max_bin: 16, seed: 3}}
  - name: predict_0
    type: hetero_secureboost_predict
    inputs: {{model: boost_0.model, data: psi_0.data}}
"""


@pytest.fixture(scope="module")
def stack(amqp_url: str, pg_admin_url: str, redis_url: str) -> Iterator[local.LocalState]:
    """Both parties' gateways; broker users for the services this test runs only (the
    gateway and the worker), not for every service `fedmq local` would start."""
    with gateway_federation(
        [GUEST, HOST],
        amqp_url=amqp_url,
        redis_url=redis_url,
        pg_admin_url=pg_admin_url,
        label="secureboost",
        start=True,
        services=("gateway", "worker"),
    ) as state:
        yield state


def start_party_worker(
    launch: StartWorker, state: local.LocalState, party: str, tables_dir: Path
) -> WorkerProcess:
    return start_worker_of(launch, state, party, tables_dir, checkpoint_key=CHECKPOINT_KEYS[party])


def _artifact(state: local.LocalState, party: str, ref: str) -> object:
    engine = make_engine(state.parties[party].database_url)
    try:
        return ArtifactStore(engine).get_artifact(JOB, party, ROLES[party], ref)
    finally:
        engine.dispose()


def test_secureboost_across_processes_survives_a_killed_worker_with_the_reference_model(
    stack: local.LocalState, start_worker: StartWorker, tmp_path: Path
) -> None:
    # Prepare: each party's table in its own store; both workers; reader and psi done
    tables_dirs = {party: tmp_path / f"tables-{party}" for party in ROLES}
    upload_breast(stack, tables_dirs)
    with ThreadPoolExecutor(len(ROLES)) as pool:  # both start at once (each waits for ready)
        started = {
            party: pool.submit(start_party_worker, start_worker, stack, party, tables_dirs[party])
            for party in ROLES
        }
        workers = {party: future.result() for party, future in started.items()}
    schedulers = Schedulers(stack, JOB, PIPELINE)
    try:
        schedulers.run_to_end(
            "reader_0",
            "reader",
            {GUEST: {"table": TABLES[GUEST]}, HOST: {"table": TABLES[HOST]}},
            {},
        )
        schedulers.run_to_end("psi_0", "psi", {}, {"data": "reader_0.data"})

        # Execute: hetero_secureboost (2048-bit key); SIGKILL the host's worker mid-training
        restarted = schedulers.run_killing_a_worker(
            "boost_0",
            "hetero_secureboost",
            BOOST_PARAMS,
            {"data": "psi_0.data"},
            victim=workers[HOST],
            party=HOST,
            restart=lambda: start_party_worker(start_worker, stack, HOST, tables_dirs[HOST]),
            kill_timeout=180,
            end_timeout=300,
        )
        schedulers.run_to_end(
            "predict_0",
            "hetero_secureboost_predict",
            {},
            {"model": "boost_0.model", "data": "psi_0.data"},
        )

        # Assert: both succeeded after a resume, and the model and scores are the reference's
        assert [schedulers.final(p, "boost_0").state for p in ROLES] == ["success", "success"]  # type: ignore[union-attr]
        resumed = restarted.wait_for("task_resuming", timeout=5)
        assert resumed["component"] == "boost_0"
        guest, host = example("breast")
        order = np.argsort(guest.ids)  # psi keeps the rows sorted by id
        assert guest.labels is not None
        blocks = [np.asarray(guest.features)[order], np.asarray(host.features)[order]]
        params = HeteroSecureBoostParams.model_validate(BOOST_PARAMS)
        reference = sbmath.fit(blocks, np.asarray(guest.labels)[order], params)
        model = _artifact(stack, GUEST, "boost_0.model")
        assert isinstance(model, ModelArtifact)
        np.testing.assert_array_equal(
            model.arrays["trees/weight"], np.stack([t.weight for t in reference.trees])
        )
        scores = _artifact(stack, GUEST, "predict_0.data")
        np.testing.assert_array_equal(scores.features[:, 0], reference.predict(blocks))  # type: ignore[attr-defined]
        assert restarted.terminate() == 0
    finally:
        schedulers.close()
