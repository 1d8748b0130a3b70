"""Installs the process tracer provider in a fresh interpreter (OpenTelemetry allows that once
per process) and prints the service name and party id one span carried."""

from __future__ import annotations

from fedcommon.tracing import configure_tracing, get_tracer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = configure_tracing("worker", "10000", exporter)
with get_tracer("x").start_as_current_span("s"):
    pass
(span,) = exporter.get_finished_spans()
print(span.resource.attributes["service.name"], span.resource.attributes["fedmq.party_id"])
