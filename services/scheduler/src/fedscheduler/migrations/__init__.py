"""Alembic migrations of the scheduler's tables, applied with `upgrade_head(engine)` at start-up.

The revisions live in `versions/`; fedcommon.migrations runs them on the connection it opens (no
alembic.ini needed), like every other package's that owns tables. The version table is
`scheduler_alembic_version`, so other packages keep their own Alembic history in the same
database. On PostgreSQL an advisory lock serialises scheduler replicas that start at the same
moment.

A new revision: `alembic -c services/scheduler/alembic.ini revision -m "..."`, then write its
upgrade and downgrade by hand (the models in models.py must match the result).
"""

from __future__ import annotations

from fedcommon.migrations import Migrations
from sqlalchemy.engine import Engine

# The scheduler's advisory lock key from before the shared runner: replicas of an older and a
# newer version starting together still take the same lock.
MIGRATIONS = Migrations(__file__, "scheduler", lock_key=0x5C4ED01E)
VERSION_TABLE = MIGRATIONS.version_table
SCRIPT_LOCATION = MIGRATIONS.script_location


def head_revision() -> str | None:
    return MIGRATIONS.head_revision()


def current_revision(engine: Engine) -> str | None:
    return MIGRATIONS.current_revision(engine)


def upgrade_head(engine: Engine) -> None:
    """Bring the scheduler's tables to the latest revision (idempotent)."""
    MIGRATIONS.upgrade_head(engine)


def downgrade(engine: Engine, revision: str) -> None:
    """Go back to `revision` ("base": drop everything the migrations created)."""
    MIGRATIONS.downgrade(engine, revision)
