"""The worker as a real process on RabbitMQ and PostgreSQL.

- Crash between effect and ack: the worker dies (test hook: os._exit right after the inbox
  commit, before the ack); the broker redelivers the ping to the restarted worker, whose inbox
  drops it. The effect row exists exactly once and the queue ends empty.
- Garbage: raw bytes published with a plain AMQP client straight into the worker's queue are
  dead-lettered with a reason (x-fedmq-dead-reason on the DLQ) and logged; the worker keeps
  running and handles a valid ping sent afterwards. Also oversize, unknown type, unknown
  version, and a known type the worker has no handler for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import sqlalchemy as sa
from fedbus import HEADER_DEAD_REASON, Bus, connect
from fedbus.runtime import EnvelopePublisher
from fedbus.sql_inbox import inbox_table
from fedschemas import DemoPong, decode_envelope, decode_payload, encode_envelope
from fedworker.testing import CRASH_EXIT_CODE, pings_table

from tests.bus.raw_amqp import BasicProperties, RawAmqp
from tests.polling import wait_until
from tests.runtime.helpers import GUEST, HOST, demo_envelope, ping
from tests.worker.conftest import StartWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def client(amqp_url: str) -> Iterator[Bus]:
    bus = connect(amqp_url)
    yield bus
    bus.close()


@pytest.fixture
def rabbit(amqp_url: str) -> Iterator[Any]:
    connection = RawAmqp(amqp_url)
    yield connection.channel()
    connection.close()


def worker_settings(amqp_url: str, pg_url: str, worker_topics: tuple[str, str]) -> dict[str, str]:
    return {
        "party_id": "10000",
        "bus_url": amqp_url,
        "database_url": pg_url,
        "topic": worker_topics[0],
        "reply_topic": worker_topics[1],
        "test_hooks": "true",  # demo.ping's handler and the crash hook
    }


def ready_count(channel: Any, queue: str) -> int:
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def take_all(channel: Any, queue: str) -> list[tuple[Any, bytes]]:
    taken = []
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return taken
        taken.append((props, body))


def count_rows(pg_url: str, table: sa.Table, message_id: str) -> int:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(table)
            return int(conn.execute(query.where(table.c.message_id == message_id)).scalar_one())
    finally:
        engine.dispose()


def test_crash_after_effect_before_ack_is_redelivered_and_dropped_as_duplicate(
    start_worker: StartWorker,
    amqp_url: str,
    pg_url: str,
    worker_topics: tuple[str, str],
    client: Bus,
    rabbit: Any,
) -> None:
    # Prepare: a worker told to die right after this ping's inbox commit.
    topic, replies = worker_topics
    sent = ping(seq=1, text="pay once")
    doomed = start_worker(
        **worker_settings(amqp_url, pg_url, worker_topics), crash_after_effect=sent.message_id
    )
    # Execute 1: the ping is handled, committed, and the process dies before acking.
    EnvelopePublisher(client, GUEST).send(topic, sent)
    assert doomed.wait_exit(60) == CRASH_EXIT_CODE
    # Assert 1: the effect and marker committed; the message is back on the queue, unacked.
    assert count_rows(pg_url, pings_table, sent.message_id) == 1
    assert count_rows(pg_url, inbox_table, sent.message_id) == 1
    wait_until(lambda: ready_count(rabbit, topic) == 1, timeout=30, what="the requeued ping")

    # Execute 2: restart; the redelivered ping meets its done marker.
    survivor = start_worker(**worker_settings(amqp_url, pg_url, worker_topics))
    dropped = survivor.wait_for("message_duplicate_dropped", message_id=sent.message_id)
    assert survivor.terminate() == 0
    # Assert 2: one effect, one answer, nothing left on the queue or dead-lettered.
    assert dropped["delivery_count"] >= 2
    assert survivor.events("worker_stopped")
    assert count_rows(pg_url, pings_table, sent.message_id) == 1
    assert ready_count(rabbit, topic) == 0
    assert take_all(rabbit, topic + ".dlq") == []
    answers = take_all(rabbit, replies)
    assert len(answers) == 1
    assert decode_payload(decode_envelope(answers[0][1]), DemoPong).n == 2


def _envelope_bytes_with(index: int, value: Any) -> bytes:
    items = msgpack.unpackb(encode_envelope(ping(seq=50)))
    items[index] = value
    return msgpack.packb(items)


def test_garbage_in_the_queue_is_dead_lettered_with_reason_and_worker_keeps_running(
    start_worker: StartWorker,
    amqp_url: str,
    pg_url: str,
    worker_topics: tuple[str, str],
    client: Bus,
    rabbit: Any,
) -> None:
    # Prepare: a running worker with a small envelope limit (so "oversize" is cheap to send).
    topic, replies = worker_topics
    worker = start_worker(
        **worker_settings(amqp_url, pg_url, worker_topics), max_envelope_bytes="65536"
    )
    # From the worker's own party: a remote source would be refused before any handler lookup
    # (only the gateway's broker user may publish those).
    pong_for_worker = demo_envelope(
        DemoPong(text="nobody handles me here", n=0), "demo.pong", source=HOST
    )
    bad = {
        "garbage": b"\x00\xffthis is not an envelope\xc1\xc1",
        "oversize": encode_envelope(ping(seq=51, text="x" * 100_000)),
        "unknown-type": _envelope_bytes_with(3, "demo.teleport"),
        "unknown-version": _envelope_bytes_with(2, 99),
        "no-handler": encode_envelope(pong_for_worker),
    }
    # Execute: publish each with a plain AMQP client, straight into the worker's queue.
    for name, body in bad.items():
        rabbit.basic_publish(
            exchange="",
            routing_key=topic,
            body=body,
            properties=BasicProperties(delivery_mode=2, message_id=f"raw-{name}"),
        )
    dead: list[tuple[Any, bytes]] = []
    wait_until(
        lambda: bool(dead.extend(take_all(rabbit, topic + ".dlq"))) or len(dead) >= len(bad),
        timeout=60,
        what="five dead letters",
    )
    valid = ping(seq=52, text="still there?")
    EnvelopePublisher(client, GUEST).send(topic, valid)
    worker.wait_for("ping_handled", message_id=valid.message_id)
    # Assert: each dead letter carries its reason, in the DLQ and in the log.
    reasons = {props.message_id: props.headers[HEADER_DEAD_REASON] for props, _ in dead}
    assert set(reasons) == {f"raw-{name}" for name in bad}
    assert reasons["raw-garbage"].startswith("envelope is not valid msgpack")
    assert "over the limit of 65536 bytes" in reasons["raw-oversize"]
    assert "unknown message type 'demo.teleport'" in reasons["raw-unknown-type"]
    assert "unknown schema version 99" in reasons["raw-unknown-version"]
    assert reasons["raw-no-handler"] == f"no handler for message type 'demo.pong' on {topic!r}"
    logged = {line["message_id"]: line["reason"] for line in worker.events("message_dead_lettered")}
    assert logged == reasons
    # ... and the worker is alive and answered the valid ping.
    assert worker.proc.poll() is None
    answers = [decode_envelope(body) for _, body in take_all(rabbit, replies)]
    assert [decode_payload(a, DemoPong).text for a in answers] == ["still there?"]
    assert worker.terminate() == 0
