"""HTTP observability for every fedmq service's HTTP app: metrics and a server span per request.

`HttpObservabilityMiddleware` is plain ASGI (no web framework imported), so it wraps FastAPI,
Starlette or any ASGI app:

    app.add_middleware(HttpObservabilityMiddleware, metrics=HttpMetrics(registry))

For every HTTP request it
- opens an OpenTelemetry SERVER span whose parent is the W3C `traceparent` request header (none:
  a new trace), and keeps it current while the route handler runs, so whatever the handler
  sends (a scheduler command on the bus, an envelope) joins the caller's trace; the span is
  named "<METHOD> <route>" once routing has found the route, and carries the http.* and url.*
  attributes and the status code (5xx marks the span as an error);
- counts it in fedmq_http_requests_total{method,route,status} and times it in
  fedmq_http_request_seconds{method,route}.

`route` is the route TEMPLATE (/api/v1/jobs/{job_id}), read from the matched route that
Starlette's router leaves in the ASGI scope, never the raw path: labels stay bounded however
many jobs exist. A request that matched no route is labelled `unmatched`, and a method outside
the standard ones `OTHER`, for the same reason.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from prometheus_client import CollectorRegistry, Counter, Histogram

from fedcommon.metrics import decade_buckets
from fedcommon.tracing import extract_context

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRACER_NAME: Final = "fedmq.http"
UNMATCHED_ROUTE: Final = "unmatched"
OTHER_METHOD: Final = "OTHER"
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_BUCKETS: Final = (*decade_buckets(0.001, 5.0), 15.0, 60.0, 300.0)
"""From a /healthz answer to a table upload the scheduler parses before answering (minutes)."""


class HttpMetrics:
    """The fedmq_http_* series of one service's registry (docs/metrics.md)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "fedmq_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "fedmq_http_request_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )


def route_template(scope: Scope) -> str | None:
    """The template of the route the router matched (Starlette puts it in the scope).

    FastAPI may leave a route of an included router there that knows only its own part of the
    template ("/jobs/{job_id}" under include_router(prefix="/api/v1")); the part of the path in
    front of what that route matches is then its prefix, taken literally (fedmq's router
    prefixes have no parameters, so it stays bounded)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        return None
    regex = getattr(route, "path_regex", None)
    path = str(scope.get("path", ""))
    if regex is None or not path or regex.match(path):
        return template
    for cut in range(1, len(path)):
        if path[cut] == "/" and regex.match(path[cut:]):
            return path[:cut] + template
    return template


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class HttpObservabilityMiddleware:
    """ASGI middleware: a SERVER span and the fedmq_http_* metrics per HTTP request."""

    def __init__(
        self, app: ASGIApp, *, metrics: HttpMetrics | None = None, tracer: Tracer | None = None
    ) -> None:
        self.app = app
        self._metrics = metrics
        self._tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        raw_method = str(scope.get("method", "GET")).upper()
        method = raw_method if raw_method in METHODS else OTHER_METHOD
        status = [500]  # what a request that never started its response counts as

        async def send_status(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status[0] = int(message.get("status", 500))
            await send(message)

        # The tracer is looked up per request: the process's provider is set by main.py,
        # possibly after the app (and this middleware) were built.
        tracer = self._tracer or trace.get_tracer(TRACER_NAME)
        parent = extract_context(_header(scope, b"traceparent"))
        started = time.perf_counter()
        with tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": raw_method,
                "url.path": str(scope.get("path", "")),
                "url.scheme": str(scope.get("scheme", "http")),
                "network.protocol.version": str(scope.get("http_version", "1.1")),
            },
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                seconds = time.perf_counter() - started
                route = route_template(scope) or UNMATCHED_ROUTE
                if route != UNMATCHED_ROUTE:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status[0])
                if status[0] >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {status[0]}"))
                if self._metrics is not None:
                    self._metrics.requests.labels(method, route, str(status[0])).inc()
                    self._metrics.request_seconds.labels(method, route).observe(seconds)
