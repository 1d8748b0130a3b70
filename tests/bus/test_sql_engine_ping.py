"""make_engine on PostgreSQL: a pooled connection that died while idle is replaced, not used.

The engine pings a connection only when it sat idle in the pool (fedbus.sql_inbox
PING_AFTER_IDLE_S), instead of before every transaction; these tests kill the server side of
a pooled connection, as a PostgreSQL restart would, and check what the next transaction sees.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from fedbus import sql_inbox
from fedbus.sql_inbox import make_engine

pytestmark = pytest.mark.integration


def _kill_backend(admin_url: str, pid: int) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()


def test_a_connection_killed_while_idle_is_replaced_before_use(
    pg_url: str, pg_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: one pooled connection, its server process killed while it sits idle
    monkeypatch.setattr(sql_inbox, "PING_AFTER_IDLE_S", 0.2)
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            first = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        _kill_backend(pg_admin_url, first)
        time.sleep(0.3)

        # Execute: the next transaction
        with engine.begin() as conn:
            second = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()

        # Assert: it ran, on a new server connection
        assert second != first
    finally:
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(pg_url: str) -> None:
    # Prepare: count the statements the server connection gets (the ping is one)
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(str(args[2])))
    pings: list[object] = []
    original = engine.dialect.do_ping
    engine.dialect.do_ping = lambda dbapi_connection: bool(  # type: ignore[method-assign]
        pings.append(dbapi_connection) or original(dbapi_connection)
    )
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))

        # Execute: transactions right after one another
        for _ in range(5):
            with engine.begin() as conn:
                conn.execute(sa.text("SELECT 1"))

        # Assert: no ping between them; every statement was ours
        assert pings == []
        assert len(statements) == 6
    finally:
        engine.dispose()
