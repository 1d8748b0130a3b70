"""Issue #21: a task.run whose attempt does not fit the worker's 32-bit attempt column (2**40 in
the report) is refused with its reason -- by the payload model when the message is decoded, and
by the worker's handler before it writes a row -- instead of failing the database insert.

The worker runs in-process on the memory bus with its real PostgreSQL database (the column
whose range is at stake); a crafted message bypasses the sender's model the way a hostile or
buggy publisher would."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from fedbus import HEADER_DEAD_REASON, Bus, Reject, connect
from fedbus.runtime import EnvelopePublisher
from fedschemas import (
    Envelope,
    MalformedMessage,
    PartyRef,
    decode_payload,
    new_envelope,
)
from fedschemas.payloads import MAX_ATTEMPT, TaskCancel, TaskRun
from fedworker.handlers import WorkerContext, handle_task_cancel, handle_task_run
from fedworker.main import Worker
from fedworker.settings import WorkerSettings
from fedworker.tasks import tasks_table
from pydantic import SecretStr, ValidationError

from tests.polling import wait_for_dead_letters, wait_until

PARTY = "10000"
SCHEDULER = PartyRef(party_id=PARTY, role="host")
HUGE = 2**40


def task_run_fields(attempt: int) -> dict[str, object]:
    return {
        "job_id": "job-attempts",
        "component": "sum_0",
        "component_type": "noop",
        "attempt": attempt,
        "role": "host",
        "party_id": PARTY,
        "parties": {"guest": ["9999"], "host": [PARTY]},
        "pipeline_yaml": "name: attempts",
    }


def crafted_task_run(attempt: int) -> TaskRun:
    """A TaskRun the model never validated (what a publisher without our models could send)."""
    return TaskRun.model_construct(**task_run_fields(attempt))  # type: ignore[arg-type]


def envelope_of(payload: TaskRun | TaskCancel, attempt: int = 0) -> Envelope:
    return new_envelope(
        payload,
        job_id="job-attempts",
        component="sum_0",
        task_id="t-1",
        attempt=attempt,
        source=SCHEDULER,
        destination=SCHEDULER,
        tag=f"task.{type(payload).__name__}",
        iteration=-1,
        seq=0,
        created_at=datetime.now(UTC),
    )


def test_the_task_run_model_bounds_the_attempt_to_the_32_bit_column() -> None:
    assert TaskRun(**task_run_fields(MAX_ATTEMPT)).attempt == 2**31 - 1  # type: ignore[arg-type]

    with pytest.raises(ValidationError, match="attempt"):
        TaskRun(**task_run_fields(HUGE))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="attempt"):
        TaskCancel(job_id="j", component="c", attempt=MAX_ATTEMPT + 1, reason="r")


def test_decoding_a_task_run_with_attempt_2_to_the_40_names_the_field() -> None:
    envelope = envelope_of(crafted_task_run(HUGE))

    with pytest.raises(MalformedMessage) as refused:
        decode_payload(envelope, TaskRun)

    assert "'attempt'" in refused.value.reason
    assert str(MAX_ATTEMPT) in refused.value.reason


def test_the_worker_handlers_refuse_an_attempt_past_the_column_before_any_write() -> None:
    # The payload model is the first guard; the handlers check again before a row is written
    # (a payload built without validation reaches them in-process only).
    ctx = WorkerContext(party_id=PARTY, publisher=None, reply_topic="r")  # type: ignore[arg-type]
    run = crafted_task_run(HUGE)
    cancel = TaskCancel.model_construct(
        job_id="job-attempts", component="sum_0", attempt=HUGE, reason="stop"
    )

    for handler, payload in ((handle_task_run, run), (handle_task_cancel, cancel)):
        with pytest.raises(
            Reject, match=r"attempt 1099511627776 is out of range \(0\.\.2147483647\)"
        ):
            handler(envelope_of(payload), payload, None, ctx=ctx)  # type: ignore[arg-type]


@pytest.fixture
def pg_worker(pg_url: str, unique_name: str) -> Iterator[tuple[Worker, Bus]]:
    settings = WorkerSettings(
        party_id=PARTY,
        bus_url=SecretStr(f"memory://{unique_name}"),
        database_url=SecretStr(pg_url),
    )
    worker = Worker(settings)
    worker.start()
    client = connect(settings.bus_url.get_secret_value())
    try:
        yield worker, client
    finally:
        client.close()
        worker.stop()


@pytest.mark.integration
def test_a_task_run_with_attempt_2_to_the_40_is_dead_lettered_with_its_reason_and_the_next_runs(
    pg_worker: tuple[Worker, Bus],
) -> None:
    worker, client = pg_worker
    publisher = EnvelopePublisher(client, SCHEDULER)

    # Execute: the oversized attempt, then a good task.run on the same queue
    bad = envelope_of(crafted_task_run(HUGE))
    publisher.send(worker.settings.topic, bad)
    publisher.send(worker.settings.topic, envelope_of(TaskRun(**task_run_fields(7))))  # type: ignore[arg-type]

    # Assert: the bad one dead-lettered once, naming the field; the good one recorded; the
    # database holds no row of the bad one
    (dead,) = wait_for_dead_letters(client, worker.settings.topic, 1)
    assert dead.message_id == bad.message_id
    reason = dead.headers[HEADER_DEAD_REASON]
    assert "'attempt'" in reason and str(MAX_ATTEMPT) in reason, reason

    def attempts() -> list[int]:
        with worker.engine.connect() as conn:
            return list(conn.execute(sa.select(tasks_table.c.attempt)).scalars())

    wait_until(lambda: attempts() != [], what="the good task.run recorded")
    assert attempts() == [7]
