"""OpenTelemetry tracing for fedmq processes, with the trace context carried in the envelope.

A service's `main.py` calls `configure_tracing` once with what its settings say (libraries never
read the environment). Spans go to the exporter the caller passes (tests pass an
`InMemorySpanExporter`), or to an OTLP/HTTP collector when the caller passes `otlp_endpoint`;
with neither, spans are created (so ids exist for logs and propagation) but not exported.

Export (`make_tracer_provider`): to the exporter the caller passes, to an OTLP/HTTP collector
(`otlp_endpoint`), and/or to a JSON-lines file (`trace_file`, one span per line, appended; what
`fedmq job trace` reads, with `read_span_file`). Batched exports are guarded:
- a failed export (collector unreachable or refusing, disk full) is counted in the caller's
  `export_failures` counter (fedmq_trace_export_failures_total{exporter}, made by
  `export_failures_counter`) and its spans are dropped: tracing never blocks or fails the work;
- one OTLP export, retries included, gives up after EXPORT_TIMEOUT_S, and shutting the
  provider down waits at most SHUTDOWN_S per exporter for what is still queued, then abandons
  it (counted as a failure), so a service stops promptly with its collector gone.

Propagation is W3C Trace Context: the publisher puts `inject_traceparent()` into
`Envelope.traceparent`, and the consumer starts its handler span under
`extract_context(envelope.traceparent)`, so one trace follows a message from publisher to handler
across processes and brokers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter

_TRACEPARENT_RE = TraceContextTextMapPropagator._TRACEPARENT_HEADER_FORMAT_RE
_TRACEPARENT_MAX = TraceContextTextMapPropagator._TRACEPARENT_MAXIMUM_LENGTH
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

log = structlog.get_logger("fedcommon.tracing")

EXPORT_TIMEOUT_S: Final = 2.0
"""One OTLP export, retries included (the exporter's default is 10 s, and a stopping service
waited for several of them: 31 s with the collector gone)."""
SHUTDOWN_S: Final = 2.0
"""How long shutdown waits for one exporter's queued spans before abandoning them."""
FILE_FLUSH_MS: Final = 1000
"""Spans reach the trace file within about this long (the batch's schedule delay)."""
EXPORTERS: Final = ("otlp", "file")
"""The `exporter` label values of fedmq_trace_export_failures_total."""


def export_failures_counter() -> Counter:
    """fedmq_trace_export_failures_total{exporter}, unregistered (the service registers it in
    its own registry), each exporter's series at 0 from the start."""
    counter = Counter(
        "fedmq_trace_export_failures",
        "Span exports that failed (their spans are dropped): collector unreachable or refusing, "
        "trace file unwritable, or still queued when the process stopped; by exporter.",
        ["exporter"],
        registry=None,
    )
    for name in EXPORTERS:
        counter.labels(name)
    return counter


