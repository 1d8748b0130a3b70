"""Inbox contract: every Inbox runs an effect at most once per message id, atomically with its
done marker. One suite, subclassed per implementation; SQL and Redis run on the real servers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
from fedbus.in_memory_inbox import InMemoryInbox
from fedbus.inbox import Inbox, InboxTransaction
from fedbus.inbox_factory import make_inbox
from fedbus.redis_cached_inbox import RedisCachedInbox
from fedbus.sql_inbox import SqlInbox, create_tables, inbox_table, make_engine
from sqlalchemy.exc import IntegrityError

effects_metadata = sa.MetaData()
effects_table = sa.Table(
    "test_effects",
    effects_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("unique_tag", sa.String(64), unique=True),
)


class Counter:
    """Counts effect runs across threads."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self._lock = threading.Lock()

    def effect(self, message_id: str):  # type: ignore[no-untyped-def]
        def run(tx: InboxTransaction) -> None:
            with self._lock:
                self.runs.append(message_id)

        return run


class InboxContract:
    """Subclasses provide the `inbox` fixture."""

    @pytest.fixture
    def inbox(self) -> Iterator[Inbox]:
        raise NotImplementedError

    def test_first_delivery_runs_effect_and_marks_done(self, inbox: Inbox) -> None:
        # Prepare
        counter = Counter()
        # Execute
        ran = inbox.process("m-1", counter.effect("m-1"))
        # Assert
        assert ran is True
        assert counter.runs == ["m-1"]
        assert inbox.is_done("m-1")

    def test_same_id_again_is_dropped_without_running_effect(self, inbox: Inbox) -> None:
        counter = Counter()
        inbox.process("m-1", counter.effect("m-1"))

        again = [inbox.process("m-1", counter.effect("m-1")) for _ in range(3)]

        assert again == [False, False, False]
        assert counter.runs == ["m-1"]

    def test_distinct_ids_each_run_once_in_a_stream_with_duplicates(self, inbox: Inbox) -> None:
        counter = Counter()
        stream = ["a", "b", "a", "c", "b", "b", "d", "a"]

        results = [inbox.process(mid, counter.effect(mid)) for mid in stream]

        assert results == [True, True, False, True, False, False, True, False]
        assert sorted(counter.runs) == ["a", "b", "c", "d"]

    def test_failed_effect_leaves_no_marker_and_redelivery_runs_it(self, inbox: Inbox) -> None:
        counter = Counter()

        def crash(tx: InboxTransaction) -> None:
            raise RuntimeError("handler bug")

        with pytest.raises(RuntimeError):
            inbox.process("m-1", crash)
        assert not inbox.is_done("m-1")
        ran = inbox.process("m-1", counter.effect("m-1"))

        assert ran is True
        assert counter.runs == ["m-1"]

    def test_concurrent_duplicates_run_effect_exactly_once(self, inbox: Inbox) -> None:
        # Prepare: 6 consumers receive the same message at the same moment.
        counter = Counter()
        barrier = threading.Barrier(6)
        results: list[bool] = []
        errors: list[BaseException] = []

        def slow_effect(tx: InboxTransaction) -> None:
            counter.effect("dup")(tx)
            threading.Event().wait(0.05)  # widen the window between marker and commit

        def consume() -> None:
            barrier.wait()
            try:
                results.append(inbox.process("dup", slow_effect))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=consume) for _ in range(6)]
        # Execute
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # Assert
        assert errors == []
        assert sorted(results) == [False] * 5 + [True]
        assert counter.runs == ["dup"]

    # -- process_batch (group commit) --------------------------------------------------------

    def test_batch_runs_every_effect_in_order_and_marks_all_done(self, inbox: Inbox) -> None:
        # Prepare
        counter = Counter()
        ids = ["c", "a", "b"]
        # Execute
        ran = inbox.process_batch([(m, counter.effect(m)) for m in ids])
        # Assert
        assert ran == [True, True, True]
        assert counter.runs == ids
        assert all(inbox.is_done(m) for m in ids)

    def test_batch_drops_ids_already_done_and_repeats_within_the_batch(self, inbox: Inbox) -> None:
        counter = Counter()
        inbox.process("a", counter.effect("a"))

        ran = inbox.process_batch([(m, counter.effect(m)) for m in ["b", "a", "c", "b", "c"]])

        assert ran == [True, False, True, False, False]
        assert counter.runs == ["a", "b", "c"]

    def test_empty_batch_does_nothing(self, inbox: Inbox) -> None:
        assert inbox.process_batch([]) == []

    def test_failed_batch_can_be_processed_again_one_by_one(self, inbox: Inbox) -> None:
        # Prepare: the second effect fails the first time only (a transient error).
        counter = Counter()
        failures = ["once"]

        def flaky(tx: InboxTransaction) -> None:
            if failures:
                failures.pop()
                raise RuntimeError("transient")
            counter.effect("b")(tx)

        items = [("a", counter.effect("a")), ("b", flaky), ("c", counter.effect("c"))]
        # Execute: the batch fails; the consumer then processes the same items one by one.
        with pytest.raises(RuntimeError):
            inbox.process_batch(items)
        ran_again = [inbox.process(m, effect) for m, effect in items]
        # Assert: the failed item and the one after it run now; afterwards all are done.
        # (Whether "a" ran again depends on the inbox: the SQL batch rolled it back, the
        # default per-item batch had committed it. The SQL tests count committed effects.)
        assert ran_again[1:] == [True, True]
        assert [inbox.process(m, effect) for m, effect in items] == [False] * 3
        assert all(inbox.is_done(m) for m in "abc")


