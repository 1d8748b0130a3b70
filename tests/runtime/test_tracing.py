"""One trace follows a message from publisher to handler: the trace context rides in the
envelope (W3C traceparent) and the handler's span is the publish span's child."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fedbus import Bus, connect
from fedbus.in_memory_inbox import InMemoryInbox
from fedbus.inbox import InboxTransaction
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher
from fedcommon.tracing import (
    extract_context,
    inject_traceparent,
    make_tracer_provider,
    trace_ids,
)
from fedschemas import Envelope, Payload
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.polling import wait_until
from tests.runtime.helpers import GUEST, ping
from tests.scripts import run_script


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = make_tracer_provider("test-svc", "9999", exporter)
    yield provider
    provider.shutdown()


@pytest.fixture
def bus(unique_name: str) -> Iterator[Bus]:
    bus = connect(f"memory://{unique_name}")
    bus.declare("svc")
    yield bus
    bus.close()


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_handler_span_is_child_of_publish_span_in_one_trace(
    bus: Bus, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    # Prepare: publisher and consumer as two "processes" with their own tracers.
    seen_in_handler: list[tuple[str | None, str | None]] = []
    done = threading.Event()

    def handler(envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        seen_in_handler.append(trace_ids())
        done.set()

    consumer = EnvelopeConsumer(
        bus, "svc", {"demo.ping": handler}, InMemoryInbox(), tracer=provider.get_tracer("consumer")
    )
    consumer.start()
    publisher = EnvelopePublisher(bus, GUEST, tracer=provider.get_tracer("publisher"))
    # Execute
    publisher.send("svc", ping())
    assert done.wait(10)
    wait_until(lambda: bool(spans_named(exporter, "handle demo.ping")), what="the handler span")
    # Assert
    (publish,) = spans_named(exporter, "publish demo.ping")
    (handle,) = spans_named(exporter, "handle demo.ping")
    assert publish.kind is SpanKind.PRODUCER and handle.kind is SpanKind.CONSUMER
    assert handle.context.trace_id == publish.context.trace_id
    assert handle.parent is not None
    assert handle.parent.span_id == publish.context.span_id
    assert handle.parent.is_remote
    assert seen_in_handler == [
        (format(handle.context.trace_id, "032x"), format(handle.context.span_id, "016x"))
    ]
    assert handle.attributes is not None
    assert handle.attributes["messaging.message.id"] == ping().message_id
    consumer.stop()


def test_publish_inside_an_application_span_joins_its_trace(
    bus: Bus, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("app")
    consumer = EnvelopeConsumer(
        bus, "svc", {"demo.ping": lambda e, p, tx: None}, InMemoryInbox(), tracer=tracer
    )
    consumer.start()

    with tracer.start_as_current_span("train iteration 3") as outer:
        EnvelopePublisher(bus, GUEST, tracer=tracer).send("svc", ping())

    wait_until(lambda: bool(spans_named(exporter, "handle demo.ping")), what="the handler span")
    (publish,) = spans_named(exporter, "publish demo.ping")
    (handle,) = spans_named(exporter, "handle demo.ping")
    trace_id = outer.get_span_context().trace_id
    assert publish.context.trace_id == handle.context.trace_id == trace_id
    assert publish.parent is not None and publish.parent.span_id == outer.get_span_context().span_id
    consumer.stop()


def test_envelope_without_traceparent_starts_a_new_trace(
    bus: Bus, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    consumer = EnvelopeConsumer(
        bus,
        "svc",
        {"demo.ping": lambda e, p, tx: None},
        InMemoryInbox(),
        tracer=provider.get_tracer("c"),
    )
    consumer.start()

    # Published by a sender without tracing: the no-op tracer leaves traceparent empty.
    EnvelopePublisher(bus, GUEST, tracer=trace.NoOpTracer()).send("svc", ping())

    wait_until(lambda: bool(spans_named(exporter, "handle demo.ping")), what="the handler span")
    (handle,) = spans_named(exporter, "handle demo.ping")
    assert handle.parent is None
    consumer.stop()


def test_traceparent_round_trips_through_inject_and_extract(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        traceparent = inject_traceparent()

    assert traceparent is not None
    remote = trace.get_current_span(extract_context(traceparent)).get_span_context()
    assert remote.trace_id == span.get_span_context().trace_id
    assert remote.span_id == span.get_span_context().span_id
    assert remote.is_remote


def test_no_traceparent_outside_a_span_and_garbage_extracts_to_nothing() -> None:
    assert inject_traceparent() is None
    for bad in (None, "", "not-a-traceparent", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"):
        assert not trace.get_current_span(extract_context(bad)).get_span_context().is_valid


def test_configure_tracing_installs_the_process_provider() -> None:
    # In a fresh interpreter: OpenTelemetry allows setting the global provider once per process.
    out = run_script("configure_tracing.py")

    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["worker", "10000"]


def test_otlp_export_is_wired_only_when_an_endpoint_is_given() -> None:
    # Nothing listens on port 1: building the exporter must not connect (export is batched,
    # later, off the message path), and a provider without an endpoint gets no processor.
    with_otlp = make_tracer_provider("w", "1", otlp_endpoint="http://127.0.0.1:1/v1/traces")
    without = make_tracer_provider("w", "1")

    exporters = [
        type(p.span_exporter).__name__
        for p in with_otlp._active_span_processor._span_processors  # type: ignore[attr-defined]
    ]
    assert exporters == ["OTLPSpanExporter"]
    assert without._active_span_processor._span_processors == ()  # type: ignore[attr-defined]
    with_otlp.shutdown()
    without.shutdown()
