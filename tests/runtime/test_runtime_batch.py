"""EnvelopeConsumer in batch mode (`batch_size` > 1): envelopes waiting together are handled
in one inbox transaction, and each keeps the per-message promises: malformed ones dead-lettered
alone with their reason, duplicates dropped, a failing handler retried alone, one span each.
On the memory bus, plus the crash window on real RabbitMQ and PostgreSQL (a killed process)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Sequence

import pytest
import sqlalchemy as sa
from fedbus import HEADER_DEAD_REASON, Bus, Message, connect
from fedbus.inbox import BatchItem, InboxTransaction
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher
from fedbus.sql_inbox import SqlInbox, create_tables
from fedcommon.tracing import make_tracer_provider
from fedschemas import DemoPing, Envelope, Payload
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.polling import wait_for_dead_letters, wait_until
from tests.runtime.helpers import GUEST, events, ping
from tests.scripts import kill_after_line

rows_metadata = sa.MetaData()
rows_table = sa.Table(
    "batch_rows",
    rows_metadata,
    # No unique constraint on message_id: a second effect would be a second row.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
)


class GroupInbox(SqlInbox):
    """A SqlInbox that records the size of every process_batch call (one per transaction)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        create_tables(rows_metadata, self.engine)
        self.batches: list[int] = []

    def process_batch(self, items: Sequence[BatchItem]) -> list[bool]:
        self.batches.append(len(items))
        return super().process_batch(items)

    def rows(self) -> list[tuple[str, int]]:
        with self.engine.connect() as conn:
            query = sa.select(rows_table.c.message_id, rows_table.c.n).order_by(rows_table.c.id)
            return [(m, n) for m, n in conn.execute(query)]


