"""Alembic migrations per package, in one shared database: how every package that owns tables
brings them to its latest revision.

Each package that owns tables (fedbus, fedflow, fedworker, fedgateway, fedscheduler) keeps its
revisions in its own `migrations/` folder and its own version table (`<package>_alembic_version`),
so their histories never collide although a party's services share one PostgreSQL database.
A service runs the migrations of every package whose tables it uses at start-up, before it
opens them (`upgrade_all`); there is no separate migrate step. On PostgreSQL an advisory lock
per package serialises replicas and services that start at the same moment.

A package's `migrations/__init__.py` is one line, `MIGRATIONS = Migrations(__file__, "...")`,
and its `env.py` is `run_env(metadata)`. No alembic.ini is needed to apply them, nor to start a
new revision: `python -c 'from fedworker.migrations import MIGRATIONS as M;
print(M.new_revision("what changes"))'` writes the file to fill in.

The libraries still create their tables with `create_all` when constructed on their own (the
embedded SQLite default, in-memory test databases): it creates only missing tables, so after
the migrations ran it does nothing, and each package's first revision adopts tables that an
older version created that way (it creates only the tables that are missing).

A first revision declares its tables as a frozen `sa.Table` tuple of its own (never the
package's live metadata: a later model change must come as a new revision, not silently alter
what revision 0001 creates) and its body is `create_missing(*TABLES)` / `drop_tables(*TABLES)`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine


class Migrations:
    """One package's Alembic history: its script folder and version table."""

    def __init__(self, package_file: str | Path, name: str, *, lock_key: int | None = None) -> None:
        """`package_file`: the `__file__` of the package's migrations/__init__.py; `name`: the
        package's short name (version table `<name>_alembic_version`); `lock_key`: the
        PostgreSQL advisory lock key (default: derived from the name)."""
        self.name = name
        self.script_location = Path(package_file).resolve().parent
        self.version_table = f"{name}_alembic_version"
        # A stable 31-bit key per package for pg_advisory_xact_lock.
        self.lock_key = (
            lock_key
            if lock_key is not None
            else zlib.crc32(f"fedmq.migrations.{name}".encode()) & 0x7FFFFFFF
        )

    def config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(self.script_location))
        config.attributes["version_table"] = self.version_table
        return config

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self.config()).get_current_head()

    def current_revision(self, engine: Engine) -> str | None:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": self.version_table})
            return ctx.get_current_revision()

    def upgrade_head(self, engine: Engine) -> None:
        """Bring the package's tables to its latest revision (idempotent)."""
        self._run(engine, "upgrade", "head")

    def downgrade(self, engine: Engine, revision: str) -> None:
        """Go back to `revision` ("base": drop everything the migrations created)."""
        self._run(engine, "downgrade", revision)

    def new_revision(self, message: str) -> Path:
        """Write an empty revision after the head into versions/ (then write its upgrade and
        downgrade by hand); returns its path."""
        script = command.revision(self.config(), message=message)
        assert script is not None and not isinstance(script, list)
        return Path(script.path)

    def _run(self, engine: Engine, verb: str, revision: str) -> None:
        config = self.config()
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.lock_key})
            config.attributes["connection"] = conn
            if verb == "upgrade":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)


def upgrade_all(engine: Engine, migrations: Iterable[Migrations]) -> None:
    """Run several packages' migrations, in the order given (a service's start-up)."""
    for m in migrations:
        m.upgrade_head(engine)


def run_env(target_metadata: sa.MetaData | None) -> None:
    """The body of a package's migrations/env.py: run its revisions on the connection that
    `Migrations._run` handed over."""
    config = context.config
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through Migrations.upgrade_head(engine)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=config.attributes["version_table"],
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def has_table(name: str) -> bool:
    """Inside a revision: whether `name` exists already (a table an older version created with
    create_all, which the first revision adopts instead of creating)."""
    return sa.inspect(context.get_bind()).has_table(name)


def has_column(table: str, column: str) -> bool:
    """Inside a revision: whether `table` has `column`."""
    return any(c["name"] == column for c in sa.inspect(context.get_bind()).get_columns(table))


def column(name: str, type_: sa.types.TypeEngine[Any], *, nullable: bool = False) -> sa.Column[Any]:
    """A revision's column: NOT NULL unless said (what most columns of a hand-written revision
    are)."""
    return sa.Column(name, type_, nullable=nullable)


def create_missing(*tables: sa.Table) -> None:
    """Inside a first revision: create each of `tables`, with its indexes, unless it exists
    already (an older version's create_all made it; it is adopted as it is)."""
    for table in tables:
        if not has_table(table.name):
            table.create(op.get_bind())


def drop_tables(*tables: sa.Table) -> None:
    """Inside a revision's downgrade: drop `tables`, the last created first."""
    for table in reversed(tables):
        op.drop_table(table.name)
