"""The SQL tables fedflow keeps at each party, in one MetaData, and their creation.

PostgreSQL in the per-party stack, SQLite in the embedded default (engines from
fedbus.sql_inbox.make_engine). Every table is prefixed `flow_`. Created at start-up with
`create_flow_tables` (idempotent; tolerates another process creating them at the same moment).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from fedbus.sql_inbox import create_tables
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from fedflow.task import TaskKey

flow_metadata = sa.MetaData()

# The columns that say which task's run a row belongs to, with the one set of types every flow_
# table (and the migrations, fedflow/migrations) gives them.
_TASK_COLUMN_TYPES: dict[str, tuple[type[sa.types.TypeEngine[Any]], tuple[int, ...]]] = {
    "job_id": (sa.String, (256,)),
    "component": (sa.String, (128,)),
    "attempt": (sa.Integer, ()),
    "party_id": (sa.String, (64,)),
    "role": (sa.String, (16,)),
}


def task_columns(*names: str, primary_key: bool) -> list[sa.Column[Any]]:
    """Fresh columns `names` (of job_id, component, attempt, party_id, role), in that order, part
    of the table's primary key or else not null."""
    columns: list[sa.Column[Any]] = []
    for name in names:
        kind, args = _TASK_COLUMN_TYPES[name]
        if primary_key:
            columns.append(sa.Column(name, kind(*args), primary_key=True))
        else:
            columns.append(sa.Column(name, kind(*args), nullable=False))
    return columns


def task_rows(table: sa.Table, key: TaskKey) -> sa.ColumnElement[bool]:
    """The rows of `table` that belong to the task `key` (one party's role, one attempt)."""
    c = table.c
    return sa.and_(
        c.job_id == key.job_id,
        c.component == key.component,
        c.attempt == key.attempt,
        c.party_id == key.party_id,
        c.role == key.role,
    )


def create_flow_tables(engine: Engine) -> None:
    # Imported for their side effect of adding tables to flow_metadata.
    from fedflow import artifacts, checkpoints, mailbox, metrics  # noqa: F401

    create_tables(flow_metadata, engine)
