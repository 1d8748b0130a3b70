"""homo_lr across two parties as separate processes: each party's gateway (signed link) and
worker on RabbitMQ (a vhost per party) and PostgreSQL (a database per party), set up by the
local launcher's functions; the test plays both schedulers (task.run to each worker). Every
secure-aggregation message crosses the gateways. A party's worker is SIGKILLed mid-round (once
the host's key shares of round 1 are out) and started again: its task resumes from its
checkpoint (mid-round state included) and both parties end with FedAvg's model, the model of an
uninterrupted run with the same seed.

By default the guest's worker is killed (the aggregator, and a client too) and kept down
longer than the host worker's receive timeout (4 s): the host waits again with backoff
(`aggregator_unreachable`) instead of failing, and the round goes on once the aggregator is
back. With FEDMQ_HOMO_FULL=1 the host's worker is killed as well, in a second job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore
from fedflow.components.homo_lr import math as hmath
from fedflow.db import create_flow_tables

from fedmq import local
from tests.homo.conftest import load, parts, training
from tests.polling import wait_until
from tests.worker.conftest import StartWorker, WorkerProcess
from tests.worker.conftest import start_worker as start_worker
from tests.worker.two_parties import GUEST, HOST, ROLES, Schedulers, gateways, start_party_worker

FULL = os.environ.get("FEDMQ_HOMO_FULL") == "1"
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

JOB = "job-homo-lr"
TABLES = {GUEST: "breast_homo_guest", HOST: "breast_homo_host"}
ROUNDS = 3
PARAMS = {
    "rounds": ROUNDS,
    "batch_size": 32,
    "learning_rate": 0.1,
    "alpha": 0.01,
    "seed": 5,
    "round_timeout_s": 120.0,
}
HOST_RECV_TIMEOUT_S = "4"
"""The host worker's receive timeout: shorter than the guest worker's restart (>= 4 s here)."""
PIPELINE = f"""
name: homo-lr-processes
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: {TABLES[GUEST]}}}
      host: {{table: {TABLES[HOST]}}}
  - name: homo_lr_0
    type: homo_lr
    inputs: {{data: reader_0.data}}
    params:
      common: {{rounds: {ROUNDS}, batch_size: 32, learning_rate: 0.1, alpha: 0.01, seed: 5}}
"""


@pytest.fixture(scope="module")
def stack(amqp_url: str, pg_admin_url: str, redis_url: str) -> Iterator[local.LocalState]:
    with gateways(amqp_url, pg_admin_url, redis_url, label="homo-lr") as state:
        yield state


@pytest.mark.parametrize(
    "victim",
    [
        GUEST,
        pytest.param(HOST, marks=pytest.mark.skipif(not FULL, reason="FEDMQ_HOMO_FULL=1 runs it")),
    ],
)
def test_a_party_killed_mid_job_resumes_and_both_end_with_fedavgs_model(
    stack: local.LocalState, start_worker: StartWorker, tmp_path: Path, victim: str
) -> None:
    # Prepare: each party's rows (with labels) stored as its reader's output, as a finished
    # reader_0 would leave them (the reader itself is tested elsewhere); both workers
    job = f"{JOB}-{victim}"
    tables_dirs = {party: tmp_path / f"tables-{party}" for party in ROLES}
    for party, role in ROLES.items():
        engine = make_engine(stack.parties[party].database_url)
        create_flow_tables(engine)
        ArtifactStore(engine).put(job, "reader_0", party, role, "data", load(TABLES[party]), 0)
        engine.dispose()
    # A checkpoint key per party (the same for a restarted worker): a worker killed mid-round
    # resumes from sealed secure-aggregation state, which opens only with it.
    keys = {party: f"homo-lr-test-checkpoint-key-{party}" * 2 for party in ROLES}
    settings = {
        HOST: {"recv_timeout_s": HOST_RECV_TIMEOUT_S, "checkpoint_key": keys[HOST]},
        GUEST: {"checkpoint_key": keys[GUEST]},
    }
    with ThreadPoolExecutor(2) as pool:  # both start at once: most of this test's time
        started = {
            party: pool.submit(
                start_party_worker,
                start_worker,
                stack,
                party,
                tables_dirs[party],
                **settings[party],
            )
            for party in ROLES
        }
    workers = {party: future.result() for party, future in started.items()}
    schedulers = Schedulers(stack, job, PIPELINE)
    expected = hmath.reference_fedavg(
        parts([load(TABLES[GUEST]), load(TABLES[HOST])]), training(PARAMS), ROUNDS
    )
    host = workers[HOST]
    waits_before_kill: list[int] = []

    def restart() -> WorkerProcess:
        if victim == GUEST:  # the aggregator stays down until the host's receive timed out
            waits_before_kill.append(len(host.events("aggregator_unreachable")))
            wait_until(
                lambda: len(host.events("aggregator_unreachable")) > waits_before_kill[0],
                timeout=60,
                what="the host to time out waiting for the aggregator and wait again",
            )
        return start_party_worker(
            start_worker, stack, victim, tables_dirs[victim], **settings[victim]
        )

    try:
        # Execute: SIGKILL the victim's worker mid-round: once the host's key shares of round 1
        # are out (the aggregator cannot finish round 1 before it routes them back)
        schedulers.run("homo_lr_0", "homo_lr", PARAMS, {"data": "reader_0.data"})
        host.wait_for("shares_sent", timeout=120, round=1)
        workers[victim].kill()
        restarted = restart()
        schedulers.wait_end("homo_lr_0", timeout=240)

        # Assert: both succeeded, the victim resumed from its checkpoint within round 1
        # (iteration 0: the end of round 0 or a step of round 1), FedAvg's model at both
        assert [schedulers.final(p, "homo_lr_0").state for p in ROLES] == ["success"] * 2  # type: ignore[union-attr]
        resumed = restarted.wait_for("task_resuming", timeout=5)
        assert resumed["component"] == "homo_lr_0" and resumed["iteration"] == 0
        for party, role in ROLES.items():
            engine = make_engine(stack.parties[party].database_url)
            model = ArtifactStore(engine).get(job, party, role, "homo_lr_0.model")
            engine.dispose()
            np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)
        if victim == GUEST:  # the host rode out the aggregator's absence: it did not fail
            assert host.events("aggregator_unreachable")[-1]["left_s"] > 0
            assert host.proc.poll() is None
        assert restarted.terminate() == 0
    finally:
        schedulers.close()
