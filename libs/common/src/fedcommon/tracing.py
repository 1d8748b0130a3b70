"""OpenTelemetry tracing for fedmq processes, with the trace context carried in the envelope.

A service's `main.py` calls `configure_tracing` once with what its settings say (libraries never
read the environment). Spans go to the exporter the caller passes (tests pass an
`InMemorySpanExporter`), or to an OTLP/HTTP collector when the caller passes `otlp_endpoint`;
with neither, spans are created (so ids exist for logs and propagation) but not exported.

Propagation is W3C Trace Context: the publisher puts `inject_traceparent()` into
`Envelope.traceparent`, and the consumer starts its handler span under
`extract_context(envelope.traceparent)`, so one trace follows a message from publisher to handler
across processes and brokers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT = "traceparent"


def make_tracer_provider(
    service: str,
    party_id: str,
    exporter: SpanExporter | None = None,
    *,
    otlp_endpoint: str | None = None,
) -> TracerProvider:
    """A TracerProvider whose resource names the service and party.

    An explicitly passed exporter is wired through a SimpleSpanProcessor (spans are exported as
    they end: what tests and console debugging want); the OTLP exporter goes through a
    BatchSpanProcessor so exporting never sits on the message path.
    """
    resource = Resource.create({"service.name": service, "fedmq.party_id": party_id})
    provider = TracerProvider(resource=resource)
    processors: list[SpanProcessor] = []
    if exporter is not None:
        processors.append(SimpleSpanProcessor(exporter))
    if otlp_endpoint:
        # Imported lazily: the OTLP exporter pulls in protobuf and an HTTP client that the
        # embedded default never needs.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processors.append(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def configure_tracing(
    service: str,
    party_id: str,
    exporter: SpanExporter | None = None,
    *,
    otlp_endpoint: str | None = None,
) -> TracerProvider:
    """Install the process-wide TracerProvider (once per process; OpenTelemetry refuses to
    replace it) and return it so `main.py` can `shutdown()` it, flushing spans, at exit."""
    provider = make_tracer_provider(service, party_id, exporter, otlp_endpoint=otlp_endpoint)
    trace.set_tracer_provider(provider)
    return provider


def get_tracer(name: str) -> Tracer:
    """A tracer from the process-wide provider (a no-op one until `configure_tracing`)."""
    return trace.get_tracer(name)


def inject_traceparent(context: Context | None = None) -> str | None:
    """The W3C `traceparent` of the current span (or of `context`); None outside any span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier.get(_TRACEPARENT)


def extract_context(traceparent: str | None) -> Context:
    """The remote parent context a `traceparent` names; an empty context (a new root trace)
    when it is missing or not a valid W3C traceparent."""
    if not traceparent:
        return Context()
    return _PROPAGATOR.extract({_TRACEPARENT: traceparent}, context=Context())


def trace_ids(span: Span | None = None) -> tuple[str | None, str | None]:
    """(trace_id, span_id) of `span` (default: the current one) as lower-case hex, for logs."""
    ctx = (span or trace.get_current_span()).get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


@contextmanager
def span_from_remote(
    tracer: Tracer, name: str, traceparent: str | None, *, kind: SpanKind = SpanKind.CONSUMER
) -> Iterator[Span]:
    """Start `name` as a child of the remote span in `traceparent` and make it current.

    The remote context is attached for the duration so nested spans and logs see it, and
    detached afterwards so a consumer thread does not leak one message's trace into the next.
    """
    token = otel_context.attach(extract_context(traceparent))
    try:
        with tracer.start_as_current_span(name, kind=kind) as span:
            yield span
    finally:
        otel_context.detach(token)
