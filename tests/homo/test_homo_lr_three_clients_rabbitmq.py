"""homo_lr across three client parties as separate processes (each party's gateway with the
signed link, its worker on RabbitMQ and PostgreSQL; the test plays the three schedulers), the
guest aggregating. One host's worker is SIGKILLed mid-round, right after it sent its encrypted
key shares of round 1: the aggregator drops it and completes the round through secure
aggregation's dropout recovery (the two others reveal their shares of its mask key), and the
host's restarted worker resumes its task, rejoins a later round if it is back in time (its
start-up under load can outlast the remaining rounds) and ends with the final model. Every
party ends with the FedAvg model of the clients that were in each round's sum.

The kill test runs with FEDMQ_HOMO_FULL=1 (about 105 s at load 35: three gateways and three
workers start one by one, and the killed one again). A cheaper test runs with
FEDMQ_HOMO_PROCESSES=1: the three workers started at once, two rounds, nobody killed; every
round sums all three clients' masked updates across the processes and every party ends with
FedAvg's model (47 s in all at load 19: the three gateways 13 s, the three workers' start 20 s,
the job 7 s, teardown 6 s; 56 s at load 23-29; 69 s at load 27 on 2026-12-07: set-up 21 s,
the test 43 s, teardown 5 s). Not on by default: it already runs the fewest rounds (2) on
breast's 455 rows, and what it costs is six processes starting (gateways, workers), not rows or
rounds, so fewer rows or rounds cannot bring it under the 35 s a default run may take here.
The standalone three-client tests and the two-party process test cover the same code by
default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore
from fedflow.components.homo_lr import math as hmath
from fedflow.db import create_flow_tables
from fedflow.tables import Table

from fedmq import local
from tests.homo.conftest import load, parts, training
from tests.relay_helpers import gateway_federation
from tests.worker.conftest import StartWorker, WorkerProcess
from tests.worker.conftest import start_worker as start_worker
from tests.worker.two_parties import Schedulers, start_party_worker

FULL = os.environ.get("FEDMQ_HOMO_FULL") == "1"
PROCESSES = os.environ.get("FEDMQ_HOMO_PROCESSES") == "1"
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

GUEST, HOST_A, HOST_B = "9999", "10000", "10001"
ROLES = {GUEST: "guest", HOST_A: "host", HOST_B: "host"}
CLIENT_IDS = {GUEST: 1, HOST_A: 2, HOST_B: 3}
KEYS = {party: {"checkpoint_key": f"homo-three-test-checkpoint-key-{party}" * 2} for party in ROLES}
"""Each party's checkpoint key (the same for its restarted worker): the sealed mid-round
secure-aggregation state opens only with it."""
JOB = "job-homo-lr-three"
ROUNDS = 4
PARAMS = {
    "rounds": ROUNDS,
    "batch_size": 32,
    "learning_rate": 0.1,
    "alpha": 0.01,
    "seed": 7,
    "round_timeout_s": 8.0,
}
PIPELINE = f"""
name: homo-lr-three-clients
parties: {{guest: "{GUEST}", host: ["{HOST_A}", "{HOST_B}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_part}}
      host: {{table: breast_part}}
  - name: homo_lr_0
    type: homo_lr
    inputs: {{data: reader_0.data}}
    params:
      common: {{rounds: {ROUNDS}, seed: 7}}
"""


def _split() -> dict[str, Table]:
    """The breast guest's rows in two halves (the guest and host A), the breast host's rows
    for host B."""
    guest, host = load("breast_homo_guest"), load("breast_homo_host")
    half = guest.rows // 2
    return {
        GUEST: guest.take(np.arange(half)),
        HOST_A: guest.take(np.arange(half, guest.rows)),
        HOST_B: host,
    }


@pytest.fixture(scope="module")
def stack(amqp_url: str, pg_admin_url: str, redis_url: str) -> Iterator[local.LocalState]:
    with gateway_federation(
        [GUEST, HOST_A, HOST_B],
        amqp_url=amqp_url,
        redis_url=redis_url,
        pg_admin_url=pg_admin_url,
        label="homo3",
        start=True,
    ) as state:
        yield state


def _store_tables(stack: local.LocalState, job: str, tables: dict[str, Table]) -> None:
    """Each party's rows stored as its reader's output, as a finished reader_0 leaves them."""
    for party, role in ROLES.items():
        engine = make_engine(stack.parties[party].database_url)
        create_flow_tables(engine)
        ArtifactStore(engine).put(job, "reader_0", party, role, "data", tables[party], 0)
        engine.dispose()


def _models(stack: local.LocalState, job: str) -> dict[str, hmath.Floats]:
    out = {}
    for party, role in ROLES.items():
        engine = make_engine(stack.parties[party].database_url)
        out[party] = ArtifactStore(engine).get(job, party, role, "homo_lr_0.model").features[:, 0]
        engine.dispose()
    return out


@pytest.mark.skipif(not PROCESSES, reason="FEDMQ_HOMO_PROCESSES=1 runs it (about 50 s)")
def test_three_client_processes_sum_their_updates_securely_into_fedavgs_model(
    stack: local.LocalState, start_worker: StartWorker, tmp_path: Path
) -> None:
    # Prepare: the three parties' rows; their workers, started at once
    job, rounds = f"{JOB}-quick", 2
    tables = _split()
    _store_tables(stack, job, tables)
    started = time.perf_counter()
    with ThreadPoolExecutor(len(ROLES)) as pool:
        futures = {
            party: pool.submit(
                start_party_worker, start_worker, stack, party, tmp_path / party, **KEYS[party]
            )
            for party in ROLES
        }
    workers = {party: future.result() for party, future in futures.items()}
    workers_s = time.perf_counter() - started
    schedulers = Schedulers(stack, job, PIPELINE, roles=ROLES)
    try:
        # Execute
        params = {**PARAMS, "rounds": rounds, "round_timeout_s": 60.0}
        schedulers.run("homo_lr_0", "homo_lr", params, {"data": "reader_0.data"})
        schedulers.wait_end("homo_lr_0", timeout=240)
        job_s = time.perf_counter() - started - workers_s
        print(f"three workers started in {workers_s:.1f} s, the job took {job_s:.1f} s")

        # Assert: every party succeeded; every round's sum held all three clients' masked
        # updates; every party holds FedAvg's model of the three
        finals = {p: schedulers.final(p, "homo_lr_0") for p in ROLES}
        states = {p: (f.state, f.reason) for p, f in finals.items() if f is not None}
        assert states == dict.fromkeys(ROLES, ("success", None))
        done = {e["round"]: e["survivors"] for e in workers[GUEST].events("round_done")}
        assert done == {r: [1, 2, 3] for r in range(rounds)}
        ordered = [tables[p] for p in (GUEST, HOST_A, HOST_B)]
        expected = hmath.reference_fedavg(parts(ordered), training(params), rounds)
        for model in _models(stack, job).values():
            np.testing.assert_allclose(model, expected, rtol=0, atol=1e-9)
    finally:
        schedulers.close()


@pytest.mark.skipif(not FULL, reason="FEDMQ_HOMO_FULL=1 runs it (about 100 s)")
def test_three_client_processes_complete_a_round_without_a_client_killed_mid_round(
    stack: local.LocalState, start_worker: StartWorker, tmp_path: Path
) -> None:
    # Prepare: each party's rows stored as its reader's output; the three workers
    tables = _split()
    dirs = {party: tmp_path / f"tables-{party}" for party in ROLES}
    for party, role in ROLES.items():
        engine = make_engine(stack.parties[party].database_url)
        create_flow_tables(engine)
        ArtifactStore(engine).put(JOB, "reader_0", party, role, "data", tables[party], 0)
        engine.dispose()

    def launch(party: str) -> WorkerProcess:
        return start_party_worker(start_worker, stack, party, dirs[party], **KEYS[party])

    workers = {party: launch(party) for party in ROLES}  # one by one: three at once time out
    schedulers = Schedulers(stack, JOB, PIPELINE, roles=ROLES)
    try:
        # Execute: kill host B right after it sent its key shares of round 1; start it again
        schedulers.run("homo_lr_0", "homo_lr", PARAMS, {"data": "reader_0.data"})
        workers[HOST_B].wait_for("shares_sent", timeout=240, round=1)
        workers[HOST_B].kill()
        restarted = launch(HOST_B)
        schedulers.wait_end("homo_lr_0", timeout=300)

        # Assert: the job succeeded at every party; round 1 went on without host B, dropped
        # after it had shared its keys, so its pairwise masks were recovered from the others'
        # shares; host B's task resumed from its checkpoint
        finals = {p: schedulers.final(p, "homo_lr_0") for p in ROLES}
        states = {p: (f.state, f.reason) for p, f in finals.items() if f is not None}
        assert states == dict.fromkeys(ROLES, ("success", None)), restarted.tail()
        guest = workers[GUEST]
        survivors = {e["round"]: e["survivors"] for e in guest.events("round_done")}
        print(f"survivors by round: {survivors}")
        assert sorted(survivors) == list(range(ROUNDS))
        assert CLIENT_IDS[HOST_B] not in survivors[1]
        dropped = guest.events("client_dropped", round=1, party_id=HOST_B)
        assert dropped and dropped[0]["reason"].startswith(("no sa_masked", "no sa_unmask_shares"))
        assert restarted.wait_for("task_resuming", timeout=30)["component"] == "homo_lr_0"

        # and every party holds FedAvg's model over each round's survivors
        skip = [
            (r, cid - 1)
            for r, ids in survivors.items()
            for cid in CLIENT_IDS.values()
            if cid not in ids
        ]
        ordered = [tables[p] for p in (GUEST, HOST_A, HOST_B)]
        expected = hmath.reference_fedavg(parts(ordered), training(PARAMS), ROUNDS, skip=skip)
        for party, role in ROLES.items():
            engine = make_engine(stack.parties[party].database_url)
            model = ArtifactStore(engine).get(JOB, party, role, "homo_lr_0.model")
            engine.dispose()
            np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)
        assert restarted.terminate() == 0
    finally:
        schedulers.close()  # the start_worker fixture kills every worker it started
