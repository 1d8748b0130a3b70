"""Duplicate suppression on every bus adapter: a message id's effect runs exactly once, whether
the duplicate comes from a sender publishing the same id twice or from the broker redelivering
a message whose consumer died after committing its effect but before acking it.

Reuses the bus contract's fixtures (`bus_url`, `connect_bus`, `bus`, `topic`; see the top of
tests/bus/contract.py) without re-running its tests; handlers are wrapped with
`fedbus.inbox.deduplicating` over a SqlInbox whose effect rows are counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from fedbus import Bus, Delivery, Message
from fedbus.inbox import deduplicating
from fedbus.sql_inbox import SqlInbox, create_tables

from tests.bus.contract import ConnectBus, Effects, OnAmqpBus, OnMemoryBus, wait_until
from tests.scripts import kill_after_line

EFFECTS = Effects("dedupe_effects")


class Handled:
    """Counts handler calls (deliveries), as opposed to effects (rows)."""

    def __init__(self, inbox: SqlInbox) -> None:
        self._inner = deduplicating(EFFECTS.write, inbox)
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, delivery: Delivery) -> None:
        self._inner(delivery)
        with self._lock:
            self.calls.append((delivery.message_id, delivery.delivery_count))


class DedupeContract:
    """Subclasses provide `bus_url`, `database_url` and `crash_after_commit`."""

    @pytest.fixture
    def database_url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def inbox(self, database_url: str) -> Iterator[SqlInbox]:
        inbox = SqlInbox(database_url)
        create_tables(EFFECTS.metadata, inbox.engine)
        yield inbox
        inbox.close()

    @staticmethod
    def effects(inbox: SqlInbox) -> list[str]:
        return EFFECTS.ids(inbox.engine)

    def crash_after_commit(
        self, bus_url: str, connect_bus: ConnectBus, topic: str, database_url: str
    ) -> None:
        """Consume `topic` with the deduplicating handler; die after the first message's
        inbox commit and before its ack."""
        raise NotImplementedError

    def test_same_id_published_twice_runs_the_effect_once(
        self, connect_bus: ConnectBus, bus: Bus, topic: str, inbox: SqlInbox
    ) -> None:
        # Prepare
        handled = Handled(inbox)
        bus.subscribe(topic, handled)
        # Execute: a sender resumed after a crash re-sends m-1 with the same deterministic id.
        bus.publish(Message(topic, b"first", "m-1"))
        bus.publish(Message(topic, b"first", "m-1"))
        bus.publish(Message(topic, b"second", "m-2"))
        # Assert: every delivery was handled (and acked), each effect happened once.
        wait_until(lambda: len(handled.calls) == 3, timeout=30, what="three deliveries")
        assert sorted(self.effects(inbox)) == ["m-1", "m-2"]
        assert bus.dead_letters(topic) == []
        late = Handled(inbox)
        connect_bus().subscribe(topic, late)
        time.sleep(0.5)
        assert late.calls == []  # nothing left unacked on the broker

    def test_redelivery_after_crash_between_effect_and_ack_is_dropped(
        self,
        bus_url: str,
        connect_bus: ConnectBus,
        topic: str,
        inbox: SqlInbox,
        database_url: str,
    ) -> None:
        # Prepare
        connect_bus().publish(Message(topic, b"pay once", "m-crash"))
        # Execute: the first consumer commits the effect and dies before acking.
        self.crash_after_commit(bus_url, connect_bus, topic, database_url)
        assert self.effects(inbox) == ["m-crash"]
        survivor = Handled(inbox)
        connect_bus().subscribe(topic, survivor)
        # Assert: the broker redelivers it, the inbox drops it, the effect stays single.
        wait_until(lambda: len(survivor.calls) == 1, timeout=30, what="the redelivery")
        assert survivor.calls[0][0] == "m-crash"
        assert survivor.calls[0][1] >= 2
        assert self.effects(inbox) == ["m-crash"]

    def test_two_consumers_and_duplicated_stream_give_one_effect_per_id(
        self, connect_bus: ConnectBus, topic: str, inbox: SqlInbox
    ) -> None:
        # Prepare: two competing consumers (replicas) share one inbox database.
        first, second = Handled(inbox), Handled(inbox)
        connect_bus().subscribe(topic, first)
        connect_bus().subscribe(topic, second)
        ids = [f"m-{i:02d}" for i in range(20)]
        # Execute: every message arrives twice.
        connect_bus().publish_many(Message(topic, i.encode(), i) for i in ids + ids)
        # Assert
        wait_until(
            lambda: len(first.calls) + len(second.calls) == 40, timeout=30, what="40 deliveries"
        )
        assert sorted(self.effects(inbox)) == ids


class TestDedupeOnMemoryBus(OnMemoryBus, DedupeContract):
    def crash_after_commit(
        self, bus_url: str, connect_bus: ConnectBus, topic: str, database_url: str
    ) -> None:
        inbox = SqlInbox(database_url)
        committed, never = threading.Event(), threading.Event()
        dedupe = deduplicating(EFFECTS.write, inbox)

        def commit_then_hang(delivery: Delivery) -> None:
            dedupe(delivery)
            committed.set()
            never.wait(30)

        sub = connect_bus().subscribe(topic, commit_then_hang)
        assert committed.wait(10), "the doomed consumer never committed"
        sub.abort()  # type: ignore[attr-defined]  # the in-process equivalent of SIGKILL
        never.set()
        inbox.close()


@pytest.mark.integration
class TestDedupeOnAmqpBus(OnAmqpBus, DedupeContract):
    def crash_after_commit(
        self, bus_url: str, connect_bus: ConnectBus, topic: str, database_url: str
    ) -> None:
        # A real process, SIGKILLed after its inbox commit: the broker sees the connection
        # drop with what it delivered unacked.
        line = kill_after_line(
            "doomed_dedupe_consumer.py",
            bus_url,
            database_url,
            topic,
            "dedupe_effects",
            marker="committed",
        )
        assert line.startswith("committed"), f"doomed consumer said {line!r}"
