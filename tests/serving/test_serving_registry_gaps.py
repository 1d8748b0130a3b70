"""The serving registry on PostgreSQL (each party's registry lives there, docs/serving.md):
its Alembic history makes exactly the tables fedserving.models defines, goes down and up
again, and adopts nothing else of the database (tests/deploy/test_migrations.py checks the
other packages' histories the same way, not this one's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fedserving.migrations import MIGRATIONS
from fedserving.models import metadata

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    made = sa.create_engine(pg_url)
    yield made
    made.dispose()


def drift(engine: sa.Engine) -> list[object]:
    """How the database's serving tables differ from the code's (Alembic autogenerate)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": MIGRATIONS.version_table, "compare_type": True}
        )
        return list(compare_metadata(context, metadata))


def serving_tables(engine: sa.Engine) -> set[str]:
    return {t for t in sa.inspect(engine).get_table_names() if t.startswith("serving_")}


def test_the_registrys_history_makes_exactly_its_tables_on_postgresql(engine: sa.Engine) -> None:
    # Execute
    MIGRATIONS.upgrade_head(engine)
    MIGRATIONS.upgrade_head(engine)  # idempotent, as every start of the service runs it

    # Assert: at head, the tables as the code defines them, and the version table its own
    assert drift(engine) == []
    assert MIGRATIONS.current_revision(engine) == MIGRATIONS.head_revision()
    assert serving_tables(engine) == set(metadata.tables) | {MIGRATIONS.version_table}


def test_the_registrys_history_goes_down_and_up_again(engine: sa.Engine) -> None:
    MIGRATIONS.upgrade_head(engine)

    MIGRATIONS.downgrade(engine, "base")
    assert serving_tables(engine) & set(metadata.tables) == set()

    MIGRATIONS.upgrade_head(engine)
    assert drift(engine) == []