class TestInMemoryInbox(InboxContract):
    @pytest.fixture
    def inbox(self) -> Iterator[Inbox]:
        yield InMemoryInbox()


class SqlInboxContract(InboxContract):
    """Adds what only a SQL inbox promises: the effect commits with the marker, durably."""

    @pytest.fixture
    def database_url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def inbox(self, database_url: str) -> Iterator[Inbox]:
        inbox = SqlInbox(database_url)
        create_tables(effects_metadata, inbox.engine)
        yield inbox
        inbox.close()

    @staticmethod
    def _sql(inbox: Inbox) -> SqlInbox:
        return inbox.sql if isinstance(inbox, RedisCachedInbox) else inbox  # type: ignore[return-value]

    @staticmethod
    def write_effect(tag: str | None = None):  # type: ignore[no-untyped-def]
        def run(tx: InboxTransaction) -> None:
            tx.require_session().execute(
                sa.insert(effects_table), {"message_id": tx.message_id, "unique_tag": tag}
            )

        return run

    def effect_rows(self, inbox: Inbox) -> list[str]:
        with self._sql(inbox).engine.connect() as conn:
            return list(conn.execute(sa.select(effects_table.c.message_id)).scalars())

    def test_effect_written_in_the_session_commits_with_the_marker(self, inbox: Inbox) -> None:
        inbox.process("m-1", self.write_effect())
        inbox.process("m-1", self.write_effect())

        assert self.effect_rows(inbox) == ["m-1"]

    def test_effect_that_fails_after_writing_rolls_back_its_writes(self, inbox: Inbox) -> None:
        def write_then_crash(tx: InboxTransaction) -> None:
            self.write_effect()(tx)
            raise RuntimeError("crash after the write, before the commit")

        with pytest.raises(RuntimeError):
            inbox.process("m-1", write_then_crash)

        assert self.effect_rows(inbox) == []
        assert not inbox.is_done("m-1")

    def test_integrity_error_from_the_effect_is_a_failure_not_a_duplicate(
        self, inbox: Inbox
    ) -> None:
        # Prepare: a committed effect holds unique_tag "x".
        inbox.process("m-1", self.write_effect(tag="x"))
        # Execute: a different message whose effect violates that constraint.
        with pytest.raises(IntegrityError):
            inbox.process("m-2", self.write_effect(tag="x"))
        # Assert: m-2 is not marked done, so a fixed handler can still process it.
        assert not inbox.is_done("m-2")
        assert inbox.process("m-2", self.write_effect(tag="y")) is True

    def test_markers_survive_a_restart(self, inbox: Inbox, database_url: str) -> None:
        inbox.process("m-1", self.write_effect())

        reopened = SqlInbox(database_url)
        try:
            ran_again = reopened.process("m-1", self.write_effect())
        finally:
            reopened.close()

        assert ran_again is False
        assert self.effect_rows(inbox) == ["m-1"]

    def test_batch_effects_commit_with_their_markers(self, inbox: Inbox) -> None:
        ran = inbox.process_batch([(m, self.write_effect()) for m in ["m-1", "m-2", "m-1"]])
        again = inbox.process_batch([(m, self.write_effect()) for m in ["m-2", "m-3"]])

        assert (ran, again) == ([True, True, False], [False, True])
        assert sorted(self.effect_rows(inbox)) == ["m-1", "m-2", "m-3"]

    def test_failed_batch_then_one_by_one_commits_each_effect_once(self, inbox: Inbox) -> None:
        # Prepare: m-2's effect writes, then fails the first time only.
        failures = ["once"]

        def write_then_fail_once(tx: InboxTransaction) -> None:
            self.write_effect()(tx)
            if failures:
                failures.pop()
                raise RuntimeError("transient")

        items = [
            ("m-1", self.write_effect()),
            ("m-2", write_then_fail_once),
            ("m-3", self.write_effect()),
        ]
        # Execute: what a consumer does: the group fails, then each message alone.
        with pytest.raises(RuntimeError):
            inbox.process_batch(items)
        for message_id, effect in items:
            inbox.process(message_id, effect)
        # Assert
        assert sorted(self.effect_rows(inbox)) == ["m-1", "m-2", "m-3"]

    def test_failed_batch_records_nothing_at_all(self, inbox: Inbox) -> None:
        # Prepare: the last effect of the batch violates a unique constraint.
        inbox.process("m-0", self.write_effect(tag="taken"))
        items = [
            ("m-1", self.write_effect(tag="one")),
            ("m-2", self.write_effect(tag="two")),
            ("m-3", self.write_effect(tag="taken")),
        ]
        # Execute
        with pytest.raises(IntegrityError):
            inbox.process_batch(items)
        # Assert: one transaction: neither the good effects nor any marker were kept.
        assert self.effect_rows(inbox) == ["m-0"]
        assert not any(inbox.is_done(m) for m in ["m-1", "m-2", "m-3"])

    def test_concurrent_overlapping_batches_run_each_effect_once(self, inbox: Inbox) -> None:
        # Prepare: 4 consumers get overlapping groups in different orders (redeliveries to
        # replicas), so their marker inserts contend on the same keys.
        # Large groups in opposite orders make their marker INSERTs overlap in time: without a
        # common lock order two of them would deadlock (and PostgreSQL abort one).
        ids = [f"m-{i:03d}" for i in range(400)]
        groups = [ids, ids[::-1], ids[1::2] + ids[0::2], ids[200:][::-1] + ids[:200]]
        barrier = threading.Barrier(len(groups))
        ran: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def consume(group: list[str]) -> None:
            barrier.wait()
            try:
                results = inbox.process_batch([(m, self.write_effect()) for m in group])
            except BaseException as exc:
                errors.append(exc)
                return
            with lock:
                ran.extend(m for m, r in zip(group, results, strict=True) if r)

        threads = [threading.Thread(target=consume, args=(g,)) for g in groups]
        # Execute
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # Assert: no deadlock aborted a batch, and every id's effect committed exactly once.
        assert errors == []
        assert sorted(ran) == ids
        assert sorted(self.effect_rows(inbox)) == ids


