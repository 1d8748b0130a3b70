"""The bus contract: one suite every adapter passes. Subclassed per adapter.

Fixtures (override any of them in a subclass; suites of other behaviour reuse them without the
tests through `OnMemoryBus` / `OnAmqpBus`, which also give a `database_url`):
- `bus_url`      str, abstract: where the adapter's broker is (memory://<unique>, amqp://...).
- `bus_options`  dict of connect() options every bus in the test gets (default: {}).
- `connect_bus`  callable(**options) -> Bus: a NEW connection to the same broker; options are
                 merged over `bus_options`. Every bus it made is closed at teardown. Options all
                 adapters accept: max_frame_bytes, reassembly_timeout, sweep_interval,
                 drain_timeout.
- `bus`          a connected Bus (connect_bus()).
- `topic`        a fresh, declared topic name (from `unique_name`); deleted with its dead-letter
                 queue at teardown.
- `fanout_topics` three fresh, declared topics "<unique>.out.p1", "<unique>.out.p1.deep" and
                 "<unique>.svc" for the fan-out tests (deleted at teardown), and
  `fanout_name`  callable(suffix) -> a fresh fan-out subscription name, deleted at teardown.
Hooks (plain methods):
- `kill_consumer_mid_handler(bus_url, connect_bus, topic)`: start a consumer of `topic`, wait
  until its handler holds a message, then kill it without any chance to ack (a SIGKILLed
  process for real brokers). Default: a memory-style abort through the subscription's `abort()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fedbus import (
    HEADER_DEAD_REASON,
    HEADER_ORIGINAL_TOPIC,
    Bus,
    Delivery,
    Message,
    Reject,
    RequestRejected,
    RequestTimeout,
    Unroutable,
    connect,
)
from fedbus.chunking import split
from fedbus.inbox import InboxTransaction

from tests.polling import wait_until
from tests.scripts import kill_after_line

__all__ = [
    "BusContract",
    "ConnectBus",
    "Recorder",
    "drain_dead_letters",
    "drain_fanout_dead_letters",
    "wait_until",
]

ConnectBus = Callable[..., Bus]


def drain_dead_letters(
    bus: Bus, topic: str, expected: int, timeout: float = 10.0
) -> list[Delivery]:
    """Poll the dead-letter queue until `expected` deliveries (after regrouping) came out."""
    found: list[Delivery] = []

    def enough() -> bool:
        found.extend(bus.dead_letters(topic))
        return len(found) >= expected

    wait_until(enough, timeout, f"{expected} dead letters on {topic}")
    return found


def drain_fanout_dead_letters(
    bus: Bus, name: str, expected: int, timeout: float = 10.0
) -> list[Delivery]:
    """`drain_dead_letters` for a fan-out subscription's dead-letter queue."""
    found: list[Delivery] = []

    def enough() -> bool:
        found.extend(bus.fanout_dead_letters(name))
        return len(found) >= expected

    wait_until(enough, timeout, f"{expected} dead letters on fan-out {name}")
    return found


class Recorder:
    """A handler that records deliveries and can be told to fail or block."""

    def __init__(self, fail: Callable[[Delivery], None] | None = None) -> None:
        self.deliveries: list[Delivery] = []
        self._fail = fail
        self._lock = threading.Lock()

    def __call__(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)
        if self._fail is not None:
            self._fail(delivery)

    @property
    def ids(self) -> list[str]:
        with self._lock:
            return [d.message_id for d in self.deliveries]


class Effects:
    """A table of handler effects, one row per run: no unique constraint on message_id, so a
    second effect of one message would be a second row (the dedupe and batch suites count them).
    """

    def __init__(self, name: str) -> None:
        self.metadata = sa.MetaData()
        self.table = sa.Table(
            name,
            self.metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("message_id", sa.String(255), nullable=False),
        )

    def write(self, delivery: Delivery, tx: InboxTransaction) -> None:
        tx.require_session().execute(sa.insert(self.table), {"message_id": delivery.message_id})

    def ids(self, engine: sa.Engine) -> list[str]:
        """The message ids of the effects, in the order they were written."""
        with engine.connect() as conn:
            query = sa.select(self.table.c.message_id).order_by(self.table.c.id)
            return list(conn.execute(query).scalars())


