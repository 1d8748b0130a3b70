"""Every package that owns tables migrates them with Alembic (fedcommon.migrations): each history
produces exactly the tables the code defines, adopts tables an older version made with
create_all, goes back down, and all of them share one database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fedbus.migrations import MIGRATIONS as BUS
from fedcommon.migrations import Migrations, upgrade_all
from fedflow.migrations import MIGRATIONS as FLOW
from fedgateway.migrations import MIGRATIONS as GATEWAY
from fedscheduler.migrations import MIGRATIONS as SCHEDULER
from fedworker.main import WORKER_MIGRATIONS
from fedworker.migrations import MIGRATIONS as WORKER


def _metadata(migrations: Migrations) -> sa.MetaData:
    """The tables the package's code defines (what create_all would make)."""
    if migrations is BUS:
        from fedbus import sql_chunk_store, sql_inbox

        parts = [sql_inbox.inbox_metadata, sql_chunk_store.metadata]
    elif migrations is FLOW:
        from fedflow import artifacts, checkpoints, db, mailbox, metrics, tables  # noqa: F401

        parts = [db.flow_metadata, tables.tables_metadata]
    elif migrations is WORKER:
        from fedworker.tasks import tasks_metadata

        parts = [tasks_metadata]
    elif migrations is GATEWAY:
        from fedgateway.verify import _metadata as gateway_metadata

        parts = [gateway_metadata]
    else:
        from fedscheduler.models import Base

        parts = [Base.metadata]
    merged = sa.MetaData()
    for part in parts:
        for table in part.tables.values():
            table.to_metadata(merged)
    return merged


ALL = [BUS, FLOW, WORKER, GATEWAY, SCHEDULER]
IDS = [m.name for m in ALL]


def _drift(engine: sa.Engine, migrations: Migrations) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"version_table": migrations.version_table, "compare_type": True}
        )
        wanted = _metadata(migrations)
        # Only this package's tables: the others share the database.
        return [d for d in compare_metadata(ctx, wanted) if _table_of(d) in wanted.tables]


def _table_of(diff: object) -> str | None:
    """The table an Alembic autogenerate difference is about."""
    if isinstance(diff, list):  # column modifications come as a list of tuples
        return _table_of(diff[0]) if diff else None
    assert isinstance(diff, tuple)
    kind, subject = diff[0], diff[1]
    if kind in ("add_table", "remove_table"):
        return str(subject.name)
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint"):
        return str(subject.table.name)
    if kind in ("add_column", "remove_column"):
        return str(diff[2])
    if kind.startswith("modify_"):
        return str(diff[2])
    return None


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


@pytest.fixture
def sqlite(tmp_path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{tmp_path / 'party.db'}")


@pytest.mark.parametrize("migrations", ALL, ids=IDS)
def test_each_history_makes_exactly_the_tables_the_code_defines(
    sqlite: sa.Engine, migrations: Migrations
) -> None:
    # Execute
    migrations.upgrade_head(sqlite)

    # Assert
    assert _drift(sqlite, migrations) == []
    assert migrations.current_revision(sqlite) == migrations.head_revision()
    assert set(_metadata(migrations).tables) <= _tables(sqlite)


@pytest.mark.parametrize("migrations", ALL, ids=IDS)
def test_each_history_goes_back_down_and_up_again(
    sqlite: sa.Engine, migrations: Migrations
) -> None:
    migrations.upgrade_head(sqlite)
    migrations.upgrade_head(sqlite)  # idempotent

    migrations.downgrade(sqlite, "base")
    assert not set(_metadata(migrations).tables) & _tables(sqlite)

    migrations.upgrade_head(sqlite)
    assert _drift(sqlite, migrations) == []


@pytest.mark.parametrize("migrations", [BUS, FLOW, WORKER, GATEWAY], ids=lambda m: m.name)
def test_tables_an_older_version_created_are_adopted(
    sqlite: sa.Engine, migrations: Migrations
) -> None:
    # Prepare: the tables as create_all made them before there were migrations
    _metadata(migrations).create_all(sqlite)

    # Execute
    migrations.upgrade_head(sqlite)

    # Assert: at head, with the tables as the code defines them
    assert migrations.current_revision(sqlite) == migrations.head_revision()
    assert _drift(sqlite, migrations) == []


def test_a_worker_task_table_from_before_traceparent_gets_the_column_and_keeps_its_tasks(
    sqlite: sa.Engine,
) -> None:
    # Prepare: worker_tasks as an older worker created it, with a queued task
    from fedworker.tasks import tasks_table

    old = sa.MetaData()
    columns = [
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in tasks_table.columns
        if c.name != "traceparent"
    ]
    sa.Table(tasks_table.name, old, *columns)
    old.create_all(sqlite)
    now = dt.datetime.now(dt.UTC)
    row = {
        "job_id": "j",
        "component": "c",
        "attempt": 0,
        "role": "guest",
        "component_type": "noop",
        "parties": "{}",
        "params": "{}",
        "inputs": "{}",
        "pipeline_yaml": "",
        "state": "queued",
        "status_seq": 0,
        "cancel_requested": False,
        "runs": 0,
        "cleaned": False,
        "created_at": now,
        "updated_at": now,
    }
    with sqlite.begin() as conn:
        conn.execute(sa.insert(old.tables[tasks_table.name]), [row])

    # Execute
    WORKER.upgrade_head(sqlite)

    # Assert
    columns_now = {c["name"] for c in sa.inspect(sqlite).get_columns(tasks_table.name)}
    assert "traceparent" in columns_now
    with sqlite.begin() as conn:
        assert conn.execute(sa.select(tasks_table.c.job_id)).scalars().all() == ["j"]


def test_every_package_shares_one_postgresql_database(pg_url: str) -> None:
    # Prepare: one party's database, as compose gives every service
    engine = sa.create_engine(pg_url)
    try:
        # Execute: what the worker, the scheduler and the gateway run at start-up, twice
        for _ in range(2):
            upgrade_all(engine, [*WORKER_MIGRATIONS, SCHEDULER, GATEWAY])

        # Assert: every history at its head in its own version table, no drift
        for migrations in ALL:
            assert migrations.current_revision(engine) == migrations.head_revision()
            assert _drift(engine, migrations) == [], migrations.name
        versions = {t for t in _tables(engine) if t.endswith("_alembic_version")}
        assert versions == {m.version_table for m in ALL}
    finally:
        engine.dispose()
