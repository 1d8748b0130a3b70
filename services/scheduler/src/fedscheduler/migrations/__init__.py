"""Alembic migrations of the scheduler's tables, applied with `upgrade_head(engine)` at start-up.

The revisions live in `versions/`; `env.py` runs them on the connection it is handed (no
alembic.ini needed). The version table is `scheduler_alembic_version`, so other services may
keep their own Alembic history in the same database. On PostgreSQL an advisory lock serialises
scheduler replicas that start at the same moment.

A new revision: `alembic -c services/scheduler/alembic.ini revision -m "..."`, then write its
upgrade and downgrade by hand (the models in models.py must match the result).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

VERSION_TABLE = "scheduler_alembic_version"
SCRIPT_LOCATION = Path(__file__).resolve().parent
# Any constant: the key of the PostgreSQL advisory lock held while migrating.
_PG_LOCK_KEY = 0x5C4ED01E


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade_head(engine: Engine) -> None:
    """Bring the scheduler's tables to the latest revision (idempotent)."""
    _run(engine, "upgrade", "head")


def downgrade(engine: Engine, revision: str) -> None:
    """Go back to `revision` ("base": drop everything the migrations created)."""
    _run(engine, "downgrade", revision)


def _run(engine: Engine, verb: str, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        config.attributes["connection"] = conn
        if verb == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
