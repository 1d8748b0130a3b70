"""SqlInbox: done markers in a SQL table, committed with the handler's effect.

PostgreSQL in the per-party stack, SQLite in the embedded default (SQLAlchemy 2). Table
`fedmq_inbox(message_id PRIMARY KEY, done_at)`; created at start for now (migrations arrive
with the job runtime).

One `process` call is one transaction:
  1. INSERT the marker, ON CONFLICT DO NOTHING RETURNING it. No row back means the id is
     already done: return False, the effect does not run. On PostgreSQL, a concurrent duplicate's
     INSERT waits on the primary-key index until the first transaction ends; it then inserts
     nothing (the first committed) or proceeds (the first rolled back), so exactly one effect
     commits. Inserting the marker FIRST (rather than after the effect) is what makes an
     IntegrityError raised by the effect itself an ordinary failure, never mistaken for a
     duplicate.
  2. Run the effect with the same Session (`InboxTransaction.session`).
  3. COMMIT. If anything raises, the whole transaction rolls back: no marker, no effect.

`process_batch` (group commit) is the same transaction for several messages: ONE multi-row
INSERT of all their markers (ids sorted and deduplicated), the effects of the ids it inserted in
item order, one COMMIT. Sorting makes concurrent batches take the primary-key locks in the same
order, so batches that share ids wait for each other instead of deadlocking. Effects that lock
their own rows in conflicting orders can still deadlock; PostgreSQL then aborts one batch,
which raises like any failed effect (the consumer falls back to one message at a time).

SQLite: transactions start with BEGIN IMMEDIATE (the write lock is taken up front, so two
connections never deadlock upgrading read locks), a busy timeout makes writers wait rather than
fail, and WAL lets readers run alongside the writer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from fedbus.inbox import BatchItem, Effect, Inbox, InboxTransaction

inbox_metadata = sa.MetaData()
inbox_table = sa.Table(
    "fedmq_inbox",
    inbox_metadata,
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
)

SQLITE_BUSY_TIMEOUT_S = 30.0
# Markers per INSERT statement in process_batch: 2 bind parameters each, far below SQLite's
# and PostgreSQL's parameter limits, and big enough that a typical batch is one statement.
MARKERS_PER_STATEMENT = 500
PING_AFTER_IDLE_S = 2.0
"""A pooled server connection idle longer than this is pinged before it is handed out."""


def make_engine(url: str, **options: Any) -> Engine:
    """An Engine configured for the inbox's transactions.

    `postgresql://` and `postgres://` URLs without a driver get psycopg 3 (the one installed).
    SQLite file URLs get their directory created, BEGIN IMMEDIATE transactions, WAL and a busy
    timeout; `sqlite://` (in-memory) shares one connection across threads.
    """
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        if "pool_pre_ping" in options:
            return sa.create_engine(parsed, **options)
        engine = sa.create_engine(parsed, **options)
        _ping_when_idle(engine, PING_AFTER_IDLE_S)
        return engine

    in_memory = parsed.database in (None, "", ":memory:")
    if in_memory:
        options.setdefault("poolclass", StaticPool)
        options.setdefault("connect_args", {"check_same_thread": False})
    else:
        Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)
        options.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_S})
    engine = sa.create_engine(parsed, **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below (pysqlite would
        # otherwise issue a deferred BEGIN lazily, before the first write).
        dbapi_connection.isolation_level = None
        if not in_memory:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Pessimistic disconnect handling for connections that sat idle in the pool.

    pool_pre_ping pings on EVERY checkout: one more round trip per transaction, and a message
    handler or task claim is a handful of them (about a tenth of a scheduler's handling
    time). What the ping is for is a connection that went stale while idle (the server
    restarted, an idle timeout cut it); one checked in a moment ago is pinged by the statement
    it runs next. A ping that fails raises DisconnectionError, so the pool replaces the
    connection (and every older one) and retries the checkout, as pool_pre_ping does; a
    connection lost while busy fails that transaction, which its caller retries (the bus
    requeues the message, a runner claims again).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["fedmq_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("fedmq_idle_since")
        if since is None or time.monotonic() - since < idle_s:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc


def create_tables(metadata: sa.MetaData, engine: Engine) -> None:
    """`create_all`, tolerating another process creating the same tables at the same moment."""
    for attempt in range(3):
        try:
            metadata.create_all(engine)
            return
        except (IntegrityError, ProgrammingError, OperationalError):
            # PostgreSQL reports a concurrent CREATE TABLE as a unique violation on pg_type;
            # the next create_all sees the table and skips it.
            if attempt == 2:
                raise


class SqlInbox(Inbox):
    """Done markers in `fedmq_inbox`, committed in the handler's transaction."""

    def __init__(self, engine: Engine | str, *, create_schema: bool = True) -> None:
        self.engine = make_engine(engine) if isinstance(engine, str) else engine
        self._owns_engine = isinstance(engine, str)
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        dialect = self.engine.dialect.name
        upserts: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
        self._upsert: Any = upserts.get(dialect)
        if self._upsert is not None:
            self._insert_marker: Any = (
                self._upsert(inbox_table)
                .on_conflict_do_nothing(index_elements=["message_id"])
                .returning(inbox_table.c.message_id)
            )
        else:
            self._insert_marker = None  # plain INSERT; a unique violation means duplicate
        if create_schema:
            create_tables(inbox_metadata, self.engine)

    def process(self, message_id: str, effect: Effect) -> bool:
        with self._sessions() as session, session.begin():
            if not self._mark(session, message_id):
                return False  # nothing written; the empty transaction ends here
            effect(InboxTransaction(message_id=message_id, session=session))
            return True

    def process_batch(self, items: Sequence[BatchItem]) -> list[bool]:
        """All items' markers and effects in one transaction, one COMMIT (see the module doc)."""
        if not items:
            return []
        first: dict[str, int] = {}
        for index, (message_id, _) in enumerate(items):
            first.setdefault(message_id, index)
        ran = [False] * len(items)
        with self._sessions() as session, session.begin():
            inserted = self._mark_many(session, sorted(first))
            for index, (message_id, effect) in enumerate(items):
                if first[message_id] == index and message_id in inserted:
                    effect(InboxTransaction(message_id=message_id, session=session))
                    ran[index] = True
        return ran

    def _mark_many(self, session: Session, message_ids: list[str]) -> set[str]:
        """Insert markers for `message_ids` (distinct, sorted); returns the ids inserted now."""
        if self._upsert is None:
            return {m for m in message_ids if self._mark(session, m)}
        now = datetime.now(UTC)
        inserted: set[str] = set()
        for start in range(0, len(message_ids), MARKERS_PER_STATEMENT):
            rows = [
                {"message_id": m, "done_at": now}
                for m in message_ids[start : start + MARKERS_PER_STATEMENT]
            ]
            statement = (
                self._upsert(inbox_table)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["message_id"])
                .returning(inbox_table.c.message_id)
            )
            inserted.update(session.execute(statement).scalars())
        return inserted

    def _mark(self, session: Session, message_id: str) -> bool:
        values = {"message_id": message_id, "done_at": datetime.now(UTC)}
        if self._insert_marker is not None:
            # RETURNING yields the row only when it was inserted (rowcount is not reliable
            # across drivers for ON CONFLICT DO NOTHING).
            return session.execute(self._insert_marker, values).first() is not None
        try:
            with session.begin_nested():
                session.execute(sa.insert(inbox_table), values)
        except IntegrityError:
            return False
        return True

    def is_done(self, message_id: str) -> bool:
        with self.engine.connect() as conn:
            query = sa.select(inbox_table.c.message_id).where(
                inbox_table.c.message_id == message_id
            )
            return conn.execute(query).first() is not None

    def prune(self, done_before: datetime) -> int:
        """Delete markers older than `done_before`; returns how many.

        Only safe for ids that can no longer arrive: pick a horizon longer than any redelivery
        or resend can lag (the job's lifetime plus its retention), never shorter.
        """
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(inbox_table).where(inbox_table.c.done_at < done_before))
            return int(result.rowcount)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()
