"""tests/otlp_receiver.py files what a real OTLP/HTTP exporter sends, by the collector's party."""

from __future__ import annotations

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.otlp_receiver import OtlpReceiver


def test_spans_exported_to_a_party_path_arrive_with_party_parent_and_attributes() -> None:
    with OtlpReceiver() as receiver:
        # Prepare: a process of party 9999 exporting to party 10000's collector path
        provider = TracerProvider(
            resource=Resource.create({"service.name": "fedmq-worker", "fedmq.party_id": "9999"})
        )
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.port}/10000/v1/traces")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")

        # Execute
        with (
            tracer.start_as_current_span("task psi") as parent,
            tracer.start_as_current_span("publish", attributes={"fedmq.job_id": "j-1"}),
        ):
            pass
        provider.shutdown()

        # Assert
        with receiver.lock:
            spans = {s.name: s for s in receiver.spans}
    assert set(spans) == {"task psi", "publish"}
    child, root = spans["publish"], spans["task psi"]
    assert (child.collector, child.party, child.service) == ("10000", "9999", "fedmq-worker")
    assert child.parent == root.span_id == format(parent.get_span_context().span_id, "016x")
    assert root.parent == "" and child.trace_id == root.trace_id
    assert child.attrs == {"fedmq.job_id": "j-1"}
    assert 0 < root.start_ns <= child.start_ns <= child.end_ns <= root.end_ns


def test_a_path_that_names_no_party_is_not_found() -> None:
    with OtlpReceiver() as receiver:
        answer = httpx.post(f"http://127.0.0.1:{receiver.port}/v1/traces", content=b"")

    assert answer.status_code == 404
    assert receiver.spans == []
