"""Cross-party resume with real processes: two parties' gateways (signed link) and workers on
RabbitMQ (a vhost per party) and PostgreSQL (a database per party), set up by the local
launcher's functions. The test plays both schedulers: it sends task.run to each worker and
reads task.status. The host's worker is SIGKILLed in the middle of iter_sum and started again;
it resumes from its checkpoint and the job ends with the same result as an uninterrupted run
(computed in standalone mode with the same data and parameters).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedflow.metrics import MetricsReader
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline

from fedmq import local
from tests.worker.conftest import StartWorker
from tests.worker.two_parties import (
    DATA,
    GUEST,
    HOST,
    ROLES,
    TABLES,
    Schedulers,
    gateways,
    start_party_worker,
    upload_breast,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 24
SUM_PARAMS = {"rounds": ROUNDS, "seed": 7, "round_delay_s": 0.15}
PIPELINE = f"""
name: resume
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: {TABLES[GUEST]}}}
      host: {{table: {TABLES[HOST]}}}
  - name: sum_0
    type: iter_sum
    inputs: {{data: reader_0.data}}
    params:
      common: {{rounds: {ROUNDS}, seed: 7}}
"""


@pytest.fixture(scope="module")
def stack(amqp_url: str, pg_admin_url: str, redis_url: str) -> Iterator[local.LocalState]:
    """Both parties' vhosts, databases, PKI and running gateways."""
    with gateways(amqp_url, pg_admin_url, redis_url, label="worker-resume") as state:
        yield state


def test_a_worker_killed_mid_run_resumes_and_the_job_ends_as_if_uninterrupted(
    stack: local.LocalState, start_worker: StartWorker, tmp_path: Path
) -> None:
    # Prepare: each party's table in its own store; both workers running.
    tables_dirs = {party: tmp_path / f"tables-{party}" for party in ROLES}
    upload_breast(stack, tables_dirs)
    workers = {
        party: start_party_worker(start_worker, stack, party, tables_dirs[party]) for party in ROLES
    }
    schedulers = Schedulers(stack, "job-resume", PIPELINE)
    try:
        schedulers.run_to_end(
            "reader_0",
            "reader",
            {GUEST: {"table": TABLES[GUEST]}, HOST: {"table": TABLES[HOST]}},
            {},
        )

        # Execute: iter_sum; SIGKILL the host's worker a third of the way; start it again.
        restarted = schedulers.run_killing_a_worker(
            "sum_0",
            "iter_sum",
            SUM_PARAMS,
            {"data": "reader_0.data"},
            victim=workers[HOST],
            party=HOST,
            restart=lambda: start_party_worker(start_worker, stack, HOST, tables_dirs[HOST]),
            kill_timeout=90,
            end_timeout=120,
        )

        # Assert: both succeeded; the host resumed from a checkpoint (not from round 0).
        assert [schedulers.final(p, "sum_0").state for p in ROLES] == ["success", "success"]  # type: ignore[union-attr]
        resumed = restarted.wait_for("task_resuming", timeout=5)
        assert resumed["component"] == "sum_0" and resumed["iteration"] >= 1
        assert restarted.events("resume_resent")
        # ... and the guest's result and per-round series equal an uninterrupted run's.
        engine = make_engine(stack.parties[GUEST].database_url)
        reader = MetricsReader(engine)
        (curve,) = reader.curves("job-resume", "sum_0")
        series = [
            (m.step, m.value)
            for m in reader.metrics("job-resume", "sum_0")
            if m.name == "masked_norm"
        ]
        engine.dispose()
        reference = run_pipeline(
            Pipeline.from_yaml(PIPELINE), {GUEST: DATA, HOST: DATA}, tmp_path / "reference"
        )
        expected_series = [
            (m.step, m.value)
            for m in reference.metrics
            if m.component == "sum_0" and m.name == "masked_norm"
        ]
        np.testing.assert_allclose(curve.y, reference.curve("sum_0", "result").y, rtol=0, atol=1e-9)
        assert len(series) == ROUNDS
        np.testing.assert_allclose(
            [v for _, v in series], [v for _, v in expected_series], rtol=1e-12
        )
        assert workers[GUEST].proc.poll() is None
        assert restarted.terminate() == 0
    finally:
        schedulers.close()
