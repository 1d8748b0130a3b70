"""A poison message on a party's worker queue in the middle of a job: its handler fails every
time, so it is delivered exactly `max_deliveries` (5, fedcommon's default) times and then
dead-lettered with the last error as its reason, while the job on the same queue goes on and
ends as if nothing had happened.

The poison is real, not a test handler: a task.run from the party's own scheduler (as far as
the envelope says) whose `pipeline_yaml` holds a NUL character, which the schema allows (any
string) but a PostgreSQL text column refuses, so recording it raises a DataError on every
delivery. (It used to be an attempt of 2**40, past the worker's 32-bit column; such an attempt
is now refused when the payload is decoded, dead-lettered at its first delivery: issue #21,
tests/worker/test_attempt_bounds.py.)
The broker's own x-delivery-limit (20) stays the backstop for consumers that die before they
count (tests/bus/test_amqp_bus.py::
test_broker_delivery_limit_dead_letters_when_consumers_keep_dying).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from fedbus import connect
from fedbus.runtime import EnvelopePublisher
from fedschemas import PartyRef, new_envelope
from fedschemas.payloads import TaskRun

from fedmq import local
from tests.faults.conftest import (
    PIPELINE,
    Result,
    assert_as_undisturbed,
    dead_letters,
    run_with_fault,
)
from tests.faults.stack import FaultStack
from tests.local_stack import GUEST, HOST

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

MAX_DELIVERIES = 5
"""The worker's max_deliveries (fedcommon.settings default; the stack does not change it)."""


def publish_poison(stack: FaultStack, job_id: str) -> str:
    """The poison task.run on the host's svc.worker; its message id."""
    me = PartyRef(party_id=HOST, role="host")
    attempt = 0
    payload = TaskRun(
        job_id=job_id,
        component="poison_0",
        component_type="iter_sum",
        attempt=attempt,
        role="host",
        party_id=HOST,
        parties={"guest": [GUEST], "host": [HOST]},
        params={},
        inputs={},
        # Valid text for the schema; PostgreSQL refuses it on every insert.
        pipeline_yaml=PIPELINE + "\x00",
    )
    envelope = new_envelope(
        payload,
        job_id=job_id,
        component="poison_0",
        task_id=f"{job_id}.poison_0",
        attempt=attempt,
        source=me,
        destination=me,
        tag="task.run",
        iteration=-1,
        seq=0,
        created_at=datetime.now(UTC),
    )
    bus = connect(stack.state.parties[HOST].bus_url)
    try:
        EnvelopePublisher(bus, me).send("svc.worker", envelope)
    finally:
        bus.close()
    return envelope.message_id


def handling_of(stack: FaultStack, message_id: str) -> list[tuple[str, int]]:
    """(event, delivery_count) of each failed handling of `message_id` in the host's worker log."""
    seen = []
    for line in local.log_file(stack.state, HOST, "worker").read_text().splitlines():
        if message_id not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") in ("bus_handler_failed", "bus_delivery_limit_reached"):
            seen.append((entry["event"], int(entry["delivery_count"])))
    return seen


def test_a_poison_message_is_dead_lettered_after_exactly_n_deliveries_and_the_job_goes_on(
    stack: FaultStack, undisturbed: Result
) -> None:
    # Execute: a few rounds in, the poison lands on the host's worker queue
    poison_job = f"poison-{uuid.uuid4().hex[:6]}"
    poison: list[str] = []
    run = run_with_fault(
        stack, lambda: poison.append(publish_poison(stack, poison_job)), label="poison"
    )
    (message_id,) = poison

    # Assert: delivered exactly MAX_DELIVERIES times, then dead-lettered with the reason
    assert handling_of(stack, message_id) == [
        *(("bus_handler_failed", n) for n in range(1, MAX_DELIVERIES)),
        ("bus_delivery_limit_reached", MAX_DELIVERIES),
    ]
    dead = dead_letters(stack, poison_job, run.job_id)
    assert list(dead) == [f"{HOST}/svc.worker"], dead  # the poison, nothing of the job
    (reason,) = dead[f"{HOST}/svc.worker"]
    assert reason.startswith(f"{poison_job} task.run: delivery limit ({MAX_DELIVERIES}) reached: ")
    assert "DataError" in reason and "NUL" in reason, reason
    # ... and the job beside it is the undisturbed one
    assert_as_undisturbed(stack, run, undisturbed)
