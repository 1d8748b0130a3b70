"""Span export an operator can trust: a real worker whose OTLP collector is gone counts the
failed exports, still stops promptly on SIGTERM, and leaves its spans in its trace file, where
`fedmq job trace` shows the job's span tree; plus the file formats the trace view reads."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fedbus import connect
from fedbus.runtime import EnvelopePublisher
from fedcommon.tracing import make_tracer_provider, read_span_file
from fedschemas import PartyRef, new_envelope
from fedschemas.payloads import TaskRun
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from fedmq.cli import app
from fedmq.local import free_port
from tests.polling import wait_until
from tests.worker.conftest import WorkerProcess

PARTY = "9999"
STOP_BOUND_S = 10.0
"""Generous: the shell waits ~2 s for the unreachable collector; before, it waited 30 s."""


def export_failures(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "fedmq_trace_export_failures_total" and s.labels.get("exporter") == "otlp"
    )


def noop_task(job_id: str) -> object:
    me = PartyRef(party_id=PARTY, role="guest")
    payload = TaskRun(
        job_id=job_id,
        component="noop_0",
        component_type="noop",
        attempt=0,
        role="guest",
        party_id=PARTY,
        parties={"guest": [PARTY]},
        params={},
        inputs={},
        pipeline_yaml="name: test",
    )
    return new_envelope(
        payload,
        job_id=job_id,
        component="noop_0",
        task_id=f"{job_id}/noop_0/{PARTY}/guest",
        attempt=0,
        source=me,
        destination=me,
        tag="task.run",
        iteration=-1,
        seq=0,
        created_at=datetime.now(UTC),
    )


@pytest.mark.integration
def test_a_worker_whose_collector_is_gone_counts_failures_stops_promptly_and_keeps_the_trace(
    amqp_url: str, pg_url: str, worker_topics: tuple[str, str], tmp_path: Path
) -> None:
    # Prepare: a real worker exporting to a port nothing listens on, and to a trace file
    http_port, closed_port = free_port(), free_port()
    trace_file = tmp_path / "traces" / "worker.jsonl"
    job_id = f"trace-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(
        {
            "FEDMQ_WORKER_PARTY_ID": PARTY,
            "FEDMQ_WORKER_BUS_URL": amqp_url,
            "FEDMQ_WORKER_DATABASE_URL": pg_url,
            "FEDMQ_WORKER_TOPIC": worker_topics[0],
            "FEDMQ_WORKER_SCHEDULER_TOPIC": worker_topics[1],
            "FEDMQ_WORKER_HTTP_PORT": str(http_port),
            "FEDMQ_WORKER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port}/v1/traces",
            "FEDMQ_WORKER_TRACE_FILE": str(trace_file),
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export batches soon, so failures show early
        },
        tmp_path,
    )
    try:
        worker.wait_for("worker_started")
        client = connect(amqp_url)
        try:
            EnvelopePublisher(client, PartyRef(party_id=PARTY, role="guest")).send(
                worker_topics[0], noop_task(job_id)
            )
        finally:
            client.close()
        worker.wait_for("task_finished", job_id=job_id)
        wait_until(lambda: export_failures(http_port) > 0, what="a failed export counted")

        # Execute: SIGTERM with spans still to export to the unreachable collector
        started = time.monotonic()
        code = worker.terminate(timeout=60)
        stop_seconds = time.monotonic() - started
    finally:
        worker.kill()

    # Assert: a prompt, clean stop, and the job's spans in the file, shown as a tree
    assert code == 0, worker.tail()
    print(f"stopped in {stop_seconds:.2f} s")
    assert stop_seconds < STOP_BOUND_S, stop_seconds
    result = CliRunner().invoke(app, ["job", "trace", job_id, "--file", str(trace_file)])
    assert result.exit_code == 0, result.output
    assert f"job {job_id}:" in result.output
    assert "handle task.run" in result.output
    assert f"worker@{PARTY}" in result.output
    assert " ms" in result.output or " s" in result.output


def test_the_trace_view_reads_both_file_formats_and_nests_spans_under_their_parents(
    tmp_path: Path,
) -> None:
    # Prepare: spans written by fedmq's file exporter (two traces of one job, one of another),
    # and the same shape as an OpenTelemetry Collector's OTLP/JSON line
    ours = tmp_path / "ours.jsonl"
    provider = make_tracer_provider("worker", PARTY, trace_file=ours)
    tracer = provider.get_tracer("test")
    handle = tracer.start_as_current_span("handle task.run", attributes={"fedmq.job_id": "j1"})
    with handle, tracer.start_as_current_span("task noop_0"):
        pass
    with tracer.start_as_current_span("publish task.status", attributes={"fedmq.job_id": "j1"}):
        pass
    with tracer.start_as_current_span("handle task.run", attributes={"fedmq.job_id": "other"}):
        pass
    provider.shutdown()
    collector = tmp_path / "collector.json"
    collector.write_text(
        json.dumps(
            {
                "resourceSpans": [
                    {
                        "resource": {
                            "attributes": [
                                {"key": "service.name", "value": {"stringValue": "gateway"}},
                                {"key": "fedmq.party_id", "value": {"stringValue": "10000"}},
                            ]
                        },
                        "scopeSpans": [
                            {
                                "spans": [
                                    {
                                        "traceId": "ab" * 16,
                                        "spanId": "cd" * 8,
                                        "parentSpanId": "",
                                        "name": "relay in",
                                        "startTimeUnixNano": "1000000000",
                                        "endTimeUnixNano": "1250000000",
                                        "attributes": [
                                            {"key": "fedmq.job_id", "value": {"stringValue": "j1"}}
                                        ],
                                        "status": {"code": 2},
                                    }
                                ]
                            }
                        ],
                    }
                ]
            }
        )
        + "\n"
    )

    # Execute
    spans = read_span_file(ours.read_text().splitlines())
    result = CliRunner().invoke(
        app, ["job", "trace", "j1", "--file", str(ours), "--file", str(collector)]
    )
    as_tree = CliRunner().invoke(app, ["job", "trace", "j1", "--file", str(ours), "--tree"])
    missing = CliRunner().invoke(app, ["job", "trace", "nope", "--file", str(ours)])
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n")
    unreadable = CliRunner().invoke(app, ["job", "trace", "j1", "--file", str(garbage)])

    # Assert
    assert len(spans) == 4 and {s.service for s in spans} == {"worker"}
    child = next(s for s in spans if s.name == "task noop_0")
    parent = next(s for s in spans if s.span_id == child.parent_span_id)
    assert parent.name == "handle task.run" and parent.trace_id == child.trace_id
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "job j1: 4 spans in 3 traces; parties 10000, 9999" in lines[0]
    handle = next(i for i, line in enumerate(lines) if "handle task.run" in line)
    # The child is drawn one level deeper, right under its parent.
    assert "task noop_0" in lines[handle + 1]
    assert lines[handle + 1].index("task") > lines[handle].index("handle")
    assert any(
        "relay in" in line and "gateway@10000" in line and "250.0 ms" in line for line in lines
    )
    assert as_tree.exit_code == 0 and "└── task noop_0  worker@9999" in as_tree.output
    assert missing.exit_code == 1 and "no spans of job nope" in missing.output
    assert unreadable.exit_code == 2 and "line 1" in unreadable.output
