"""The services of a party share no state: with the worker on its own database, a table
uploaded through the REST API lands in the worker's store, a job reads it, and the job's
metrics reach the scheduler as messages -- served through the REST API as in the embedded
mode where both share one SQLite file -- while the scheduler's database holds neither tables
nor the worker's metric rows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fedflow.metrics import MetricsReader

from .conftest import Party
from .test_api_flow import GUEST_CSV, final_values, job_end, submit, upload


def test_a_party_whose_worker_has_its_own_database_serves_tables_and_metrics(
    party_factory: Callable[..., Party],
) -> None:
    # Prepare: the worker on worker.db, the scheduler on party.db
    party = party_factory(worker_database="worker.db")
    assert party.worker is not None
    stored = upload(party, "breast_hetero_guest", GUEST_CSV, label_column="y")

    # Execute
    submit(party, "job-split")
    done = job_end(party, "job-split")
    metrics = party.api.get("/api/v1/jobs/job-split/metrics", headers=party.headers).json()
    table = party.api.get("/api/v1/tables/breast_hetero_guest", headers=party.headers).json()

    # Assert: the REST answers are the worker's data
    assert done["state"] == "success", done
    assert table["sha256"] == stored["sha256"] and table["reads"] == 1
    worker_values = MetricsReader(party.worker.engine).values("job-split", "eval_0")
    served = final_values(metrics, "eval_0")
    assert served.keys() == worker_values.keys()
    for name, value in worker_values.items():
        assert served[name] == pytest.approx(value, abs=1e-12), name
    assert {c["name"] for c in metrics["curves"]} >= {"roc", "ks", "pr"}
    # ...and the scheduler's database has none of the worker's tables
    engine = sa.create_engine(party.database_url)
    try:
        names = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert "scheduler_job_metrics" in names
    assert not {"flow_tables", "flow_metrics", "flow_curves"} & names
