"""Chunking: the split/reassemble format, the sweeper, and the ChunkStore contract on every
store (in-memory, SQLite, the real PostgreSQL)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedbus import HEADER_DEAD_REASON, HEADER_ORIGINAL_TOPIC, Delivery, Message
from fedbus.chunk_store import ChunkSetInfo, ChunkStore
from fedbus.chunking import (
    HEADER_CHUNK_COUNT,
    HEADER_CHUNK_INDEX,
    HEADER_CHUNK_OF,
    HEADER_CHUNK_SHA256,
    HEADER_CHUNK_TOTAL,
    AlreadyDone,
    ChunkSweeper,
    Complete,
    Invalid,
    Reassembler,
    Stored,
    Whole,
    dead_copy,
    regroup_dead_letters,
    split,
)
from fedbus.in_memory_chunk_store import InMemoryChunkStore
from fedbus.sql_chunk_store import SqlChunkStore
from hypothesis import given, settings
from hypothesis import strategies as st


def as_delivery(m: Message, delivery_count: int = 1) -> Delivery:
    return Delivery(
        m.topic, m.body, m.message_id, dict(m.headers), delivery_count, m.reply_to, m.correlation_id
    )


# -- format ----------------------------------------------------------------------------------


def test_small_message_is_not_split() -> None:
    m = Message("t", b"x" * 100, "m-1", headers={"a": "b"})

    assert split(m, 100) == [m]


def test_large_message_splits_into_indexed_chunks_with_manifest() -> None:
    body = os.urandom(2500)
    m = Message("t", body, "m-1", headers={"x-app": "v"}, reply_to="r", correlation_id="c")

    parts = split(m, 1000)

    assert [p.message_id for p in parts] == ["m-1:c0", "m-1:c1", "m-1:c2"]
    assert [len(p.body) for p in parts] == [1000, 1000, 500]
    assert b"".join(p.body for p in parts) == body
    for i, p in enumerate(parts):
        assert p.headers[HEADER_CHUNK_OF] == "m-1"
        assert p.headers[HEADER_CHUNK_INDEX] == str(i)
        assert p.headers[HEADER_CHUNK_COUNT] == "3"
        assert p.headers[HEADER_CHUNK_TOTAL] == "2500"
        assert p.headers[HEADER_CHUNK_SHA256] == hashlib.sha256(body).hexdigest()
        assert p.headers["x-app"] == "v"
        assert (p.reply_to, p.correlation_id) == ("r", "c")


@settings(max_examples=25, deadline=None)
@given(
    body=st.binary(min_size=1, max_size=3000),
    frame=st.integers(min_value=1, max_value=700),
    order=st.randoms(use_true_random=False),
    duplicates=st.integers(min_value=0, max_value=3),
)
def test_chunks_in_any_order_with_duplicates_reassemble_exactly_once(
    body: bytes, frame: int, order: object, duplicates: int
) -> None:
    parts = split(Message("t", body, "m-1", headers={"k": "v"}), frame)
    feed = parts + parts[:duplicates]
    order.shuffle(feed)  # type: ignore[attr-defined]
    reassembler = Reassembler(InMemoryChunkStore())

    results = [reassembler.accept(as_delivery(p)) for p in feed]
    completes = [r for r in results if isinstance(r, Complete)]
    for c in completes:
        reassembler.finish(c.info)

    if len(parts) == 1:
        assert all(isinstance(r, Whole) for r in results)
        return
    assert len(completes) >= 1
    assert completes[0].delivery.body == body
    assert completes[0].delivery.message_id == "m-1"
    assert dict(completes[0].delivery.headers) == {"k": "v"}
    assert reassembler.accept(as_delivery(parts[0])) == AlreadyDone()


def test_tampered_chunk_is_reported_as_checksum_mismatch() -> None:
    parts = split(Message("t", os.urandom(300), "m-1"), 100)
    bad = Message("t", bytes(100), parts[1].message_id, parts[1].headers)
    reassembler = Reassembler(InMemoryChunkStore())

    results = [reassembler.accept(as_delivery(p)) for p in (parts[0], bad, parts[2])]

    assert isinstance(results[0], Stored) and isinstance(results[1], Stored)
    assert isinstance(results[2], Invalid)
    assert results[2].reason == "checksum mismatch"
    assert len(results[2].messages) == 3


def test_malformed_manifest_is_invalid_not_a_crash() -> None:
    m = Message("t", b"x", "m-1:c0", headers={HEADER_CHUNK_OF: "m-1", HEADER_CHUNK_INDEX: "zz"})

    result = Reassembler(InMemoryChunkStore()).accept(as_delivery(m))

    assert isinstance(result, Invalid)
    assert result.reason.startswith("malformed chunk manifest")


def test_dead_lettered_chunks_are_regrouped_when_complete_and_kept_apart_when_not() -> None:
    whole = split(dead_copy(Message("t", os.urandom(250), "m-whole"), "why", "t"), 100)
    partial = split(dead_copy(Message("t", os.urandom(250), "m-part"), "incomplete", "t"), 100)
    plain = dead_copy(Message("t", b"small", "m-small"), "no", "t")

    out = regroup_dead_letters([as_delivery(m) for m in [*whole, plain, *partial[:2]]])

    assert [d.message_id for d in out] == ["m-whole", "m-small", "m-part:c0", "m-part:c1"]
    assert out[0].body == b"".join(m.body for m in whole)
    assert out[0].headers[HEADER_DEAD_REASON] == "why"
    assert out[0].headers[HEADER_ORIGINAL_TOPIC] == "t"


def test_sweeper_dead_letters_expired_set_with_reason_and_forgets_it() -> None:
    now = [1000.0]
    store = InMemoryChunkStore()
    reassembler = Reassembler(store, clock=lambda: now[0])
    parts = split(Message("t", os.urandom(300), "m-1"), 100)
    reassembler.accept(as_delivery(parts[0]))
    reassembler.accept(as_delivery(parts[2]))
    dead: list[tuple[str, list[Message]]] = []
    sweeper = ChunkSweeper(
        store,
        lambda topic, ms: dead.append((topic, ms)),
        reassembly_timeout=600,
        clock=lambda: now[0],
    )

    early = sweeper.sweep_once()
    now[0] = 1700.0
    late = sweeper.sweep_once()

    assert (early, late) == (0, 1)
    topic, messages = dead[0]
    assert topic == "t"
    assert [m.message_id for m in messages] == ["m-1:c0", "m-1:c2"]
    assert {m.headers[HEADER_DEAD_REASON] for m in messages} == {
        "incomplete: 2 of 3 chunks after 700 s"
    }
    assert store.expired(now[0]) == []


# -- ChunkStore contract ---------------------------------------------------------------------


def info_for(message_id: str, count: int = 3) -> ChunkSetInfo:
    return ChunkSetInfo(
        topic="t",
        message_id=message_id,
        count=count,
        total_bytes=count,
        sha256="00",
        headers={"k": "v"},
        reply_to="r",
        correlation_id="c",
    )


class ChunkStoreContract:
    @pytest.fixture
    def store(self) -> Iterator[ChunkStore]:
        raise NotImplementedError

    def test_put_counts_distinct_chunks_and_ignores_duplicates(self, store: ChunkStore) -> None:
        info = info_for("m-1")

        counts = [store.put(info, i, bytes([i]), now=1.0) for i in (0, 2, 2, 1)]

        assert counts == [1, 2, 2, 3]
        assert [(c.index, c.body) for c in store.load("t", "m-1")] == [
            (0, b"\x00"),
            (1, b"\x01"),
            (2, b"\x02"),
        ]

    def test_finished_set_is_remembered_until_purged(self, store: ChunkStore) -> None:
        info = info_for("m-1")
        store.put(info, 0, b"a", now=1.0)

        store.finish("t", "m-1", now=2.0)

        assert store.load("t", "m-1") == []
        assert store.put(info, 1, b"b", now=3.0) == -1
        assert store.purge_finished(older_than=2.5) == 1
        assert store.put(info, 1, b"b", now=4.0) == 1

    def test_expired_lists_only_old_unfinished_sets_with_their_manifest(
        self, store: ChunkStore
    ) -> None:
        store.put(info_for("m-old"), 0, b"a", now=10.0)
        store.put(info_for("m-new"), 0, b"a", now=100.0)
        store.put(info_for("m-done"), 0, b"a", now=10.0)
        store.finish("t", "m-done", now=11.0)

        expired = store.expired(older_than=50.0)

        assert [(e.info.message_id, e.stored, e.first_seen) for e in expired] == [
            ("m-old", 1, 10.0)
        ]
        assert expired[0].info == info_for("m-old")

    def test_of_two_racing_last_chunks_at_least_one_sees_the_set_complete(
        self, store: ChunkStore
    ) -> None:
        for round_ in range(10):
            info = info_for(f"m-{round_}", count=3)
            store.put(info, 0, b"a", now=1.0)
            barrier = threading.Barrier(2)
            counts: list[int] = []

            def put_last(
                index: int,
                info: ChunkSetInfo = info,
                barrier: threading.Barrier = barrier,
                counts: list[int] = counts,
            ) -> None:
                barrier.wait()
                counts.append(store.put(info, index, b"z", now=1.0))

            threads = [threading.Thread(target=put_last, args=(i,)) for i in (1, 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

            assert max(counts) == 3, counts


class TestInMemoryChunkStore(ChunkStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[ChunkStore]:
        yield InMemoryChunkStore()


class TestSqliteChunkStore(ChunkStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ChunkStore]:
        store = SqlChunkStore(f"sqlite:///{tmp_path / 'chunks.db'}")
        assert store.durable
        yield store
        store.close()


class TestPostgresChunkStore(ChunkStoreContract):
    @pytest.fixture
    def store(self, pg_url: str) -> Iterator[ChunkStore]:
        store = SqlChunkStore(pg_url)
        yield store
        store.close()
