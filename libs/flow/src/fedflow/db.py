"""The SQL tables fedflow keeps at each party, in one MetaData, and their creation.

PostgreSQL in the per-party stack, SQLite in the embedded default (engines from
fedbus.sql_inbox.make_engine). Every table is prefixed `flow_`. Created at start-up with
`create_flow_tables` (idempotent; tolerates another process creating them at the same moment).
"""

from __future__ import annotations

import sqlalchemy as sa
from fedbus.sql_inbox import create_tables
from sqlalchemy.engine import Engine

flow_metadata = sa.MetaData()


def create_flow_tables(engine: Engine) -> None:
    # Imported for their side effect of adding tables to flow_metadata.
    from fedflow import artifacts, checkpoints, mailbox, metrics  # noqa: F401

    create_tables(flow_metadata, engine)
