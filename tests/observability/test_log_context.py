"""Logs about a job name it and its task (one task id format, fedschemas.task_scope_id), at a
level that matches what happened, and no line borrows the ids of a message that has ended."""

from __future__ import annotations

import contextvars
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from fedcommon.logging import bind_message_context
from fedcommon.tracing import make_tracer_provider, trace_ids
from fedschemas.payloads import task_scope_id

from tests.polling import wait_until
from tests.runtime.helpers import captured_log
from tests.worker.test_worker_tasks import GUEST, HOST, READERS, ROLES, Federation2

log = structlog.get_logger("test")


def lines(stream: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_a_context_copied_during_a_message_lends_its_ids_to_no_later_line() -> None:
    # Prepare: a message's scope as the bus runtime opens it (span, then bound ids); inside it
    # something long-lived copies the context, as asyncio.create_task does
    provider = make_tracer_provider("gateway", GUEST)
    tracer = provider.get_tracer("test")
    with captured_log("gateway", "INFO") as stream:
        with tracer.start_as_current_span("handle federation.data") as span:
            trace_id, span_id = trace_ids(span)
            with bind_message_context(
                job_id="job-1", task_id="job-1/lr_0/9999/guest", trace_id=trace_id, span_id=span_id
            ):
                log.info("relayed")
                copied = contextvars.copy_context()

        # Execute: the long-lived task logs after the message is done
        copied.run(log.warning, "link_down", peer_party=HOST)
        copied.run(log.warning, "link_down_for_job", peer_party=HOST, job_id="job-2")
    provider.shutdown()

    # Assert
    relayed, down, explicit = lines(stream)
    assert relayed["job_id"] == "job-1" and relayed["trace_id"] == trace_id
    assert down["event"] == "link_down" and down["level"] == "warning"
    for name in ("job_id", "task_id", "trace_id", "span_id"):
        assert name not in down, name
    assert explicit["job_id"] == "job-2"  # what the call itself passes always stays


@pytest.fixture
def fed2_logged(unique_name: str, tmp_path: Any) -> Iterator[tuple[Federation2, Any]]:
    with captured_log("worker", "DEBUG") as stream:
        fed = Federation2(unique_name, tmp_path)
        fed.start()
        try:
            yield fed, stream
        finally:
            fed.stop()


def test_task_lines_carry_the_job_and_one_task_id_and_a_failure_is_a_warning(
    fed2_logged: tuple[Federation2, Any],
) -> None:
    # Prepare
    fed, stream = fed2_logged
    job = f"logs-{uuid.uuid4().hex[:6]}"

    # Execute: a reader that succeeds at both parties, then a component type nobody has
    fed.run(job, "reader_0", "reader", READERS, {})
    fed.wait_final("reader_0")
    fed.run(job, "bad_0", "no_such_component", {}, {})
    fed.wait_final("bad_0")
    wait_until(
        lambda: len([e for e in lines(stream) if e["event"] == "task_finished"]) == 4,
        what="four task_finished lines",
    )

    # Assert: every task line names its job and its task in the one format
    events = [e for e in lines(stream) if e.get("job_id") == job]
    for party, role in ROLES.items():
        for component in ("reader_0", "bad_0"):
            task_id = task_scope_id(job, component, party, role)
            mine = [e for e in events if e.get("task_id") == task_id]
            names = {e["event"] for e in mine}
            assert {"task_recorded", "task_started", "task_finished"} <= names, (task_id, names)
            finished = next(e for e in mine if e["event"] == "task_finished")
            if component == "reader_0":
                assert (finished["state"], finished["level"]) == ("success", "info")
                # Logged by the metrics forwarder with the job id only: the task id comes
                # from the running task's bound context.
                assert "task_metrics_sent" in names, names
            else:
                assert (finished["state"], finished["level"]) == ("failed", "warning")
    # (The test plays the scheduler with task ids of its own in the envelopes; the worker's
    # task lines name the task it runs, whatever the envelope said.)
    task_ids = {e["task_id"] for e in events if e["event"].startswith("task_")}
    assert all(t.count("/") == 3 and t.startswith(f"{job}/") for t in task_ids), task_ids