def kill_subprocess_consumer_mid_handler(bus_url: str, topic: str) -> None:
    """Run a consumer of `topic` in a child process and SIGKILL it while its handler holds a
    message (no ack, no clean close; the broker sees the connection drop)."""
    line = kill_after_line("doomed_consumer.py", bus_url, topic, marker="holding")
    assert line, "the doomed consumer exited (or never got the message) before holding one"


class BusContract:
    @pytest.fixture
    def bus_url(self) -> str:
        raise NotImplementedError("a BusContract subclass provides bus_url")

    @pytest.fixture
    def bus_options(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def connect_bus(self, bus_url: str, bus_options: dict[str, Any]) -> Iterator[ConnectBus]:
        made: list[Bus] = []

        def make(**options: Any) -> Bus:
            bus = connect(bus_url, **{**bus_options, **options})
            made.append(bus)
            return bus

        yield make
        for bus in reversed(made):
            bus.close()

    @pytest.fixture
    def bus(self, connect_bus: ConnectBus) -> Bus:
        return connect_bus()

    @pytest.fixture
    def topic(self, connect_bus: ConnectBus, unique_name: str) -> Iterator[str]:
        admin = connect_bus()
        admin.declare(unique_name)
        yield unique_name
        admin.delete(unique_name)

    @pytest.fixture
    def fanout_topics(self, connect_bus: ConnectBus, unique_name: str) -> Iterator[list[str]]:
        admin = connect_bus()
        names = [f"{unique_name}.out.p1", f"{unique_name}.out.p1.deep", f"{unique_name}.svc"]
        for name in names:
            admin.declare(name)
        yield names
        for name in names:
            admin.delete(name)

    @pytest.fixture
    def fanout_name(
        self, connect_bus: ConnectBus, unique_name: str
    ) -> Iterator[Callable[[str], str]]:
        made: list[str] = []

        def make(suffix: str) -> str:
            made.append(f"{unique_name}-{suffix}")
            return made[-1]

        yield make
        admin = connect_bus()
        for name in made:
            admin.delete_fanout(name)

    def kill_consumer_mid_handler(self, bus_url: str, connect_bus: ConnectBus, topic: str) -> None:
        victim = connect_bus()
        holding = threading.Event()
        released = threading.Event()

        def hold(delivery: Delivery) -> None:
            holding.set()
            released.wait(30)

        sub = victim.subscribe(topic, hold)
        assert holding.wait(10), "the doomed consumer never got the message"
        sub.abort()  # type: ignore[attr-defined]
        released.set()

    # -- publish / consume -------------------------------------------------------------------

    def test_handler_receives_body_headers_and_id_as_published(self, bus: Bus, topic: str) -> None:
        got = Recorder()
        bus.subscribe(topic, got)

        bus.publish(Message(topic, b"\x00payload\xff", "m-1", headers={"x-app": "v"}))

        wait_until(lambda: len(got.deliveries) == 1, what="the delivery")
        d = got.deliveries[0]
        assert isinstance(d, Delivery)
        assert (d.topic, d.body, d.message_id, d.delivery_count) == (
            topic,
            b"\x00payload\xff",
            "m-1",
            1,
        )
        assert d.headers["x-app"] == "v"

    def test_one_consumer_receives_messages_in_publish_order(self, bus: Bus, topic: str) -> None:
        ids = [f"m-{i:03d}" for i in range(60)]
        bus.publish_many(Message(topic, i.encode(), i) for i in ids[:30])
        for i in ids[30:]:
            bus.publish(Message(topic, i.encode(), i))
        got = Recorder()

        bus.subscribe(topic, got)

        wait_until(lambda: len(got.deliveries) >= 60, what="60 deliveries")
        assert got.ids == ids

    def test_published_message_survives_publisher_close_and_reaches_new_connection(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        publisher = connect_bus()
        publisher.publish(Message(topic, b"confirmed", "m-confirmed"))
        publisher.close()
        reader = connect_bus()
        got = Recorder()

        reader.subscribe(topic, got)

        wait_until(lambda: len(got.deliveries) == 1, what="the confirmed message")
        assert got.deliveries[0].body == b"confirmed"

    def test_publish_to_undeclared_topic_raises_unroutable_where_detectable(
        self, bus: Bus, unique_name: str
    ) -> None:
        if not bus.capabilities.detects_unroutable:
            pytest.skip("this backend cannot detect an unroutable publish (capabilities say so)")
        with pytest.raises(Unroutable):
            bus.publish(Message(unique_name + "-nobody", b"lost?", "m-unroutable"))

    # -- failures, redelivery, dead letters --------------------------------------------------

    def test_message_is_redelivered_after_consumer_dies_before_ack(
        self, bus_url: str, connect_bus: ConnectBus, topic: str
    ) -> None:
        publisher = connect_bus()
        publisher.publish(Message(topic, b"survive me", "m-redeliver"))

        self.kill_consumer_mid_handler(bus_url, connect_bus, topic)
        survivor = connect_bus()
        got = Recorder()
        survivor.subscribe(topic, got)

        wait_until(lambda: len(got.deliveries) >= 1, timeout=30, what="the redelivery")
        d = got.deliveries[0]
        assert (d.message_id, d.body) == ("m-redeliver", b"survive me")
        assert d.delivery_count >= 2

    def test_reject_dead_letters_at_once_with_reason(self, bus: Bus, topic: str) -> None:
        def refuse(delivery: Delivery) -> None:
            raise Reject("schema version 99 unknown")

        got = Recorder(refuse)
        bus.subscribe(topic, got, max_deliveries=5)

        bus.publish(Message(topic, b"poison", "m-poison", headers={"x-app": "v"}))

        dead = drain_dead_letters(bus, topic, 1)
        assert len(got.deliveries) == 1
        assert [(d.message_id, d.body) for d in dead] == [("m-poison", b"poison")]
        assert dead[0].headers[HEADER_DEAD_REASON] == "schema version 99 unknown"
        assert dead[0].headers[HEADER_ORIGINAL_TOPIC] == topic
        assert dead[0].headers["x-app"] == "v"

    def test_failing_handler_is_retried_then_dead_lettered_at_delivery_limit(
        self, bus: Bus, topic: str
    ) -> None:
        def crash(delivery: Delivery) -> None:
            raise RuntimeError("database unavailable")

        got = Recorder(crash)
        bus.subscribe(topic, got, max_deliveries=3)

        bus.publish(Message(topic, b"flaky", "m-flaky"))

        dead = drain_dead_letters(bus, topic, 1, timeout=30)
        assert [d.delivery_count for d in got.deliveries] == [1, 2, 3]
        assert dead[0].message_id == "m-flaky"
        assert dead[0].headers[HEADER_DEAD_REASON] == (
            "delivery limit (3) reached: RuntimeError: database unavailable"
        )

    def test_handler_that_recovers_acks_and_dead_letters_nothing(
        self, bus: Bus, topic: str
    ) -> None:
        def fail_first(delivery: Delivery) -> None:
            if delivery.delivery_count == 1:
                raise RuntimeError("transient")

        got = Recorder(fail_first)
        bus.subscribe(topic, got, max_deliveries=3)

        bus.publish(Message(topic, b"x", "m-transient"))

        wait_until(lambda: len(got.deliveries) >= 2, what="the retry")
        time.sleep(0.3)
        assert [d.delivery_count for d in got.deliveries] == [1, 2]
        assert bus.dead_letters(topic) == []

    def test_dead_letters_of_an_unknown_topic_are_empty(self, bus: Bus, unique_name: str) -> None:
        assert bus.dead_letters(unique_name + "-never-declared") == []

    def test_close_with_in_flight_message_requeues_it(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        consumer = connect_bus(drain_timeout=0.3)
        holding, release = threading.Event(), threading.Event()

        def slow(delivery: Delivery) -> None:
            holding.set()
            release.wait(30)

        consumer.subscribe(topic, slow)
        consumer.publish(Message(topic, b"in flight", "m-inflight"))
        assert holding.wait(10)

        consumer.close()
        release.set()
        got = Recorder()
        connect_bus().subscribe(topic, got)

        wait_until(lambda: len(got.deliveries) >= 1, timeout=30, what="the requeued message")
        assert got.deliveries[0].message_id == "m-inflight"
        assert got.deliveries[0].delivery_count >= 2

    def test_handler_that_cancels_its_own_subscription_still_acks_its_message(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        consumer = connect_bus()
        subscriptions: list[Any] = []
        handled = threading.Event()

        def stop_after_one(delivery: Delivery) -> None:
            subscriptions[0].cancel()
            handled.set()

        subscriptions.append(consumer.subscribe(topic, stop_after_one))
        consumer.publish(Message(topic, b"first", "m-first"))
        assert handled.wait(10)
        consumer.publish(Message(topic, b"second", "m-second"))

        got = Recorder()
        connect_bus().subscribe(topic, got)

        wait_until(lambda: "m-second" in got.ids, what="the message after the cancel")
        time.sleep(0.3)
        assert got.ids == ["m-second"]

    # -- large payloads -----------------------------------------------------------------------

    def test_64_mib_payload_round_trips_as_one_delivery(self, bus: Bus, topic: str) -> None:
        body = os.urandom(64 * 1024 * 1024)
        got = Recorder()
        bus.subscribe(topic, got)

        bus.publish(Message(topic, body, "m-big", headers={"x-app": "v"}))

        wait_until(lambda: len(got.deliveries) >= 1, timeout=120, what="the 64 MiB message")
        d = got.deliveries[0]
        assert d.message_id == "m-big"
        assert hashlib.sha256(d.body).digest() == hashlib.sha256(body).digest()
        assert dict(d.headers).get("x-app") == "v"
        assert not any(k.startswith("x-fedmq-chunk") for k in d.headers)
        time.sleep(0.2)
        assert len(got.deliveries) == 1

    def test_rejected_chunked_message_is_dead_lettered_whole(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        bus = connect_bus(max_frame_bytes=1024)
        body = os.urandom(5000)

        def refuse(delivery: Delivery) -> None:
            raise Reject("not for us")

        bus.subscribe(topic, Recorder(refuse))
        bus.publish(Message(topic, body, "m-big-reject"))

        dead = drain_dead_letters(bus, topic, 1)
        assert [(d.message_id, d.body) for d in dead] == [("m-big-reject", body)]
        assert dead[0].headers[HEADER_DEAD_REASON] == "not for us"

    def test_chunk_set_that_never_completes_is_dead_lettered_with_reason(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        bus = connect_bus(max_frame_bytes=1024, reassembly_timeout=0.5, sweep_interval=0.1)
        chunks = split(Message(topic, os.urandom(4000), "m-partial"), 1024)
        assert len(chunks) == 4
        got = Recorder()
        bus.subscribe(topic, got)

        bus.publish_many(chunks[:3])

        dead = drain_dead_letters(bus, topic, 3, timeout=30)
        assert got.deliveries == []
        assert sorted(d.message_id for d in dead) == [f"m-partial:c{i}" for i in range(3)]
        assert all(
            d.headers[HEADER_DEAD_REASON].startswith("incomplete: 3 of 4 chunks after ")
            for d in dead
        )

    def test_chunk_set_with_wrong_checksum_is_dead_lettered(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        bus = connect_bus(max_frame_bytes=1024)
        chunks = split(Message(topic, os.urandom(3000), "m-corrupt"), 1024)
        tampered = Message(
            topic, bytes(len(chunks[1].body)), chunks[1].message_id, chunks[1].headers
        )
        got = Recorder()
        bus.subscribe(topic, got)

        bus.publish_many([chunks[0], tampered, chunks[2]])

        dead = drain_dead_letters(bus, topic, 3)
        assert got.deliveries == []
        assert {d.headers[HEADER_DEAD_REASON] for d in dead} == {"checksum mismatch"}

    # -- request / reply ----------------------------------------------------------------------

    def test_request_gets_the_reply(self, connect_bus: ConnectBus, topic: str) -> None:
        server = connect_bus()
        server.subscribe(topic, lambda d: server.reply(d, d.body.upper(), headers={"x-by": "s"}))
        client = connect_bus()

        reply = client.request(topic, b"ping", timeout=10)

        assert reply.body == b"PING"
        assert reply.headers["x-by"] == "s"

    def test_a_request_the_responder_dead_letters_fails_at_once_with_the_reason(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        # Prepare: a responder that cannot read what it gets, on a one-at-a-time queue
        server = connect_bus()

        def unreadable(delivery: Delivery) -> None:
            raise Reject("malformed command: not an envelope")

        server.subscribe(topic, unreadable, prefetch=1, max_deliveries=1)
        client = connect_bus()
        started = time.monotonic()

        # Execute
        with pytest.raises(RequestRejected) as refused:
            client.request(topic, b"\x00garbage", timeout=20)

        # Assert: the caller learns why well before its timeout; the request is dead-lettered
        assert "malformed command: not an envelope" in refused.value.reason
        assert time.monotonic() - started < 10
        (dead,) = drain_dead_letters(server, topic, 1)
        assert dead.body == b"\x00garbage"
        assert dead.headers[HEADER_DEAD_REASON] == "malformed command: not an envelope"

    def test_a_request_that_keeps_failing_is_answered_with_the_last_error(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        server = connect_bus()

        def broken(delivery: Delivery) -> None:
            raise RuntimeError("database is gone")

        server.subscribe(topic, broken, prefetch=1, max_deliveries=1)

        with pytest.raises(RequestRejected, match="database is gone"):
            connect_bus().request(topic, b"cmd", timeout=20)

        assert len(drain_dead_letters(server, topic, 1)) == 1

    def test_request_without_responder_times_out(self, bus: Bus, topic: str) -> None:
        started = time.monotonic()

        with pytest.raises(RequestTimeout):
            bus.request(topic, b"anyone?", timeout=0.5)

        assert time.monotonic() - started >= 0.5

    def test_arequest_awaits_each_reply_on_the_callers_loop(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        server = connect_bus()
        server.subscribe(topic, lambda d: server.reply(d, d.body.upper()), prefetch=8)
        client = connect_bus()

        async def ask_all() -> list[bytes]:
            asked = (client.arequest(topic, f"ping-{i}".encode(), timeout=10) for i in range(20))
            return [reply.body for reply in await asyncio.gather(*asked)]

        assert asyncio.run(ask_all()) == [f"PING-{i}".encode() for i in range(20)]

    def test_arequest_times_out_and_learns_a_refusal_like_request(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        client = connect_bus()
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            asyncio.run(client.arequest(topic, b"anyone?", timeout=0.3))
        assert time.monotonic() - started >= 0.3
        server = connect_bus()

        def unreadable(delivery: Delivery) -> None:
            raise Reject("not an envelope")

        server.subscribe(topic, unreadable, prefetch=1, max_deliveries=1)

        with pytest.raises(RequestRejected, match="not an envelope"):
            asyncio.run(client.arequest(topic, b"\x00garbage", timeout=20))

    def test_request_to_undeclared_topic_raises_unroutable_where_detectable(
        self, bus: Bus, unique_name: str
    ) -> None:
        if not bus.capabilities.detects_unroutable:
            pytest.skip("this backend cannot detect an unroutable publish (capabilities say so)")
        started = time.monotonic()

        with pytest.raises(Unroutable):
            bus.request(unique_name + "-nobody", b"anyone?", timeout=20)
        with pytest.raises(Unroutable):
            asyncio.run(bus.arequest(unique_name + "-nobody", b"anyone?", timeout=20))

        assert time.monotonic() - started < 10  # the publish's failure, not the timeout

    # -- fan-out ------------------------------------------------------------------------------

    def test_every_matching_fanout_subscription_gets_its_own_copy(
        self,
        bus: Bus,
        fanout_topics: list[str],
        fanout_name: Callable[[str], str],
        unique_name: str,
    ) -> None:
        out_p1, deep, svc = fanout_topics
        one_word = Recorder()  # "<u>.out.*": out.p1 only
        everything = Recorder()  # "<u>.#": all three
        svc_and_deep = Recorder()  # two patterns, "#" in the middle and a literal
        own = Recorder()  # the topic's own consumer still gets its message
        bus.subscribe_fanout(fanout_name("one"), f"{unique_name}.out.*", one_word)
        bus.subscribe_fanout(fanout_name("all"), [f"{unique_name}.#"], everything)
        bus.subscribe_fanout(
            fanout_name("two"), [f"{unique_name}.#.deep", f"{unique_name}.svc"], svc_and_deep
        )
        bus.subscribe(out_p1, own)

        bus.publish(Message(out_p1, b"to p1", "m-p1", headers={"x-app": "v"}))
        bus.publish_many([Message(deep, b"deep", "m-deep"), Message(svc, b"svc", "m-svc")])

        wait_until(lambda: len(everything.deliveries) == 3, what="three copies for '#'")
        wait_until(lambda: len(svc_and_deep.deliveries) == 2, what="two copies for two patterns")
        wait_until(lambda: own.ids == ["m-p1"], what="the topic's own delivery")
        wait_until(lambda: one_word.ids == ["m-p1"], what="one copy for '*'")
        time.sleep(0.3)  # room for a copy that should not come
        assert one_word.ids == ["m-p1"]
        assert sorted((d.topic, d.message_id) for d in everything.deliveries) == sorted(
            [(out_p1, "m-p1"), (deep, "m-deep"), (svc, "m-svc")]
        )
        assert sorted(svc_and_deep.ids) == ["m-deep", "m-svc"]
        copy = one_word.deliveries[0]
        assert (copy.topic, copy.body, copy.delivery_count) == (out_p1, b"to p1", 1)
        assert copy.headers["x-app"] == "v"

    def test_fanout_copies_published_while_the_subscriber_was_down_arrive_after_restart(
        self, connect_bus: ConnectBus, fanout_topics: list[str], fanout_name: Callable[[str], str]
    ) -> None:
        out_p1 = fanout_topics[0]
        name = fanout_name("restart")
        publisher = connect_bus()
        first_life = connect_bus()
        before = Recorder()
        first_life.subscribe_fanout(name, out_p1, before)
        publisher.publish(Message(out_p1, b"0", "m-0"))
        wait_until(lambda: before.ids == ["m-0"], what="the copy before the restart")
        first_life.close()

        publisher.publish_many(Message(out_p1, str(i).encode(), f"m-{i}") for i in (1, 2, 3))
        second_life = connect_bus()
        after = Recorder()
        second_life.subscribe_fanout(name, out_p1, after)

        wait_until(lambda: len(after.deliveries) >= 3, timeout=30, what="the kept copies")
        time.sleep(0.3)
        assert after.ids == ["m-1", "m-2", "m-3"]

    def test_poison_on_a_fanout_subscription_is_dead_lettered_there_and_the_topic_is_untouched(
        self, bus: Bus, fanout_topics: list[str], fanout_name: Callable[[str], str]
    ) -> None:
        out_p1 = fanout_topics[0]
        name = fanout_name("poison")

        def picky(delivery: Delivery) -> None:
            if delivery.body == b"poison":
                raise Reject("audit cannot parse it")
            if delivery.body == b"flaky":
                raise RuntimeError("audit store down")

        copies = Recorder(picky)
        own = Recorder()
        bus.subscribe_fanout(name, out_p1, copies, max_deliveries=2)
        bus.subscribe(out_p1, own)

        bus.publish_many(
            [
                Message(out_p1, b"poison", "m-poison", headers={"x-app": "v"}),
                Message(out_p1, b"flaky", "m-flaky"),
                Message(out_p1, b"fine", "m-fine"),
            ]
        )

        dead = drain_fanout_dead_letters(bus, name, 2, timeout=30)
        wait_until(lambda: len(own.deliveries) == 3, what="the topic's own three deliveries")
        by_id = {d.message_id: d for d in dead}
        assert sorted(by_id) == ["m-flaky", "m-poison"]
        assert by_id["m-poison"].body == b"poison"
        assert by_id["m-poison"].headers[HEADER_DEAD_REASON] == "audit cannot parse it"
        assert by_id["m-poison"].headers[HEADER_ORIGINAL_TOPIC] == out_p1
        assert by_id["m-poison"].headers["x-app"] == "v"
        assert by_id["m-flaky"].headers[HEADER_DEAD_REASON] == (
            "delivery limit (2) reached: RuntimeError: audit store down"
        )
        assert "m-fine" in copies.ids
        assert sorted(own.ids) == ["m-fine", "m-flaky", "m-poison"]
        assert all(d.delivery_count == 1 for d in own.deliveries)
        assert bus.dead_letters(out_p1) == []

    def test_fanout_subscription_without_consumer_neither_blocks_nor_fails_publishes(
        self, connect_bus: ConnectBus, fanout_topics: list[str], fanout_name: Callable[[str], str]
    ) -> None:
        out_p1 = fanout_topics[0]
        idle_name, stuck_name = fanout_name("idle"), fanout_name("stuck")
        bus = connect_bus()
        bus.declare_fanout(idle_name, out_p1)  # nobody consumes it
        release = threading.Event()
        stuck = Recorder(lambda d: release.wait(30) and None)
        bus.subscribe_fanout(stuck_name, out_p1, stuck, prefetch=1)  # its handler hangs
        own = Recorder()
        bus.subscribe(out_p1, own)
        ids = [f"m-{i:03d}" for i in range(200)]

        try:
            for i in ids[:100]:
                bus.publish(Message(out_p1, i.encode(), i))
            bus.publish_many(Message(out_p1, i.encode(), i) for i in ids[100:])

            wait_until(lambda: len(own.deliveries) >= 200, timeout=30, what="200 deliveries")
            assert not release.is_set() and len(stuck.deliveries) <= 2
        finally:
            release.set()
        assert own.ids == ids
        late = Recorder()
        connect_bus().subscribe_fanout(idle_name, out_p1, late)
        wait_until(lambda: len(late.deliveries) >= 200, timeout=30, what="the idle backlog")
        assert late.ids == ids

    def test_chunked_message_is_reassembled_whole_on_a_fanout_subscription(
        self, connect_bus: ConnectBus, fanout_topics: list[str], fanout_name: Callable[[str], str]
    ) -> None:
        out_p1 = fanout_topics[0]
        bus = connect_bus(max_frame_bytes=1024)
        body = os.urandom(5000)
        copies, own = Recorder(), Recorder()
        bus.subscribe_fanout(fanout_name("big"), out_p1, copies)
        bus.subscribe(out_p1, own)

        bus.publish(Message(out_p1, body, "m-big", headers={"x-app": "v"}))

        wait_until(lambda: len(copies.deliveries) >= 1, what="the reassembled copy")
        wait_until(lambda: len(own.deliveries) >= 1, what="the reassembled original")
        time.sleep(0.2)
        for got in (copies, own):
            assert [(d.message_id, d.body, d.topic) for d in got.deliveries] == [
                ("m-big", body, out_p1)
            ]
            assert not any(k.startswith("x-fedmq-chunk") for k in got.deliveries[0].headers)

    def test_fanout_names_and_patterns_are_checked(self, bus: Bus, unique_name: str) -> None:
        with pytest.raises(ValueError, match="name"):
            bus.declare_fanout("no spaces", "a.b")
        with pytest.raises(ValueError, match="pattern"):
            bus.declare_fanout(unique_name, "out.p*")
        with pytest.raises(ValueError, match="pattern"):
            bus.declare_fanout(unique_name, [])


class BusFixtures:
    """The contract's bus fixtures without its tests, for suites of another behaviour that run
    on every adapter (dedupe, batched consume)."""

    bus_options = BusContract.bus_options
    connect_bus = BusContract.connect_bus
    bus = BusContract.bus
    topic = BusContract.topic


class OnMemoryBus(BusFixtures):
    """memory://, with a SQLite file where the suite needs a database (`database_url`)."""

    @pytest.fixture
    def bus_url(self, unique_name: str) -> str:
        return f"memory://{unique_name}"

    @pytest.fixture
    def database_url(self, tmp_path) -> str:  # type: ignore[no-untyped-def]
        return f"sqlite:///{tmp_path / 'inbox.db'}"


class OnAmqpBus(BusFixtures):
    """RabbitMQ, with PostgreSQL where the suite needs a database (`database_url`)."""

    @pytest.fixture
    def bus_url(self, amqp_url: str) -> str:
        return amqp_url

    @pytest.fixture
    def database_url(self, pg_url: str) -> str:
        return pg_url
