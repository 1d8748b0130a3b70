"""The Alembic migrations: they apply on SQLite and PostgreSQL, are idempotent, produce exactly
the tables models.py describes, go back down, and a job runs on PostgreSQL too."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fedbus.sql_inbox import make_engine
from fedscheduler.migrations import (
    VERSION_TABLE,
    current_revision,
    downgrade,
    head_revision,
    upgrade_head,
)
from fedscheduler.models import Base

from .conftest import GUEST, HOST, PSI_EVAL, Federation

SCHEDULER_TABLES = {
    "scheduler_jobs",
    "scheduler_job_parties",
    "scheduler_tasks",
    "scheduler_grants",
    "scheduler_job_metrics",
    "scheduler_job_curves",
}


def _drift(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        diffs = compare_metadata(context, Base.metadata)
    # Only the scheduler's own tables count (the inbox and other services share the database).
    return [d for d in diffs if SCHEDULER_TABLES & set(str(d).split("'"))]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'scheduler.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_upgrade_creates_the_tables_the_models_describe(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade_head(engine)

        assert current_revision(engine) == head_revision()
        assert set(sa.inspect(engine).get_table_names()) >= SCHEDULER_TABLES
        assert _drift(engine) == []
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op_and_downgrade_removes_the_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade_head(engine)
        upgrade_head(engine)

        downgrade(engine, "base")

        assert current_revision(engine) is None
        assert not SCHEDULER_TABLES & set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_replicas_starting_together_migrate_once_on_postgresql(pg_url: str) -> None:
    # Prepare
    engines = [make_engine(pg_url) for _ in range(3)]
    errors: list[BaseException] = []

    def migrate(engine: sa.Engine) -> None:
        try:
            upgrade_head(engine)
        except BaseException as exc:
            errors.append(exc)

    # Execute
    threads = [threading.Thread(target=migrate, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    # Assert
    try:
        assert errors == []
        assert current_revision(engines[0]) == head_revision()
    finally:
        for e in engines:
            e.dispose()


@pytest.mark.integration
def test_a_two_party_job_runs_on_postgresql(
    federation_factory: Callable[..., Federation], pg_url: str, pg_admin_url: str
) -> None:
    # Prepare: the guest's scheduler on PostgreSQL (row locks), the host's on SQLite
    fed = federation_factory(database_urls={GUEST: pg_url})

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-pg")

    # Assert
    done = fed.wait_state(GUEST, "job-pg", "success")
    assert done["tasks_succeeded"] == 5
    fed.wait_state(HOST, "job-pg", "success")
