"""Batch consumption (`Bus.subscribe_batched`) on every adapter that batches: groups of waiting
deliveries reach the batch handler together, and every per-message promise still holds through
the per-message fallback (Reject, the delivery limit, chunked messages, ack of everything).

Subclassed per adapter like the bus contract, whose fixtures it reuses (`bus_url`,
`connect_bus`, `bus`, `topic`; see tests/bus/contract.py). The last class checks the crash
window group commit opens: a consumer that dies after its group's inbox commit and before the
acks gets the whole group redelivered, and every copy is dropped as a duplicate.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import fedbus.dispatch
import pytest
import sqlalchemy as sa
from fedbus import HEADER_DEAD_REASON, Bus, Delivery, Message, Reject
from fedbus.chunking import split
from fedbus.inbox import BatchItem, deduplicating, deduplicating_batch
from fedbus.sql_inbox import SqlInbox, create_tables

from tests.bus.contract import (
    ConnectBus,
    Effects,
    OnAmqpBus,
    OnMemoryBus,
    Recorder,
    drain_dead_letters,
    wait_until,
)
from tests.scripts import kill_after_line


class Groups:
    """A batch handler that records the groups it got; optionally fails or leaves some."""

    def __init__(
        self,
        fail_if: bytes | None = None,
        leave_if: bytes | None = None,
    ) -> None:
        self.groups: list[list[Delivery]] = []
        self._fail_if = fail_if
        self._leave_if = leave_if
        self._lock = threading.Lock()

    def __call__(self, deliveries: Sequence[Delivery]) -> Sequence[Delivery]:
        with self._lock:
            self.groups.append(list(deliveries))
        if self._fail_if is not None and any(d.body == self._fail_if for d in deliveries):
            raise RuntimeError("one handler of the group failed")
        return [d for d in deliveries if d.body == self._leave_if]

    @property
    def ids(self) -> list[str]:
        with self._lock:
            return [d.message_id for group in self.groups for d in group]


def handled_once(groups: Groups, single: Recorder, failing: bytes) -> list[str]:
    """Ids handled: by groups that did not fail, plus by the per-message handler."""
    by_groups = [
        d.message_id
        for group in list(groups.groups)
        if not any(d.body == failing for d in group)
        for d in group
    ]
    return sorted(by_groups + single.ids)


def fill(bus: Bus, topic: str, count: int) -> list[str]:
    ids = [f"m-{i:03d}" for i in range(count)]
    bus.publish_many(Message(topic, i.encode(), i) for i in ids)
    return ids


class BatchContract:
    """Subclasses provide the bus contract's fixtures (`bus_url` at least)."""

    def test_waiting_deliveries_reach_the_batch_handler_together_in_order(
        self, bus: Bus, topic: str
    ) -> None:
        # Prepare: 30 messages already queued.
        ids = fill(bus, topic, 30)
        groups, single = Groups(), Recorder()
        # Execute
        bus.subscribe_batched(topic, single, groups, batch_size=64, batch_wait=0.5, prefetch=64)
        # Assert: handled in groups (not one by one), in publish order, none singly.
        wait_until(lambda: len(groups.ids) >= 30, timeout=30, what="30 deliveries")
        assert groups.ids == ids
        assert len(groups.groups) < 30
        assert max(len(g) for g in groups.groups) > 1
        assert single.deliveries == []

    def test_a_group_never_exceeds_batch_size(self, bus: Bus, topic: str) -> None:
        ids = fill(bus, topic, 20)
        groups = Groups()

        bus.subscribe_batched(topic, Recorder(), groups, batch_size=6, batch_wait=0.2)

        wait_until(lambda: len(groups.ids) >= 20, timeout=30, what="20 deliveries")
        assert sorted(groups.ids) == ids
        assert max(len(g) for g in groups.groups) <= 6

    def test_everything_a_group_handled_is_acked(self, connect_bus: ConnectBus, topic: str) -> None:
        # Prepare
        consumer = connect_bus()
        fill(consumer, topic, 25)
        groups = Groups()
        consumer.subscribe_batched(topic, Recorder(), groups, batch_size=10)
        wait_until(lambda: len(groups.ids) >= 25, timeout=30, what="25 deliveries")
        # Execute: the consumer goes away; anything unacked would be redelivered.
        consumer.close()
        late = Recorder()
        connect_bus().subscribe(topic, late)
        # Assert
        time.sleep(1.0)
        assert late.deliveries == []

    def test_a_raising_batch_handler_hands_its_group_to_the_per_message_handler(
        self, bus: Bus, topic: str
    ) -> None:
        ids = fill(bus, topic, 12)
        groups, single = Groups(fail_if=b"m-005"), Recorder()

        bus.subscribe_batched(topic, single, groups, batch_size=64, batch_wait=0.3)

        # Each message handled exactly once: the group holding m-005 by the per-message handler.
        wait_until(lambda: handled_once(groups, single, b"m-005") == ids, timeout=30, what="all 12")
        assert "m-005" in single.ids
        assert bus.dead_letters(topic) == []

    def test_poison_message_in_a_group_is_dead_lettered_alone_while_the_rest_are_handled(
        self, bus: Bus, topic: str
    ) -> None:
        # Prepare: the batch fails whenever it holds the poison; so does its own handler.
        def poison(delivery: Delivery) -> None:
            if delivery.body == b"m-003":
                raise RuntimeError("cannot handle m-003")

        ids = fill(bus, topic, 8)
        groups, single = Groups(fail_if=b"m-003"), Recorder(poison)
        # Execute
        bus.subscribe_batched(
            topic, single, groups, batch_size=64, batch_wait=0.3, max_deliveries=3
        )
        # Assert: m-003 alone reaches the delivery limit; the others are handled.
        dead = drain_dead_letters(bus, topic, 1, timeout=30)
        assert [d.message_id for d in dead] == ["m-003"]
        assert dead[0].headers[HEADER_DEAD_REASON].startswith("delivery limit (3) reached")
        others = [i for i in handled_once(groups, single, b"m-003") if i != "m-003"]
        assert others == [i for i in ids if i != "m-003"]

    def test_deliveries_the_batch_handler_leaves_go_to_the_per_message_handler(
        self, bus: Bus, topic: str
    ) -> None:
        # Prepare: the batch handler cannot decode "bad"; the per-message handler rejects it.
        def refuse(delivery: Delivery) -> None:
            raise Reject("not an envelope")

        bus.publish_many(
            [
                Message(topic, b"good", "m-1"),
                Message(topic, b"bad", "m-2"),
                Message(topic, b"good", "m-3"),
            ]
        )
        groups, single = Groups(leave_if=b"bad"), Recorder(refuse)
        # Execute
        bus.subscribe_batched(topic, single, groups, batch_size=64, batch_wait=0.3)
        # Assert: only the left one went through the per-message path, and was dead-lettered.
        dead = drain_dead_letters(bus, topic, 1, timeout=30)
        assert [(d.message_id, d.headers[HEADER_DEAD_REASON]) for d in dead] == [
            ("m-2", "not an envelope")
        ]
        assert single.ids == ["m-2"]
        assert sorted(groups.ids) == ["m-1", "m-2", "m-3"]

    def test_reassembled_large_messages_reach_the_batch_handler_together_in_order(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        # Prepare: frames of 1 KiB, so each 5 KiB body travels as 5 chunks, between small ones.
        bus = connect_bus(max_frame_bytes=1024)
        bodies = {
            "m-1": b"small-1",
            "m-2": os.urandom(5 * 1024),
            "m-3": os.urandom(5 * 1024),
            "m-4": b"small-4",
            "m-5": os.urandom(5 * 1024),
        }
        bus.publish_many([Message(topic, body, i) for i, body in bodies.items()])
        groups, single = Groups(), Recorder()
        # Execute
        sub = bus.subscribe_batched(topic, single, groups, batch_size=64, batch_wait=0.5)
        # Assert: all five, in publish order, whole; the three large ones in one group.
        wait_until(lambda: len(groups.ids) >= 5, timeout=30, what="five messages")
        assert groups.ids == list(bodies)
        got = [d for g in groups.groups for d in g]
        assert [d.body for d in got] == list(bodies.values())
        assert not any(k.startswith("x-fedmq-chunk") for d in got for k in d.headers)
        large_per_group = [sum(len(d.body) > 1024 for d in g) for g in groups.groups]
        assert max(large_per_group) == 3
        assert single.deliveries == []
        # ... and every chunk was acked (held ones released): nothing comes back.
        sub.cancel()
        late = Recorder()
        connect_bus(max_frame_bytes=1024).subscribe(topic, late)
        time.sleep(0.5)
        assert late.deliveries == []

    def test_large_message_the_batch_handler_leaves_is_redelivered_whole_after_a_failure(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        # Prepare: the batch handler leaves one large message; its per-message handler fails
        # once, so its last chunk is requeued and must complete the set again.
        bus = connect_bus(max_frame_bytes=1024)
        flaky = os.urandom(4 * 1024)
        bodies = {"m-1": os.urandom(3 * 1024), "m-2": flaky, "m-3": os.urandom(3 * 1024)}
        failures: list[int] = []

        def fail_once(delivery: Delivery) -> None:
            if not failures:
                failures.append(delivery.delivery_count)
                raise RuntimeError("transient failure")

        groups, single = Groups(leave_if=flaky), Recorder(fail_once)
        bus.publish_many([Message(topic, body, i) for i, body in bodies.items()])
        # Execute
        bus.subscribe_batched(topic, single, groups, batch_size=64, batch_wait=0.5)
        # Assert: m-2 reached the per-message handler twice, whole both times, the second
        # time as a redelivery; the others were handled by the batch; nothing dead-lettered.
        wait_until(lambda: len(single.deliveries) >= 2, timeout=30, what="the redelivery")
        assert [(d.message_id, d.body) for d in single.deliveries] == [("m-2", flaky)] * 2
        assert single.deliveries[1].delivery_count > single.deliveries[0].delivery_count
        handled = {d.message_id: d.body for g in groups.groups for d in g if d.body != flaky}
        assert handled == {"m-1": bodies["m-1"], "m-3": bodies["m-3"]}
        assert bus.dead_letters(topic) == []

    def test_a_duplicate_last_chunk_in_the_same_group_is_not_handled_twice(
        self, connect_bus: ConnectBus, topic: str
    ) -> None:
        # Prepare: a publisher retry sent the last chunk twice; both copies wait in one group.
        bus = connect_bus(max_frame_bytes=1024)
        body = os.urandom(3 * 1024)
        chunks = split(Message(topic, body, "m-big"), 1024)
        bus.publish_many([*chunks, chunks[-1], Message(topic, b"small", "m-small")])
        groups, single = Groups(), Recorder()
        # Execute
        bus.subscribe_batched(topic, single, groups, batch_size=64, batch_wait=0.5)
        # Assert: the large message handled once, whole; the copy acked, nothing dead.
        wait_until(lambda: len(groups.ids) >= 2, timeout=30, what="both messages")
        time.sleep(0.3)
        assert groups.ids == ["m-big", "m-small"]
        assert [d.body for g in groups.groups for d in g] == [body, b"small"]
        assert single.deliveries == []
        assert bus.dead_letters(topic) == []

    def test_reassembled_bytes_in_one_batch_stay_within_the_budget(
        self, connect_bus: ConnectBus, topic: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Prepare: a budget of two 4 KiB messages; six of them queued, as 1 KiB chunks.
        monkeypatch.setattr(fedbus.dispatch, "REASSEMBLED_BATCH_BYTES", 8 * 1024)
        bus = connect_bus(max_frame_bytes=1024)
        bodies = {f"m-{i}": os.urandom(4 * 1024) for i in range(6)}
        bus.publish_many([Message(topic, body, i) for i, body in bodies.items()])
        groups = Groups()
        # Execute
        bus.subscribe_batched(topic, Recorder(), groups, batch_size=64, batch_wait=0.5)
        # Assert: all six in order, whole, in batches of at most the budget (two at a time).
        wait_until(lambda: len(groups.ids) >= 6, timeout=30, what="six messages")
        assert groups.ids == list(bodies)
        assert [d.body for g in groups.groups for d in g] == list(bodies.values())
        assert max(sum(len(d.body) for d in g) for g in groups.groups) == 8 * 1024


class TestBatchOnMemoryBus(OnMemoryBus, BatchContract):
    pass


@pytest.mark.integration
class TestBatchOnAmqpBus(OnAmqpBus, BatchContract):
    pass


# -- the crash window of group commit --------------------------------------------------------

EFFECTS = Effects("batch_effects")


class CountingInbox(SqlInbox):
    """Records what each process_batch call returned (which ids ran, which were dropped)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.results: list[tuple[str, bool]] = []
        self._lock = threading.Lock()

    def process_batch(self, items: Sequence[BatchItem]) -> list[bool]:
        ran = super().process_batch(items)
        with self._lock:
            self.results.extend((m, r) for (m, _), r in zip(items, ran, strict=True))
        return ran


class GroupCommitCrashContract:
    """Subclasses provide `bus_url`, `database_url` and `crash_after_group_commit`."""

    GROUP = 20

    @pytest.fixture
    def database_url(self) -> str:
        raise NotImplementedError

    def crash_after_group_commit(
        self, bus_url: str, connect_bus: ConnectBus, topic: str, database_url: str
    ) -> int:
        """Consume `topic` in groups with the deduplicating batch handler; die after the first
        group's commit and before its acks. Returns how many messages that commit covered."""
        raise NotImplementedError

    @staticmethod
    def effects(database_url: str) -> list[str]:
        engine = sa.create_engine(database_url)
        try:
            return EFFECTS.ids(engine)
        finally:
            engine.dispose()

    def test_group_redelivered_after_crash_between_commit_and_acks_is_dropped_whole(
        self, bus_url: str, connect_bus: ConnectBus, topic: str, database_url: str
    ) -> None:
        # Prepare: the effects table exists; a group's worth of messages is queued.
        setup = SqlInbox(database_url)
        create_tables(EFFECTS.metadata, setup.engine)
        setup.close()
        ids = fill(connect_bus(), topic, self.GROUP)
        # Execute: the first consumer commits the whole group, then dies before acking.
        committed = self.crash_after_group_commit(bus_url, connect_bus, topic, database_url)
        assert committed == self.GROUP, "the doomed consumer's group was not the whole queue"
        assert sorted(self.effects(database_url)) == ids
        inbox = CountingInbox(database_url)
        try:
            survivor = connect_bus()
            survivor.subscribe_batched(
                topic,
                deduplicating(EFFECTS.write, inbox),
                deduplicating_batch(EFFECTS.write, inbox),
                batch_size=64,
            )
            # Assert: all of them come back, every one is dropped, every effect stays single.
            wait_until(
                lambda: len(inbox.results) >= self.GROUP, timeout=60, what="the redeliveries"
            )
            assert sorted(m for m, _ in inbox.results) == ids
            assert not any(ran for _, ran in inbox.results)
            assert sorted(self.effects(database_url)) == ids
            assert survivor.dead_letters(topic) == []
        finally:
            inbox.close()


class TestGroupCommitCrashOnMemoryBus(OnMemoryBus, GroupCommitCrashContract):
    def crash_after_group_commit(
        self, bus_url: str, connect_bus: ConnectBus, topic: str, database_url: str
    ) -> int:
        inbox = SqlInbox(database_url)
        batch = deduplicating_batch(EFFECTS.write, inbox)
        committed: list[int] = []
        never = threading.Event()

        def commit_then_hang(deliveries: Sequence[Delivery]) -> Sequence[Delivery]:
            batch(deliveries)
            committed.append(len(deliveries))
            never.wait(30)
            return ()

        sub = connect_bus().subscribe_batched(
            topic, deduplicating(EFFECTS.write, inbox), commit_then_hang, batch_size=64
        )
        wait_until(lambda: bool(committed), what="the doomed consumer's commit")
        sub.abort()  # type: ignore[attr-defined]  # the in-process equivalent of SIGKILL
        never.set()
        inbox.close()
        return committed[0]


@pytest.mark.integration
class TestGroupCommitCrashOnAmqpBus(OnAmqpBus, GroupCommitCrashContract):
    def crash_after_group_commit(
        self, bus_url: str, connect_bus: ConnectBus, topic: str, database_url: str
    ) -> int:
        # A real process, SIGKILLed after its inbox commit: the broker sees the connection
        # drop with what it delivered unacked.
        line = kill_after_line(
            "doomed_dedupe_consumer.py",
            bus_url,
            database_url,
            topic,
            "batch_effects",
            "batch",
            marker="committed",
        )
        assert line.startswith("committed"), f"doomed consumer said {line!r}"
        return int(line.split()[1])
