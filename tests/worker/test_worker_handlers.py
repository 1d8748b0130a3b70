"""The worker in-process on the memory bus: with its test hooks, demo.ping is recorded once and
answered once; without them the test-only code is not loaded and demo.ping is dead-lettered."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fedbus import HEADER_DEAD_REASON, Bus, Delivery, connect
from fedbus.runtime import EnvelopePublisher
from fedbus.sql_inbox import inbox_table
from fedschemas import DemoPong, PartyRef, decode_envelope, decode_payload
from fedworker.main import Worker
from fedworker.settings import WorkerSettings
from fedworker.testing import pings_table
from pydantic import SecretStr

from tests.polling import wait_for_dead_letters, wait_until
from tests.runtime.helpers import GUEST, ping
from tests.scripts import run_script


@pytest.fixture
def settings(unique_name: str, tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        party_id="10000",
        bus_url=SecretStr(f"memory://{unique_name}"),
        database_url=SecretStr(f"sqlite:///{tmp_path / 'worker.db'}"),
        test_hooks=True,  # demo.ping's handler (fedworker.testing)
    )


@pytest.fixture
def worker(settings: WorkerSettings) -> Iterator[Worker]:
    worker = Worker(settings)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def client(settings: WorkerSettings) -> Iterator[Bus]:
    bus = connect(settings.bus_url.get_secret_value())
    yield bus
    bus.close()


class Replies:
    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self.lock = threading.Lock()

    def __call__(self, delivery: Delivery) -> None:
        with self.lock:
            self.items.append(delivery)


def ping_rows(worker: Worker) -> list[tuple[str, int]]:
    with worker.engine.connect() as conn:
        query = sa.select(pings_table.c.message_id, pings_table.c.n).order_by(pings_table.c.id)
        return [(row.message_id, row.n) for row in conn.execute(query)]


def test_ping_is_recorded_and_answered_with_pong(worker: Worker, client: Bus) -> None:
    # Prepare
    replies = Replies()
    client.subscribe(worker.settings.reply_topic, replies)
    sent = ping(seq=4, text="hi")
    # Execute
    EnvelopePublisher(client, GUEST).send(worker.settings.topic, sent)
    # Assert
    wait_until(lambda: len(replies.items) == 1, what="the pong")
    pong = decode_envelope(replies.items[0].body)
    assert decode_payload(pong, DemoPong) == DemoPong(text="hi", n=5)
    assert pong.source == PartyRef(party_id="10000", role="host")
    assert pong.destination == GUEST
    assert (pong.job_id, pong.seq) == (sent.job_id, sent.seq)
    assert ping_rows(worker) == [(sent.message_id, 4)]


def test_duplicate_ping_is_recorded_and_answered_once(worker: Worker, client: Bus) -> None:
    replies = Replies()
    client.subscribe(worker.settings.reply_topic, replies)
    publisher = EnvelopePublisher(client, GUEST)
    sent = ping(seq=1)

    publisher.send(worker.settings.topic, sent)
    publisher.send(worker.settings.topic, sent)
    publisher.send(worker.settings.topic, ping(seq=2))

    wait_until(lambda: len(replies.items) == 2, what="two pongs")
    wait_until(lambda: len(ping_rows(worker)) == 2, what="two rows")
    assert sorted(n for _, n in ping_rows(worker)) == [1, 2]
    pong_ids = [r.message_id for r in replies.items]
    assert len(set(pong_ids)) == 2


def test_pong_id_is_deterministic_from_the_ping(
    settings: WorkerSettings, client: Bus, tmp_path: Path
) -> None:
    # Prepare: two workers with separate databases will answer the same ping in turn, as a
    # worker that lost its state and re-ran would.
    client.declare(settings.reply_topic)
    replies = Replies()
    client.subscribe(settings.reply_topic, replies)
    # Execute
    for expected, name in enumerate(("a", "b"), start=1):
        db = SecretStr(f"sqlite:///{tmp_path / f'{name}.db'}")
        w = Worker(settings.model_copy(update={"database_url": db}))
        w.start()
        EnvelopePublisher(client, GUEST).send(settings.topic, ping(seq=9))
        wait_until(lambda n=expected: len(replies.items) == n, what=f"pong {expected}")
        w.stop()
    # Assert: the same id, so the receiver's inbox drops the second answer.
    assert replies.items[0].message_id == replies.items[1].message_id


def test_ping_for_another_party_is_dead_lettered(worker: Worker, client: Bus) -> None:
    wrong = ping().model_copy(update={"destination": PartyRef(party_id="777", role="host")})

    EnvelopePublisher(client, GUEST).send(worker.settings.topic, wrong)

    found = wait_for_dead_letters(client, worker.settings.topic, 1)
    assert found[0].headers[HEADER_DEAD_REASON] == "addressed to party 777, this is party 10000"
    assert ping_rows(worker) == []


def test_crash_hook_is_refused_outside_development() -> None:
    with pytest.raises(ValueError, match="test hook"):
        WorkerSettings(
            environment="production",
            crash_after_effect="m-1",
            bus_url=SecretStr("amqp://fed:long-secret@h/"),
            database_url=SecretStr("postgresql://h/db"),
        )


PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "bus_url": SecretStr("amqp://fed:long-secret@h/"),
    "database_url": SecretStr("postgresql://h/db"),
    "checkpoint_key": SecretStr("k" * 40),
}


def test_test_hooks_are_refused_in_production() -> None:
    WorkerSettings(**PRODUCTION)  # the same settings start without the hooks

    with pytest.raises(ValueError, match="test_hooks loads test-only code, refused in production"):
        WorkerSettings(**PRODUCTION, test_hooks=True)


def test_the_crash_hook_needs_the_test_hooks_setting() -> None:
    with pytest.raises(ValueError, match="needs test_hooks"):
        WorkerSettings(crash_after_effect="m-1")


@pytest.mark.parametrize(("test_hooks", "expected"), [("false", "not loaded"), ("true", "loaded")])
def test_the_test_only_module_is_imported_only_with_test_hooks(
    tmp_path: Path, test_hooks: str, expected: str
) -> None:
    # Execute: a worker wired and started in a fresh interpreter (nothing imported before).
    out = run_script("worker_test_hooks_loaded.py", f"sqlite:///{tmp_path / 'w.db'}", test_hooks)

    # Assert
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == expected


def test_without_test_hooks_a_ping_is_dead_lettered_unanswered_and_leaves_no_table(
    settings: WorkerSettings, client: Bus
) -> None:
    # Prepare: the production handler table (no test hooks), a listener on the reply topic.
    plain = Worker(settings.model_copy(update={"test_hooks": False}))
    plain.start()
    client.declare(settings.reply_topic)
    replies = Replies()
    client.subscribe(settings.reply_topic, replies)
    try:
        # Execute
        sent = ping(seq=5)
        EnvelopePublisher(client, GUEST).send(settings.topic, sent)

        # Assert: refused like any type the worker does not handle; no pong; no demo table.
        dead = wait_for_dead_letters(client, settings.topic, 1)
        assert [d.message_id for d in dead] == [sent.message_id]
        assert replies.items == []
        assert "worker_pings" not in sa.inspect(plain.engine).get_table_names()
    finally:
        plain.stop()


@pytest.mark.integration
def test_worker_with_redis_cache_records_done_markers_in_both(
    settings: WorkerSettings, client: Bus, redis_url: str, unique_name: str
) -> None:
    # Prepare: the same worker, with the Redis cache in front of its SQL inbox.
    import redis

    prefix = f"fedmq:test:{unique_name}:"
    worker = Worker(
        settings.model_copy(update={"redis_url": SecretStr(redis_url), "redis_prefix": prefix})
    )
    worker.start()
    cache = redis.Redis.from_url(redis_url)
    sent = ping(seq=3)
    try:
        # Execute
        publisher = EnvelopePublisher(client, GUEST)
        publisher.send(settings.topic, sent)
        publisher.send(settings.topic, sent)
        # One consumer handles the queue in order: once the marker ping is in, so is the copy.
        marker_ping = ping(seq=4)
        publisher.send(settings.topic, marker_ping)
        wait_until(lambda: len(ping_rows(worker)) >= 2, what="the rows")
        # Assert: one effect; the marker is in SQL (the record) and in Redis (the cache).
        assert ping_rows(worker) == [(sent.message_id, 3), (marker_ping.message_id, 4)]
        assert cache.exists(prefix + sent.message_id) == 1
        with worker.engine.connect() as conn:
            marker = sa.select(inbox_table).where(inbox_table.c.message_id == sent.message_id)
            assert conn.execute(marker).first() is not None
    finally:
        worker.stop()
        cache.delete(prefix + sent.message_id, prefix + marker_ping.message_id)
        cache.close()
