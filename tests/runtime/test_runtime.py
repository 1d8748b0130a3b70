"""EnvelopePublisher / EnvelopeConsumer on the memory bus: dispatch by type, dedupe through the
inbox, dead-lettering of malformed input with the consumer still running."""

from __future__ import annotations

import io
import threading

import msgpack
import pytest
import sqlalchemy as sa
import structlog
from fedbus import HEADER_DEAD_REASON, Bus, Message
from fedbus.in_memory_inbox import InMemoryInbox
from fedbus.inbox import InboxTransaction
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher
from fedbus.sql_inbox import SqlInbox, create_tables
from fedcommon.tracing import make_tracer_provider
from fedcrypto.signing import SigningKey
from fedschemas import (
    DemoPing,
    Envelope,
    Payload,
    canonical_bytes,
    decode_envelope,
    encode_envelope,
)

from tests.polling import wait_for_dead_letters, wait_until
from tests.runtime.helpers import GUEST, HOST, events, ping


class Handled:
    def __init__(self) -> None:
        self.items: list[tuple[Envelope, Payload]] = []
        self.lock = threading.Lock()

    def __call__(self, envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        with self.lock:
            self.items.append((envelope, payload))


def test_handler_gets_the_typed_payload_of_its_message_type(bus: Bus, topic: str) -> None:
    # Prepare
    handled = Handled()
    consumer = EnvelopeConsumer(bus, topic, {"demo.ping": handled}, InMemoryInbox())
    consumer.start()
    sent = ping(seq=7, text="hi")
    # Execute
    EnvelopePublisher(bus, GUEST).send(topic, sent)
    # Assert
    wait_until(lambda: len(handled.items) == 1, what="the ping")
    envelope, payload = handled.items[0]
    assert envelope.message_id == sent.message_id
    assert payload == DemoPing(text="hi", n=7)
    consumer.stop()


def test_same_message_sent_twice_is_handled_once_and_logged_as_duplicate(
    bus: Bus, topic: str, log_lines: io.StringIO
) -> None:
    handled = Handled()
    consumer = EnvelopeConsumer(bus, topic, {"demo.ping": handled}, InMemoryInbox())
    consumer.start()
    publisher = EnvelopePublisher(bus, GUEST)
    first, other = ping(seq=1), ping(seq=2)

    # A sender that resumed after a crash re-sends the same envelope (same deterministic id).
    publisher.send(topic, first)
    publisher.send(topic, first)
    publisher.send(topic, other)

    wait_until(lambda: len(events(log_lines, "message_duplicate_dropped")) == 1, what="the drop")
    wait_until(lambda: len(handled.items) == 2, what="both distinct pings")
    assert sorted(e.message_id for e, _ in handled.items) == sorted(
        [first.message_id, other.message_id]
    )
    assert events(log_lines, "message_duplicate_dropped")[0]["message_id"] == first.message_id
    assert bus.dead_letters(topic) == []
    consumer.stop()


def test_handler_logs_carry_job_task_message_and_trace_ids(
    bus: Bus, topic: str, log_lines: io.StringIO
) -> None:
    def handler(envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        structlog.get_logger("test").info("ping_seen", n=1)

    tracer = make_tracer_provider("test", "9999").get_tracer("test")
    EnvelopeConsumer(bus, topic, {"demo.ping": handler}, InMemoryInbox(), tracer=tracer).start()
    sent = ping(job_id="job-42")

    EnvelopePublisher(bus, GUEST, tracer=tracer).send(topic, sent)

    wait_until(lambda: bool(events(log_lines, "ping_seen")), what="the handler's log line")
    line = events(log_lines, "ping_seen")[0]
    assert line["job_id"] == "job-42"
    assert line["task_id"] == "task-1"
    assert line["message_id"] == sent.message_id
    assert line["service"] == "test-runtime"
    assert len(str(line["trace_id"])) == 32
    assert len(str(line["span_id"])) == 16


@pytest.mark.parametrize(
    ("body", "reason_start"),
    [
        (b"\xc1 not msgpack at all", "envelope is not valid msgpack"),
        (msgpack.packb({"hello": "world"}), "envelope must be a msgpack array"),
        (b"", "envelope is not valid msgpack"),
    ],
    ids=["garbage", "wrong-shape", "empty"],
)
def test_undecodable_bytes_are_dead_lettered_with_reason_and_consumer_keeps_running(
    bus: Bus, topic: str, log_lines: io.StringIO, body: bytes, reason_start: str
) -> None:
    # Prepare
    handled = Handled()
    EnvelopeConsumer(bus, topic, {"demo.ping": handled}, InMemoryInbox()).start()
    # Execute: garbage first, then a valid message.
    bus.publish(Message(topic, body, "raw-1"))
    EnvelopePublisher(bus, GUEST).send(topic, ping())
    # Assert
    dead = wait_for_dead_letters(bus, topic, 1)
    assert dead[0].headers[HEADER_DEAD_REASON].startswith(reason_start)
    wait_until(lambda: len(handled.items) == 1, what="the valid ping after the garbage")
    logged = events(log_lines, "message_dead_lettered")
    assert [line["reason"] for line in logged] == [dead[0].headers[HEADER_DEAD_REASON]]
    assert logged[0]["level"] == "warning"


def test_oversize_envelope_is_dead_lettered(bus: Bus, topic: str) -> None:
    handled = Handled()
    EnvelopeConsumer(
        bus, topic, {"demo.ping": handled}, InMemoryInbox(), max_envelope_bytes=1024
    ).start()

    EnvelopePublisher(bus, GUEST).send(topic, ping(text="x" * 4096))

    dead = wait_for_dead_letters(bus, topic, 1)
    assert "over the limit of 1024 bytes" in dead[0].headers[HEADER_DEAD_REASON]
    assert handled.items == []


def test_unknown_message_type_is_dead_lettered(bus: Bus, topic: str) -> None:
    # Prepare: a well-formed envelope whose type no build knows (patched in the msgpack array).
    items = msgpack.unpackb(encode_envelope(ping()))
    items[3] = "demo.nonexistent"
    handled = Handled()
    EnvelopeConsumer(bus, topic, {"demo.ping": handled}, InMemoryInbox()).start()
    # Execute
    bus.publish(Message(topic, msgpack.packb(items), "raw-unknown"))
    # Assert
    dead = wait_for_dead_letters(bus, topic, 1)
    assert "unknown message type 'demo.nonexistent'" in dead[0].headers[HEADER_DEAD_REASON]
    assert handled.items == []


def test_known_type_without_a_handler_here_is_dead_lettered(bus: Bus, topic: str) -> None:
    EnvelopeConsumer(bus, topic, {"demo.pong": Handled()}, InMemoryInbox()).start()

    EnvelopePublisher(bus, GUEST).send(topic, ping())

    dead = wait_for_dead_letters(bus, topic, 1)
    reason = dead[0].headers[HEADER_DEAD_REASON]
    assert reason == f"no handler for message type 'demo.ping' on {topic!r}"


def test_payload_that_does_not_match_its_type_is_dead_lettered(bus: Bus, topic: str) -> None:
    wrong = ping().model_copy(update={"payload": msgpack.packb({"text": 5, "n": "five"})})
    handled = Handled()
    EnvelopeConsumer(bus, topic, {"demo.ping": handled}, InMemoryInbox()).start()

    bus.publish(Message(topic, encode_envelope(wrong), wrong.message_id))

    dead = wait_for_dead_letters(bus, topic, 1)
    assert dead[0].headers[HEADER_DEAD_REASON].startswith("invalid demo.ping payload")
    assert handled.items == []


def test_failed_handler_rolls_back_its_write_and_the_retry_commits_once(
    bus: Bus, topic: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    # Prepare: a handler that writes its effect, then fails on the first delivery.
    inbox = SqlInbox(f"sqlite:///{tmp_path / 'svc.db'}")
    meta = sa.MetaData()
    rows = sa.Table(
        "rows", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("mid", sa.String)
    )
    create_tables(meta, inbox.engine)
    attempts: list[int] = []

    def handler(envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        tx.require_session().execute(sa.insert(rows), {"mid": envelope.message_id})
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("lost the database connection")

    EnvelopeConsumer(bus, topic, {"demo.ping": handler}, inbox, max_deliveries=3).start()
    # Execute
    EnvelopePublisher(bus, GUEST).send(topic, ping())
    # Assert
    wait_until(lambda: len(attempts) == 2, what="the retry")
    wait_until(lambda: inbox.is_done(ping().message_id), what="the done marker")
    with inbox.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(rows)).scalar() == 1
    assert bus.dead_letters(topic) == []


def test_publisher_refuses_an_envelope_from_another_party(bus: Bus, topic: str) -> None:
    publisher = EnvelopePublisher(bus, GUEST)

    with pytest.raises(ValueError, match="is not this publisher's party"):
        publisher.send(topic, ping(source=HOST))


def test_signer_signs_the_envelope_as_sent(bus: Bus, topic: str) -> None:
    # Prepare
    key = SigningKey.generate()

    def sign(envelope: Envelope) -> Envelope:
        # signer_key_id is itself signed: set it before computing the signature.
        keyed = envelope.model_copy(update={"signer_key_id": "k1"})
        return keyed.model_copy(update={"signature": key.sign(canonical_bytes(keyed))})

    received: list[bytes] = []
    bus.subscribe(topic, lambda d: received.append(d.body))
    # Execute
    EnvelopePublisher(bus, GUEST, signer=sign).send(topic, ping())
    # Assert: what arrived verifies, traceparent included in the signed bytes.
    wait_until(lambda: len(received) == 1, what="the signed envelope")
    arrived = decode_envelope(received[0])
    assert arrived.signer_key_id == "k1"
    assert arrived.signature is not None
    key.verify_key().verify(canonical_bytes(arrived), arrived.signature)


def test_send_many_delivers_every_envelope(bus: Bus, topic: str) -> None:
    handled = Handled()
    EnvelopeConsumer(bus, topic, {"demo.ping": handled}, InMemoryInbox()).start()

    EnvelopePublisher(bus, GUEST).send_many(topic, [ping(seq=i) for i in range(20)])

    wait_until(lambda: len(handled.items) == 20, what="20 pings")
    assert sorted(p.n for _, p in handled.items) == list(range(20))  # type: ignore[attr-defined]