class CountingExporter(SpanExporter):
    """Wraps an exporter: a failed export (FAILURE, or an exception) is counted, never raised."""

    def __init__(self, inner: SpanExporter, name: str, failures: Counter | None) -> None:
        self.inner = inner
        self.name = name
        self._failures = failures
        self._warned = False

    def failed(self, spans: int, error: object) -> None:
        if self._failures is not None:
            self._failures.labels(self.name).inc()
        if not self._warned:  # once: a collector that is down would fill the log
            self._warned = True
            log.warning("trace_export_failed", exporter=self.name, spans=spans, error=str(error))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # an exporter bug must not kill the batch thread
            self.failed(len(spans), exc)
            return SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.failed(len(spans), "export refused or timed out")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class BoundedShutdown(SpanProcessor):
    """A batch processor whose shutdown waits at most `limit_s` for its queued spans.

    BatchSpanProcessor.shutdown joins its export thread for up to 30 s while that thread
    retries an unreachable collector; here the join runs on a helper thread and, past the
    limit, the exporter is shut down (which aborts its retries) and the rest is abandoned."""

    def __init__(self, inner: BatchSpanProcessor, exporter: CountingExporter, limit_s: float):
        self.inner = inner
        self.exporter = exporter
        self.limit_s = limit_s

    @property
    def span_exporter(self) -> SpanExporter:
        """The exporter the spans reach (as BatchSpanProcessor.span_exporter names it)."""
        return self.exporter.inner

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(span)

    def shutdown(self) -> None:
        stopper = threading.Thread(target=self.inner.shutdown, name="span-export-stop", daemon=True)
        stopper.start()
        stopper.join(self.limit_s)
        if stopper.is_alive():
            self.exporter.failed(0, f"spans still queued after {self.limit_s} s: abandoned")
            self.exporter.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """One span as a trace file line: ids in lower-case hex, times in Unix nanoseconds."""
    ctx = span.get_span_context()
    parent = span.parent
    resource = span.resource.attributes
    return {
        "trace_id": format(ctx.trace_id, "032x") if ctx else "",
        "span_id": format(ctx.span_id, "016x") if ctx else "",
        "parent_span_id": format(parent.span_id, "016x") if parent else "",
        "name": span.name,
        "kind": span.kind.name,
        "service": str(resource.get("service.name", "")),
        "party": str(resource.get("fedmq.party_id", "")),
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or 0,
        "status": span.status.status_code.name,
        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class JsonLinesSpanExporter(SpanExporter):
    """Appends each span as one JSON line (`span_record`) to `path` (created with its folder).

    Several processes may append to one file: each batch is written with a single write() on
    a file opened in append mode, so lines from different processes do not interleave."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[str] | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        text = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(text)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def make_tracer_provider(
    service: str,
    party_id: str,
    exporter: SpanExporter | None = None,
    *,
    otlp_endpoint: str | None = None,
    trace_file: str | Path | None = None,
    export_failures: Counter | None = None,
    shutdown_s: float = SHUTDOWN_S,
) -> TracerProvider:
    """A TracerProvider whose resource names the service and party.

    An explicitly passed exporter is wired through a SimpleSpanProcessor (spans are exported as
    they end: what tests and console debugging want); the OTLP and file exporters go through a
    BatchSpanProcessor so exporting never sits on the message path, counted and bounded
    (`CountingExporter`, `BoundedShutdown`).
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

        otlp = CountingExporter(
            OTLPSpanExporter(endpoint=otlp_endpoint, timeout=EXPORT_TIMEOUT_S),
            "otlp",
            export_failures,
        )
        processors.append(BoundedShutdown(BatchSpanProcessor(otlp), otlp, shutdown_s))
    if trace_file:
        to_file = CountingExporter(JsonLinesSpanExporter(trace_file), "file", export_failures)
        batch = BatchSpanProcessor(to_file, schedule_delay_millis=FILE_FLUSH_MS)
        processors.append(BoundedShutdown(batch, to_file, shutdown_s))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def configure_tracing(
    service: str,
    party_id: str,
    exporter: SpanExporter | None = None,
    *,
    otlp_endpoint: str | None = None,
    trace_file: str | Path | None = None,
    export_failures: Counter | None = None,
) -> TracerProvider:
    """Install the process-wide TracerProvider (once per process; OpenTelemetry refuses to
    replace it) and return it so `main.py` can `shutdown()` it, flushing spans, at exit."""
    provider = make_tracer_provider(
        service,
        party_id,
        exporter,
        otlp_endpoint=otlp_endpoint,
        trace_file=trace_file,
        export_failures=export_failures,
    )
    trace.set_tracer_provider(provider)
    return provider


@dataclass(frozen=True)
class SpanLine:
    """One span read back from a trace file."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    party: str
    start_ns: int
    end_ns: int
    status: str = "UNSET"
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


def read_span_file(lines: Iterable[str]) -> list[SpanLine]:
    """The spans in trace file lines: `JsonLinesSpanExporter`'s (one span per line) or an
    OpenTelemetry Collector file exporter's (OTLP/JSON, one `resourceSpans` request per line).
    Blank lines are skipped; anything else that is not one of the two raises ValueError."""
    spans: list[SpanLine] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if "resourceSpans" in obj:
                spans.extend(_otlp_json_spans(obj))
            else:
                spans.append(_span_line(obj))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"line {number}: not a span record ({exc})") from None
    return spans


def _span_line(obj: dict[str, Any]) -> SpanLine:
    return SpanLine(
        trace_id=str(obj["trace_id"]),
        span_id=str(obj["span_id"]),
        parent_span_id=str(obj.get("parent_span_id") or ""),
        name=str(obj["name"]),
        service=str(obj.get("service", "")),
        party=str(obj.get("party", "")),
        start_ns=int(obj["start_ns"]),
        end_ns=int(obj["end_ns"]),
        status=str(obj.get("status", "UNSET")),
        attributes=dict(obj.get("attributes") or {}),
    )


def _any_value(value: dict[str, Any]) -> Any:
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        return int(value["intValue"])
    return None


def _otlp_attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {kv["key"]: _any_value(kv.get("value", {})) for kv in items or []}


_OTLP_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _otlp_json_spans(request: dict[str, Any]) -> Iterator[SpanLine]:
    for resource_spans in request["resourceSpans"]:
        resource = _otlp_attributes(resource_spans.get("resource", {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                code = span.get("status", {}).get("code", 0)
                yield SpanLine(
                    trace_id=str(span["traceId"]).lower(),
                    span_id=str(span["spanId"]).lower(),
                    parent_span_id=str(span.get("parentSpanId") or "").lower(),
                    name=str(span["name"]),
                    service=str(resource.get("service.name", "")),
                    party=str(resource.get("fedmq.party_id", "")),
                    start_ns=int(span["startTimeUnixNano"]),
                    end_ns=int(span["endTimeUnixNano"]),
                    status=_OTLP_STATUS.get(code, str(code).removeprefix("STATUS_CODE_")),
                    attributes=_otlp_attributes(span.get("attributes")),
                )


def get_tracer(name: str) -> Tracer:
    """A tracer from the process-wide provider (a no-op one until `configure_tracing`)."""
    return trace.get_tracer(name)


def inject_traceparent(context: Context | None = None) -> str | None:
    """The W3C `traceparent` of the current span (or of `context`); None outside any span.

    Formatted here as TraceContextTextMapPropagator.inject formats it, without its carrier
    and setter (a third of its CPU; every message of every hop carries one, issue #15).
    fedmq's envelopes carry no tracestate."""
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return None
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{span_context.trace_flags:02x}"
    )


def extract_context(traceparent: str | None) -> Context:
    """The remote parent context a `traceparent` names; an empty context (a new root trace)
    when it is missing or not a valid W3C traceparent.

    The propagator's own rules (TraceContextTextMapPropagator.extract: its pattern, no
    all-zero ids, no version ff, nothing after a version-00 value, at most 512 characters)
    without its carrier, getter and tracestate steps (fedmq carries no tracestate): half its
    CPU, on every message handled (issue #15)."""
    if not traceparent or len(traceparent) > _TRACEPARENT_MAX:
        return Context()
    match = _TRACEPARENT_RE.match(traceparent)
    if match is None:
        return Context()
    version, trace_hex, span_hex, flags, rest = match.groups()
    if trace_hex == _ZERO_TRACE or span_hex == _ZERO_SPAN or version == "ff":
        return Context()
    if version == "00" and rest:
        return Context()
    remote = SpanContext(
        trace_id=int(trace_hex, 16),
        span_id=int(span_hex, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16)),
    )
    return trace.set_span_in_context(NonRecordingSpan(remote), Context())


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

    The span is current for the duration (nested spans are its children, logs carry its trace
    id) and no longer once the block ends, so a consumer thread does not leak one message's
    trace into the next. The remote parent is given to the span rather than attached around
    it: the same parentage, one context attach and detach fewer per message."""
    with tracer.start_as_current_span(
        name, context=extract_context(traceparent), kind=kind
    ) as span:
        yield span
