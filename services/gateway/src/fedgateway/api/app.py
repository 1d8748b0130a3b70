"""FastAPI app of the gateway: /healthz, /metrics, /api/v1/peers, /api/v1/replay/finished, and
the party's REST API (/api/v1/tables, /grants, /jobs: docs/api.md) with its OpenAPI document at
/api/v1/openapi.json and interactive docs at /api/v1/docs. Every request is traced and counted
(fedcommon.http).

Everything under /api/v1 needs an API token (`require_token`), the operator routes too: the
peer list shows the federation's addresses and link states, and marking a job finished makes
the gateway refuse its messages from then on. /healthz and /metrics stay open: container
probes and Prometheus call them without credentials.

`POST /api/v1/replay/finished` is an operator override only: the scheduler tells the gateway
of every job end itself (gateway.job_ended). Closing a job that still runs would make the
gateway refuse its messages and fail it minutes later for a misleading reason, so the route
asks the party's scheduler first and answers 409 while the job (or that attempt) is open.

The app reads the running gateway through the small `GatewayView` protocol, so it can be tested
with any object that has these members."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Response, status
from fastapi.telemetry import TelemetryConfig
from fedcommon.http import TRACER_NAME, HttpMetrics, HttpObservabilityMiddleware
from fedschemas.payloads import NAME_PATTERN
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from fedgateway import board
from fedgateway.api import audit, deps, grants, job_outputs, jobs, serving, tables
from fedgateway.api.models import MAX_ATTEMPT
from fedgateway.api.serving_fast import PredictFastPath


class _Metrics(Protocol):
    registry: CollectorRegistry


class GatewayView(Protocol):
    metrics: Any

    def health(self) -> dict[str, Any]: ...

    def finish_attempt(self, job_id: str, attempt: int | None) -> None: ...


class FinishedCreate(BaseModel):
    """Mark a job (attempt is None) or its attempts 0..attempt as finished: later messages
    for them are refused as replays."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(pattern=NAME_PATTERN, description="the job id, as the scheduler has it")
    attempt: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ATTEMPT,
        description="close attempts 0..attempt; null: the whole job",
    )


OPEN_STATES = frozenset({"waiting", "running"})


def refuse_open_job(job: dict[str, Any], attempt: int | None) -> None:
    """409 when closing (job_id, attempt) would refuse the messages of a job still open here:
    the whole job or its current attempt. Earlier attempts of a running rerun may be closed."""
    job_id, state, current = job.get("job_id"), job.get("state"), job.get("attempt", 0)
    if state in OPEN_STATES and (attempt is None or attempt >= current):
        what = "the job" if attempt is None else f"attempt {attempt}"
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"job {job_id} is {state} (attempt {current}): closing {what} would refuse its "
            f"messages and fail it; stop it first (POST /api/v1/jobs/{job_id}/stop)",
        )


FASTAPI_TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}
"""FastAPI's own OpenTelemetry (on by default in FastAPI once a tracer provider is set, as every
fedmq service sets one) adds, per request, a second SERVER span beside
HttpObservabilityMiddleware's and one span each for the dependencies, the endpoint and the
serialization: five spans exported per prediction instead of one (issue #15)."""


def create_app(
    gateway: GatewayView, *, fastapi_telemetry: bool = False, predict_fast_path: bool = True
) -> FastAPI:
    """`fastapi_telemetry`: FastAPI's own spans too (the gateway's `api_fastapi_telemetry`
    setting); fedmq's per-request span and metrics are there either way. `predict_fast_path`:
    one-row predictions that need no refusal skip FastAPI's dependency solving
    (fedgateway.api.serving_fast; off: every request goes through FastAPI, as tests compare)."""
    app = FastAPI(
        title="fedmq gateway",
        openapi_url=f"{deps.API_PREFIX}/openapi.json",
        docs_url=f"{deps.API_PREFIX}/docs",
        redoc_url=None,
        telemetry=None if fastapi_telemetry else FASTAPI_TELEMETRY_OFF,
    )
    deps.bind(app, gateway)
    # Every request: a SERVER span (current while the route runs, so the scheduler command a
    # route sends joins the caller's trace) and fedmq_http_* by route template.
    http_metrics = getattr(gateway.metrics, "http", None)
    if predict_fast_path:
        # Added first, so it runs inside the observability middleware (last added is outermost).
        app.add_middleware(PredictFastPath)
    app.add_middleware(
        HttpObservabilityMiddleware,
        metrics=http_metrics if isinstance(http_metrics, HttpMetrics) else None,
        # Looked up once: per request, get_tracer made a new Tracer and instrumentation scope
        # (8% of the gateway's busy time under prediction load). The process's provider is
        # set at most once, so this tracer stays right (before it is set, a proxy that follows).
        tracer=trace.get_tracer(TRACER_NAME),
    )
    # Serving first: the router tries routes in order, and the predictions are the requests
    # that come by the hundred per second (the prefixes do not overlap, so order is free).
    routers = (serving, tables, grants, jobs, job_outputs, audit)
    for router in (module.router for module in routers):
        app.include_router(router, prefix=deps.API_PREFIX)
    board.mount(app, gateway)  # /board pages and /api/v1/board (docs/board.md)

    @app.get(
        "/healthz",
        tags=["probes"],
        responses={503: {"description": "not ready: the body says which part is not"}},
    )
    def healthz(response: Response) -> dict[str, Any]:
        health = gateway.health()
        if health["status"] != "ok":
            response.status_code = 503
        return health

    @app.get(
        "/metrics",
        tags=["probes"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition",
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            }
        },
    )
    def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    operator = [Depends(deps.require_token)]

    @app.get(
        f"{deps.API_PREFIX}/peers",
        dependencies=operator,
        tags=["operator"],
        responses=deps.refusals(401),
    )
    def peers() -> dict[str, Any]:
        return {"data": gateway.health()["peers"]}

    @app.post(
        f"{deps.API_PREFIX}/replay/finished",
        status_code=204,
        dependencies=operator,
        tags=["operator"],
        responses=deps.refusals(
            400,
            401,
            409,
            503,
            s400="the body is not JSON",
            s409="the job (or that attempt) is still open at this party",
        ),
    )
    def finished(body: FinishedCreate, scheduler: deps.SchedulerDep) -> Response:
        """Operator override: refuse a job's (or its attempts') messages from now on. The
        scheduler already does this at every job end; a job it does not know may be closed."""
        try:
            with deps.answering():  # no answer: 503, and nothing is closed
                job = scheduler.status(body.job_id)
        except HTTPException as exc:
            if exc.status_code != status.HTTP_404_NOT_FOUND:
                raise
        else:
            refuse_open_job(job, body.attempt)
        gateway.finish_attempt(body.job_id, body.attempt)
        return Response(status_code=204)

    return app
