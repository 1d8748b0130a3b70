"""fedcommon.http.HttpObservabilityMiddleware on a FastAPI app: the SERVER span is current while
the route handler runs (sync handlers in the thread pool too), an incoming traceparent becomes
its parent, its name and the metrics use the route template, and statuses are counted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.testclient import TestClient
from fedcommon.http import HttpMetrics, HttpObservabilityMiddleware
from fedcommon.tracing import inject_traceparent, make_tracer_provider
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

REMOTE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"


@dataclass
class Seen:
    """What the handlers saw of the current span while they ran."""

    spans: list[tuple[int, int]] = field(default_factory=list)
    traceparents: list[str | None] = field(default_factory=list)


@dataclass
class Served:
    client: TestClient
    exporter: InMemorySpanExporter
    registry: CollectorRegistry
    seen: Seen


@pytest.fixture
def served() -> Iterator[Served]:
    exporter = InMemorySpanExporter()
    provider = make_tracer_provider("test-http", "9999", exporter)
    registry = CollectorRegistry()
    seen = Seen()
    app = FastAPI()

    def remember() -> None:
        ctx = trace.get_current_span().get_span_context()
        seen.spans.append((ctx.trace_id, ctx.span_id))
        # What a handler publishing an envelope would stamp into it.
        seen.traceparents.append(inject_traceparent())

    @app.get("/api/v1/jobs/{job_id}")
    def job(job_id: str) -> dict[str, str]:  # sync: runs in the thread pool
        remember()
        if job_id == "missing":
            raise HTTPException(404, "no such job")
        return {"job_id": job_id}

    @app.post("/api/v1/jobs")
    async def submit() -> dict[str, str]:  # async: runs on the loop
        remember()
        return {"state": "submitted"}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("handler bug")

    # As the gateway's REST API is built: routers with a prefix, included under /api/v2.
    tables = APIRouter(prefix="/tables")

    @tables.get("/{name}")
    def table(name: str) -> dict[str, str]:
        return {"name": name}

    @tables.post("", status_code=201)
    def upload() -> dict[str, str]:
        return {"state": "stored"}

    app.include_router(tables, prefix="/api/v2")

    app.add_middleware(
        HttpObservabilityMiddleware,
        metrics=HttpMetrics(registry),
        tracer=provider.get_tracer("test"),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Served(client, exporter, registry, seen)
    provider.shutdown()


def count(served: Served, method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return served.registry.get_sample_value("fedmq_http_requests_total", labels) or 0.0


def test_the_handler_runs_inside_the_server_span_named_by_the_route_template(
    served: Served,
) -> None:
    # Execute: a sync and an async route
    assert served.client.get("/api/v1/jobs/job-42").status_code == 200
    assert served.client.post("/api/v1/jobs").status_code == 200

    # Assert: each handler saw its request's server span as the current span
    spans = served.exporter.get_finished_spans()
    assert [s.name for s in spans] == ["GET /api/v1/jobs/{job_id}", "POST /api/v1/jobs"]
    for span, (trace_id, span_id) in zip(spans, served.seen.spans, strict=True):
        assert span.kind is SpanKind.SERVER
        assert (span.context.trace_id, span.context.span_id) == (trace_id, span_id)
        assert span.parent is None  # no traceparent header: a new trace
    get = spans[0]
    assert get.attributes is not None
    assert get.attributes["http.route"] == "/api/v1/jobs/{job_id}"
    assert get.attributes["http.request.method"] == "GET"
    assert get.attributes["url.path"] == "/api/v1/jobs/job-42"
    assert get.attributes["http.response.status_code"] == 200


def test_an_incoming_traceparent_becomes_the_parent_and_rides_on_what_the_handler_sends(
    served: Served,
) -> None:
    # Execute
    response = served.client.post("/api/v1/jobs", headers={"traceparent": TRACEPARENT})

    # Assert: the server span continues the caller's trace under the caller's span, and an
    # envelope the handler published would carry that trace onwards
    assert response.status_code == 200
    (span,) = served.exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == REMOTE_TRACE
    assert span.parent is not None and format(span.parent.span_id, "016x") == REMOTE_SPAN
    assert span.parent.is_remote
    stamped = served.seen.traceparents[0]
    assert stamped is not None
    assert stamped.split("-")[1] == REMOTE_TRACE
    assert stamped.split("-")[2] == format(span.context.span_id, "016x")


def test_requests_are_counted_by_route_template_and_status(served: Served) -> None:
    # Execute: two jobs (two raw paths, one template), a 404 from a matched route, an unknown
    # path, and a handler that raises
    served.client.get("/api/v1/jobs/a")
    served.client.get("/api/v1/jobs/b")
    served.client.get("/api/v1/jobs/missing")
    served.client.get("/no/such/path")
    assert served.client.get("/boom").status_code == 500

    # Assert
    assert count(served, "GET", "/api/v1/jobs/{job_id}", "200") == 2
    assert count(served, "GET", "/api/v1/jobs/{job_id}", "404") == 1
    assert count(served, "GET", "unmatched", "404") == 1
    assert count(served, "GET", "/boom", "500") == 1
    seconds = served.registry.get_sample_value(
        "fedmq_http_request_seconds_count", {"method": "GET", "route": "/api/v1/jobs/{job_id}"}
    )
    assert seconds == 3
    labels = {
        s.labels["route"]
        for metric in served.registry.collect()
        for s in metric.samples
        if "route" in s.labels
    }
    assert not any(route.endswith(("/a", "/b", "/missing")) for route in labels)
    boom = [s for s in served.exporter.get_finished_spans() if s.name == "GET /boom"]
    assert boom and boom[0].status.status_code is StatusCode.ERROR


def test_routes_of_included_routers_are_labelled_with_their_whole_template(
    served: Served,
) -> None:
    # Execute
    served.client.get("/api/v2/tables/credit")
    served.client.get("/api/v2/tables/breast")
    served.client.post("/api/v2/tables")

    # Assert
    assert count(served, "GET", "/api/v2/tables/{name}", "200") == 2
    assert count(served, "POST", "/api/v2/tables", "201") == 1
    names = [s.name for s in served.exporter.get_finished_spans()]
    assert names == ["GET /api/v2/tables/{name}"] * 2 + ["POST /api/v2/tables"]
