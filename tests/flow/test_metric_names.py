"""A metric named after a very long column (binning's iv.<column>, statistics' <column>.mean)
does not fail the task on PostgreSQL, whose name column holds 128 characters (SQLite, the
standalone runner's store, does not enforce it, so the tryout's 300-character column passed
there): the writer skips it with a warning and keeps the others."""

from __future__ import annotations

import sqlalchemy as sa
from fedflow.db import create_flow_tables
from fedflow.metrics import MAX_METRIC_NAME, MetricsReader, MetricsWriter
from fedflow.task import TaskKey


def test_a_metric_name_over_the_column_limit_is_skipped_on_postgresql(pg_url: str) -> None:
    # Prepare
    engine = sa.create_engine(pg_url)
    create_flow_tables(engine)
    writer = MetricsWriter(engine, TaskKey("j", "bin_0", 0, "9999", "guest"))
    long_name = "iv." + "x" * 300
    edge = "iv." + "y" * (MAX_METRIC_NAME - 3)

    # Execute
    writer.log_many([("rows", 10.0, -1), (long_name, 0.5, -1), (edge, 0.25, -1)])
    writer.curve(long_name, [0.0, 1.0], [0.0, 1.0])

    # Assert: the others kept, the long one left out, nothing raised
    names = {m.name: m.value for m in MetricsReader(engine).metrics("j")}
    engine.dispose()
    assert names == {"rows": 10.0, edge: 0.25}
