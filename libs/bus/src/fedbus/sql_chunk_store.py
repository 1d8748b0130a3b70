"""A ChunkStore on SQLAlchemy: PostgreSQL in the stack, SQLite for one machine.

Shared by every replica that consumes a topic, so chunks of one set that land on different
consumers still meet. Durable: a chunk is acked to the broker once its row is committed.

Tables (created on first use):
  fedmq_chunk_sets  (topic, message_id) primary key; the manifest, first_seen, and finished_at
                    (NULL while collecting; set when handled, kept as a tombstone so a late
                    duplicate chunk is recognised, purged later by the sweeper)
  fedmq_chunks      (topic, message_id, idx) primary key; body
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from fedbus.chunk_store import ChunkSetInfo, ChunkStore, ExpiredSet, StoredChunk

metadata = sa.MetaData()


def _set_key() -> tuple[sa.Column[str], sa.Column[str]]:
    """A chunk set is keyed by its topic and its message id (fresh columns per table)."""
    return (
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("message_id", sa.String(255), primary_key=True),
    )


chunk_sets = sa.Table(
    "fedmq_chunk_sets",
    metadata,
    *_set_key(),
    sa.Column("chunk_count", sa.Integer, nullable=False),
    sa.Column("total_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("reply_to", sa.String(255)),
    sa.Column("correlation_id", sa.String(255)),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_fedmq_chunk_sets_open", "finished_at", "first_seen"),
)

chunks = sa.Table(
    "fedmq_chunks",
    metadata,
    *_set_key(),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
)


def _insert_ignoring_duplicates(conn: Connection, table: sa.Table, row: dict[str, Any]) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(postgresql.insert(table).values(**row).on_conflict_do_nothing())
    elif dialect == "sqlite":
        conn.execute(sqlite.insert(table).values(**row).on_conflict_do_nothing())
    else:
        try:
            with conn.begin_nested():
                conn.execute(table.insert().values(**row))
        except sa.exc.IntegrityError:
            pass


class SqlChunkStore(ChunkStore):
    def __init__(self, engine: Engine | str, *, create_tables: bool = True) -> None:
        self._engine = sa.create_engine(engine) if isinstance(engine, str) else engine
        self._owns_engine = isinstance(engine, str)
        # An in-memory SQLite database dies with its process: not durable.
        self.durable = self._engine.url.database not in (None, "", ":memory:")
        if create_tables:
            metadata.create_all(self._engine)

    def put(self, info: ChunkSetInfo, index: int, body: bytes, *, now: float) -> int:
        key = (chunk_sets.c.topic == info.topic) & (chunk_sets.c.message_id == info.message_id)
        with self._engine.begin() as conn:
            _insert_ignoring_duplicates(
                conn,
                chunk_sets,
                {
                    "topic": info.topic,
                    "message_id": info.message_id,
                    "chunk_count": info.count,
                    "total_bytes": info.total_bytes,
                    "sha256": info.sha256,
                    "headers": json.dumps(dict(info.headers), sort_keys=True),
                    "reply_to": info.reply_to,
                    "correlation_id": info.correlation_id,
                    "first_seen": now,
                    "finished_at": None,
                },
            )
            finished = conn.execute(sa.select(chunk_sets.c.finished_at).where(key)).scalar()
            if finished is not None:
                return -1
            _insert_ignoring_duplicates(
                conn,
                chunks,
                {"topic": info.topic, "message_id": info.message_id, "idx": index, "body": body},
            )
        # Counted after the commit, in a fresh transaction: of two consumers committing the
        # last two chunks concurrently, the later count sees both.
        with self._engine.connect() as conn:
            stored = conn.execute(
                sa.select(sa.func.count())
                .select_from(chunks)
                .where((chunks.c.topic == info.topic) & (chunks.c.message_id == info.message_id))
            ).scalar_one()
        return int(stored)

    def load(self, topic: str, message_id: str) -> list[StoredChunk]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(chunks.c.idx, chunks.c.body)
                .where((chunks.c.topic == topic) & (chunks.c.message_id == message_id))
                .order_by(chunks.c.idx)
            ).all()
        return [StoredChunk(int(r.idx), bytes(r.body)) for r in rows]

    def finish(self, topic: str, message_id: str, *, now: float) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                chunks.delete().where(
                    (chunks.c.topic == topic) & (chunks.c.message_id == message_id)
                )
            )
            conn.execute(
                chunk_sets.update()
                .where((chunk_sets.c.topic == topic) & (chunk_sets.c.message_id == message_id))
                .values(finished_at=now)
            )

    def expired(self, older_than: float, *, limit: int = 100) -> list[ExpiredSet]:
        stored = (
            sa.select(sa.func.count())
            .select_from(chunks)
            .where(
                (chunks.c.topic == chunk_sets.c.topic)
                & (chunks.c.message_id == chunk_sets.c.message_id)
            )
            .scalar_subquery()
        )
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(chunk_sets, stored.label("stored"))
                .where(chunk_sets.c.finished_at.is_(None) & (chunk_sets.c.first_seen < older_than))
                .order_by(chunk_sets.c.first_seen)
                .limit(limit)
            ).all()
        return [
            ExpiredSet(
                info=ChunkSetInfo(
                    topic=r.topic,
                    message_id=r.message_id,
                    count=int(r.chunk_count),
                    total_bytes=r.total_bytes,
                    sha256=r.sha256,
                    headers=json.loads(r.headers),
                    reply_to=r.reply_to,
                    correlation_id=r.correlation_id,
                ),
                stored=int(r.stored),
                first_seen=float(r.first_seen),
            )
            for r in rows
        ]

    def purge_finished(self, older_than: float) -> int:
        with self._engine.begin() as conn:
            result = conn.execute(
                chunk_sets.delete().where(
                    chunk_sets.c.finished_at.is_not(None) & (chunk_sets.c.finished_at < older_than)
                )
            )
        return int(result.rowcount or 0)

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()
