"""fedcommon.tracing's own traceparent parsing and formatting give what OpenTelemetry's W3C
propagator gives (they replace it on every message's path, issue #15)."""

from __future__ import annotations

import pytest
from fedcommon.tracing import extract_context, inject_traceparent, span_from_remote
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()
VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

CASES = [
    VALID,
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",  # not sampled
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future",  # a later version
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # 00 with more: invalid
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff: invalid
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case: invalid
    "  00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01  ",  # spaces around
    "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",  # short trace id
    "0x-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" + "-" * 600,  # too long
    "not a traceparent",
    "",
]


def parent_of(context: Context) -> trace.SpanContext:
    return trace.get_current_span(context).get_span_context()


@pytest.mark.parametrize("traceparent", CASES)
def test_extract_reads_what_the_propagator_reads(traceparent: str) -> None:
    expected = PROPAGATOR.extract({"traceparent": traceparent}, context=Context())
    assert parent_of(extract_context(traceparent)) == parent_of(expected)


def test_inject_writes_what_the_propagator_writes_and_nothing_outside_a_span() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    assert inject_traceparent() is None
    with tracer.start_as_current_span("outer"):
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier)
        assert inject_traceparent() == carrier["traceparent"]
        assert parent_of(extract_context(inject_traceparent())).is_remote


def test_a_remote_span_is_the_callers_child_and_current_only_inside() -> None:
    # Prepare
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    # Execute
    with span_from_remote(tracer, "serve", VALID) as span:
        inside = trace.get_current_span()
        with tracer.start_as_current_span("nested"):
            pass
    after = trace.get_current_span()
    # Assert: the caller's trace goes on, the nested span is the served one's child, and
    # nothing of it stays current once the block ends
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert inside is span
    assert spans["serve"].context.trace_id == int(VALID[3:35], 16)
    assert spans["serve"].parent is not None and spans["serve"].parent.span_id == int(
        VALID[36:52], 16
    )
    assert spans["nested"].parent is not None
    assert spans["nested"].parent.span_id == spans["serve"].context.span_id
    assert not after.get_span_context().is_valid