class TestSqlInboxOnSqlite(SqlInboxContract):
    @pytest.fixture
    def database_url(self, tmp_path) -> str:  # type: ignore[no-untyped-def]
        return f"sqlite:///{tmp_path / 'nested' / 'inbox.db'}"

    def test_creates_the_database_directory(self, inbox: Inbox, tmp_path) -> None:  # type: ignore[no-untyped-def]
        assert (tmp_path / "nested" / "inbox.db").exists()


@pytest.mark.integration
class TestSqlInboxOnPostgres(SqlInboxContract):
    @pytest.fixture
    def database_url(self, pg_url: str) -> str:
        return pg_url

    def test_plain_postgresql_url_gets_the_installed_driver(self, pg_url: str) -> None:
        plain = pg_url.replace("postgresql+psycopg://", "postgresql://")

        engine = make_engine(plain)
        try:
            with engine.connect() as conn:
                assert conn.execute(sa.text("select 1")).scalar() == 1
        finally:
            engine.dispose()


@pytest.mark.integration
class TestRedisCachedInbox(SqlInboxContract):
    @pytest.fixture
    def database_url(self, pg_url: str) -> str:
        return pg_url

    @pytest.fixture
    def prefix(self, unique_name: str) -> str:
        return f"fedmq:test:{unique_name}:"

    @pytest.fixture
    def redis_client(self, redis_url: str, prefix: str) -> Iterator[redis.Redis]:
        client = redis.Redis.from_url(redis_url)
        yield client
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()

    @pytest.fixture
    def inbox(  # type: ignore[override]
        self, database_url: str, redis_url: str, prefix: str, redis_client: redis.Redis
    ) -> Iterator[Inbox]:
        inbox = make_inbox(database_url, redis_url=redis_url, redis_prefix=prefix)
        assert isinstance(inbox, RedisCachedInbox)
        create_tables(effects_metadata, inbox.sql.engine)
        yield inbox
        inbox.close()

    def test_done_marker_is_cached_in_redis_after_commit(
        self, inbox: Inbox, redis_client: redis.Redis, prefix: str
    ) -> None:
        inbox.process("m-1", self.write_effect())

        assert redis_client.exists(prefix + "m-1") == 1
        assert 0 < redis_client.pttl(prefix + "m-1") <= 24 * 3600 * 1000

    def test_failed_effect_leaves_no_redis_key(
        self, inbox: Inbox, redis_client: redis.Redis, prefix: str
    ) -> None:
        def crash(tx: InboxTransaction) -> None:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            inbox.process("m-1", crash)

        assert redis_client.exists(prefix + "m-1") == 0

    def test_cached_marker_answers_without_the_database(
        self, inbox: Inbox, database_url: str
    ) -> None:
        # Prepare: process once, then delete the SQL marker behind the cache's back.
        inbox.process("m-1", self.write_effect())
        with self._sql(inbox).engine.begin() as conn:
            conn.execute(sa.delete(inbox_table))
        # Execute
        ran = inbox.process("m-1", self.write_effect())
        # Assert: Redis answered "done", so the effect did not run again.
        assert ran is False
        assert self.effect_rows(inbox) == ["m-1"]

    def test_lost_cache_falls_back_to_sql(
        self, inbox: Inbox, redis_client: redis.Redis, prefix: str
    ) -> None:
        # Prepare: Redis forgets everything (it keeps nothing on disk here).
        inbox.process("m-1", self.write_effect())
        redis_client.delete(prefix + "m-1")
        # Execute
        ran = inbox.process("m-1", self.write_effect())
        # Assert: SQL still drops the duplicate, and the cache is refilled.
        assert ran is False
        assert self.effect_rows(inbox) == ["m-1"]
        assert redis_client.exists(prefix + "m-1") == 1

    def test_batch_caches_every_marker_after_commit(
        self, inbox: Inbox, redis_client: redis.Redis, prefix: str
    ) -> None:
        inbox.process_batch([(m, self.write_effect()) for m in ["m-1", "m-2"]])

        assert redis_client.exists(prefix + "m-1", prefix + "m-2") == 2

    def test_batch_takes_cached_markers_from_redis_and_the_rest_from_sql(
        self, inbox: Inbox
    ) -> None:
        # Prepare: m-1 is done and cached; its SQL marker is deleted behind the cache's back.
        inbox.process("m-1", self.write_effect())
        with self._sql(inbox).engine.begin() as conn:
            conn.execute(sa.delete(inbox_table))
        # Execute
        ran = inbox.process_batch([(m, self.write_effect()) for m in ["m-1", "m-2"]])
        # Assert: Redis answered for m-1 (its effect did not run again), SQL ran m-2.
        assert ran == [False, True]
        assert sorted(self.effect_rows(inbox)) == ["m-1", "m-2"]

    def test_failed_batch_leaves_no_redis_keys(
        self, inbox: Inbox, redis_client: redis.Redis, prefix: str
    ) -> None:
        def crash(tx: InboxTransaction) -> None:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            inbox.process_batch([("m-1", self.write_effect()), ("m-2", crash)])

        assert redis_client.exists(prefix + "m-1", prefix + "m-2") == 0

    def test_unreachable_redis_degrades_to_sql_only(self, database_url: str) -> None:
        # Prepare: a Redis URL where nothing listens (port 1 on loopback).
        sql = SqlInbox(database_url)
        create_tables(effects_metadata, sql.engine)
        inbox = RedisCachedInbox(sql, "redis://127.0.0.1:1/0", prefix="x:", socket_timeout=0.2)
        try:
            # Execute
            first = inbox.process("m-1", self.write_effect())
            second = inbox.process("m-1", self.write_effect())
        finally:
            inbox.close()
        # Assert
        assert (first, second) == (True, False)
        with sql.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(effects_table)).scalar() == 1


def test_memory_url_gives_an_in_memory_inbox() -> None:
    assert isinstance(make_inbox("memory://"), InMemoryInbox)
