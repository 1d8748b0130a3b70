"""Alembic environment: runs the scheduler's revisions on the connection `upgrade_head` passes."""

from __future__ import annotations

from alembic import context

from fedscheduler.migrations import VERSION_TABLE
from fedscheduler.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the scheduler's migrations through fedscheduler.migrations.upgrade_head(engine)"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