def write_row(envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
    assert isinstance(payload, DemoPing)
    tx.require_session().execute(
        sa.insert(rows_table), {"message_id": envelope.message_id, "n": payload.n}
    )


@pytest.fixture
def inbox(tmp_path) -> Iterator[GroupInbox]:  # type: ignore[no-untyped-def]
    inbox = GroupInbox(f"sqlite:///{tmp_path / 'svc.db'}")
    yield inbox
    inbox.close()


def batched(bus: Bus, topic: str, inbox: GroupInbox, **options: object) -> EnvelopeConsumer:
    consumer = EnvelopeConsumer(
        bus,
        topic,
        {"demo.ping": write_row},
        inbox,
        batch_size=64,
        batch_wait=0.3,
        **options,  # type: ignore[arg-type]
    )
    consumer.start()
    return consumer


def test_waiting_envelopes_commit_together_each_effect_once(
    bus: Bus, topic: str, inbox: GroupInbox
) -> None:
    # Prepare: 30 envelopes queued before the consumer starts.
    EnvelopePublisher(bus, GUEST).send_many(topic, [ping(seq=i) for i in range(30)])
    # Execute
    consumer = batched(bus, topic, inbox)
    # Assert: every effect once, in publish order, in far fewer transactions than messages.
    wait_until(lambda: len(inbox.rows()) == 30, what="30 rows")
    assert [n for _, n in inbox.rows()] == list(range(30))
    assert sum(inbox.batches) == 30
    assert len(inbox.batches) < 30
    consumer.stop()


def test_batch_size_one_is_the_per_message_mode(bus: Bus, topic: str, inbox: GroupInbox) -> None:
    EnvelopePublisher(bus, GUEST).send_many(topic, [ping(seq=i) for i in range(5)])

    consumer = EnvelopeConsumer(bus, topic, {"demo.ping": write_row}, inbox)
    consumer.start()

    wait_until(lambda: len(inbox.rows()) == 5, what="5 rows")
    assert inbox.batches == []
    consumer.stop()


def test_malformed_envelope_in_a_group_is_dead_lettered_alone(
    bus: Bus, topic: str, inbox: GroupInbox, log_lines: io.StringIO
) -> None:
    # Prepare: garbage between two valid envelopes, all in the queue together.
    publisher = EnvelopePublisher(bus, GUEST)
    publisher.send(topic, ping(seq=1))
    bus.publish(Message(topic, b"\xc1 not msgpack", "raw-garbage"))
    publisher.send(topic, ping(seq=2))
    # Execute
    consumer = batched(bus, topic, inbox)
    # Assert: the garbage is dead-lettered with its reason and logged once; the rest commit.
    wait_until(lambda: len(inbox.rows()) == 2, what="the two valid pings")
    # Dead-lettered after the group's commit, by the per-message fallback.
    dead = wait_for_dead_letters(bus, topic, 1)
    assert [d.message_id for d in dead] == ["raw-garbage"]
    assert dead[0].headers[HEADER_DEAD_REASON].startswith("envelope is not valid msgpack")
    logged = events(log_lines, "message_dead_lettered")
    assert [line["message_id"] for line in logged] == ["raw-garbage"]
    assert inbox.batches == [2]
    consumer.stop()


def test_duplicates_in_one_group_and_across_groups_are_dropped(
    bus: Bus, topic: str, inbox: GroupInbox, log_lines: io.StringIO
) -> None:
    # Prepare: a resumed sender re-sent ping 1 within the same burst.
    publisher = EnvelopePublisher(bus, GUEST)
    first, other = ping(seq=1), ping(seq=2)
    publisher.send_many(topic, [first, first, other])
    consumer = batched(bus, topic, inbox)
    wait_until(lambda: len(inbox.rows()) == 2, what="the two distinct pings")
    # Execute: and once more, in a later group.
    publisher.send(topic, first)
    # Assert
    wait_until(lambda: len(events(log_lines, "message_duplicate_dropped")) == 2, what="two drops")
    assert sorted(m for m, _ in inbox.rows()) == sorted([first.message_id, other.message_id])
    dropped = events(log_lines, "message_duplicate_dropped")
    assert {line["message_id"] for line in dropped} == {first.message_id}
    assert bus.dead_letters(topic) == []
    consumer.stop()


def test_failing_handler_rolls_back_its_group_and_each_envelope_is_retried_alone(
    bus: Bus, topic: str, inbox: GroupInbox
) -> None:
    # Prepare: the handler fails for ping 3 on its first attempt only, after writing.
    attempts: list[int] = []

    def flaky(envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        write_row(envelope, payload, tx)
        assert isinstance(payload, DemoPing)
        if payload.n == 3:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("lost the database connection")

    EnvelopePublisher(bus, GUEST).send_many(topic, [ping(seq=i) for i in range(6)])
    # Execute
    consumer = EnvelopeConsumer(
        bus, topic, {"demo.ping": flaky}, inbox, batch_size=64, batch_wait=0.3, max_deliveries=3
    )
    consumer.start()
    # Assert: the group's writes were rolled back; every ping's row committed exactly once.
    wait_until(lambda: len(inbox.rows()) == 6, what="six rows")
    wait_until(lambda: len(attempts) == 2, what="the retry of ping 3")
    assert sorted(n for _, n in inbox.rows()) == list(range(6))
    assert bus.dead_letters(topic) == []
    consumer.stop()


def test_each_envelope_of_a_group_gets_its_own_handle_span_under_its_publisher(
    bus: Bus, topic: str, inbox: GroupInbox
) -> None:
    # Prepare
    exporter = InMemorySpanExporter()
    provider = make_tracer_provider("test-svc", "9999", exporter)
    publisher = EnvelopePublisher(bus, GUEST, tracer=provider.get_tracer("publisher"))
    publisher.send_many(topic, [ping(seq=i) for i in range(3)])
    # Execute
    consumer = batched(bus, topic, inbox, tracer=provider.get_tracer("consumer"))
    wait_until(lambda: len(inbox.rows()) == 3, what="three rows")
    # Assert: three handle spans, each the child of its own publish span.
    handles = [s for s in exporter.get_finished_spans() if s.name == "handle demo.ping"]
    publishes = {
        s.context.span_id: s for s in exporter.get_finished_spans() if s.name == "publish demo.ping"
    }
    assert len(handles) == 3
    parents = [h.parent.span_id for h in handles if h.parent is not None]
    assert sorted(parents) == sorted(publishes)
    assert all(
        h.attributes is not None and h.attributes["fedmq.duplicate"] is False for h in handles
    )
    consumer.stop()
    provider.shutdown()


# -- the crash window on real servers --------------------------------------------------------


@pytest.mark.integration
def test_crash_between_group_commit_and_acks_redelivers_and_drops_every_envelope(
    amqp_url: str, pg_url: str, unique_name: str
) -> None:
    # Prepare: 20 envelopes queued on RabbitMQ; the effects table in PostgreSQL.
    inbox = GroupInbox(pg_url)
    bus = connect(amqp_url)
    bus.declare(unique_name)
    try:
        sent = [ping(seq=i) for i in range(20)]
        EnvelopePublisher(bus, GUEST).send_many(unique_name, sent)
        # Execute: the first consumer commits all 20 in one transaction and is killed.
        # (A worker-like consumer in batch mode, killed right after its first group's commit,
        # before the bus can ack the group.)
        line = kill_after_line(
            "doomed_envelope_batch_consumer.py", amqp_url, pg_url, unique_name, marker="committed"
        )
        assert line.split() == ["committed", "20"], f"doomed consumer said {line!r}"
        assert len(inbox.rows()) == 20
        handler_calls: list[str] = []
        lock = threading.Lock()

        def count_calls(envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
            with lock:
                handler_calls.append(envelope.message_id)

        survivor = EnvelopeConsumer(
            bus, unique_name, {"demo.ping": count_calls}, inbox, batch_size=64, prefetch=128
        )
        survivor.start()
        # Assert: all 20 come back (RabbitMQ redelivers the unacked group), none runs again.
        wait_until(lambda: sum(inbox.batches) >= 20, timeout=60, what="the redelivered group")
        survivor.stop()
        assert handler_calls == []
        assert sorted(m for m, _ in inbox.rows()) == sorted(e.message_id for e in sent)
        assert bus.dead_letters(unique_name) == []
    finally:
        bus.delete(unique_name)
        bus.close()
        inbox.close()
