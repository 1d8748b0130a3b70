"""The worker's MetricsForwarder: what a component logged goes to the scheduler's topic as
task.metrics -- while it runs only what is new since the last send, at the end all of it (so a
task resumed by another process still delivers everything) -- with undefined values as None."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedbus import Bus, Delivery, connect
from fedbus.runtime import EnvelopePublisher
from fedbus.sql_inbox import make_engine
from fedflow.db import create_flow_tables
from fedflow.metrics import MetricsWriter
from fedflow.task import TaskKey
from fedschemas import PartyRef, decode_envelope, decode_payload, topics
from fedschemas.payloads import TaskMetrics
from fedworker import job_metrics
from fedworker.job_metrics import FINAL_TAG, MetricsForwarder
from sqlalchemy.engine import Engine

from tests.polling import wait_until

PARTY = "9999"
KEY = TaskKey("job-f", "lr_0", 0, PARTY, "guest")


class Scheduler:
    """What the scheduler's topic receives: (tag, payload) in order."""

    def __init__(self, bus: Bus) -> None:
        self.received: list[tuple[str, TaskMetrics]] = []
        self.ids: list[str] = []
        bus.declare(topics.SCHEDULER)
        bus.subscribe(topics.SCHEDULER, self._collect)

    def _collect(self, delivery: Delivery) -> None:
        envelope = decode_envelope(delivery.body)
        self.ids.append(envelope.message_id)
        self.received.append((envelope.tag, decode_payload(envelope, TaskMetrics)))

    def wait(self, count: int) -> list[tuple[str, TaskMetrics]]:
        wait_until(lambda: len(self.received) >= count, what=f"{count} task.metrics")
        return list(self.received)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Engine, MetricsForwarder, Scheduler]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'worker.db'}")
    create_flow_tables(engine)
    bus = connect(f"memory://fwd-{uuid.uuid4().hex[:8]}")
    scheduler = Scheduler(bus)
    publisher = EnvelopePublisher(bus, PartyRef(party_id=PARTY, role="guest"))
    try:
        yield engine, MetricsForwarder(engine, publisher, PARTY, topics.SCHEDULER), scheduler
    finally:
        bus.close()
        engine.dispose()


def values(report: TaskMetrics) -> dict[tuple[str, int], float | None]:
    return {(m.name, m.step): m.value for m in report.metrics}


def test_running_sends_carry_only_what_is_new_and_the_final_send_carries_everything(
    setup: tuple[Engine, MetricsForwarder, Scheduler],
) -> None:
    # Prepare
    engine, forwarder, scheduler = setup
    writer = MetricsWriter(engine, KEY)
    writer.log("loss", 0.7, 0)
    writer.log("loss", 0.5, 1)

    # Execute: a keeper round, a round with nothing new, more logging, another round, the end
    first = forwarder.send_new(KEY, None)
    same = forwarder.send_new(KEY, first)
    writer.log("loss", 0.4, 2)
    writer.log("auc", math.nan)
    writer.curve("roc", [0.0, 1.0], [0.0, 1.0], x_label="fpr", y_label="tpr")
    second = forwarder.send_new(KEY, first)
    with engine.begin() as conn:
        forwarder.send_all(conn, KEY)
    received = scheduler.wait(3)

    # Assert
    assert same == first and second is not None and first is not None and second > first
    assert [tag for tag, _ in received] == ["task.metrics", "task.metrics", FINAL_TAG]
    assert values(received[0][1]) == {("loss", 0): 0.7, ("loss", 1): 0.5}
    assert values(received[1][1]) == {("loss", 2): 0.4, ("auc", -1): None}
    assert [c.name for c in received[1][1].curves] == ["roc"]
    final = received[2][1]
    assert values(final) == {
        ("auc", -1): None,
        ("loss", 0): 0.7,
        ("loss", 1): 0.5,
        ("loss", 2): 0.4,
    }
    assert [c.name for c in final.curves] == ["roc"]
    assert all(r.party_id == PARTY and r.job_id == "job-f" for _, r in received)


def test_a_long_series_goes_as_several_messages_each_with_its_own_id(
    setup: tuple[Engine, MetricsForwarder, Scheduler], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: at most two values per message
    engine, forwarder, scheduler = setup
    monkeypatch.setattr(job_metrics, "METRICS_PER_MESSAGE", 2)
    MetricsWriter(engine, KEY).log_many([("loss", 1.0 / (i + 1), i) for i in range(5)])

    # Execute: the final send, twice (a final report repeated after a crash)
    for _ in range(2):
        with engine.begin() as conn:
            forwarder.send_all(conn, KEY)
    received = scheduler.wait(6)

    # Assert: three parts with three ids, and the repeat has the same three ids (the
    # scheduler's inbox drops it)
    assert [len(r.metrics) for _, r in received] == [2, 2, 1, 2, 2, 1]
    assert len(set(scheduler.ids[:3])) == 3
    assert scheduler.ids[3:] == scheduler.ids[:3]
    assert sorted(m.step for _, r in received[:3] for m in r.metrics) == [0, 1, 2, 3, 4]
