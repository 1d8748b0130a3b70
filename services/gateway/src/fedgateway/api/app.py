"""FastAPI app of the gateway: /healthz, /metrics, /api/v1/peers, /api/v1/replay/finished, and
the party's REST API (/api/v1/tables, /grants, /jobs: docs/api.md) with its OpenAPI document at
/api/v1/openapi.json and interactive docs at /api/v1/docs. Every request is traced and counted
(fedcommon.http).

Everything under /api/v1 needs an API token (`require_token`), the operator routes too: the
peer list shows the federation's addresses and link states, and marking a job finished makes
the gateway refuse its messages from then on. /healthz and /metrics stay open: container
probes and Prometheus call them without credentials.

The app reads the running gateway through the small `GatewayView` protocol, so it can be tested
with any object that has these members."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import Depends, FastAPI, Response
from fedcommon.http import HttpMetrics, HttpObservabilityMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from fedgateway.api import deps, grants, jobs, tables


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

    job_id: str = Field(min_length=1, max_length=256)
    attempt: int | None = Field(default=None, ge=0)


def create_app(gateway: GatewayView) -> FastAPI:
    app = FastAPI(
        title="fedmq gateway",
        openapi_url=f"{deps.API_PREFIX}/openapi.json",
        docs_url=f"{deps.API_PREFIX}/docs",
        redoc_url=None,
    )
    deps.bind(app, gateway)
    # Every request: a SERVER span (current while the route runs, so the scheduler command a
    # route sends joins the caller's trace) and fedmq_http_* by route template.
    http_metrics = getattr(gateway.metrics, "http", None)
    app.add_middleware(
        HttpObservabilityMiddleware,
        metrics=http_metrics if isinstance(http_metrics, HttpMetrics) else None,
    )
    for router in (tables.router, grants.router, jobs.router):
        app.include_router(router, prefix=deps.API_PREFIX)

    @app.get("/healthz")
    def healthz(response: Response) -> dict[str, Any]:
        health = gateway.health()
        if health["status"] != "ok":
            response.status_code = 503
        return health

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    operator = [Depends(deps.require_token)]

    @app.get(f"{deps.API_PREFIX}/peers", dependencies=operator)
    def peers() -> dict[str, Any]:
        return {"data": gateway.health()["peers"]}

    @app.post(f"{deps.API_PREFIX}/replay/finished", status_code=204, dependencies=operator)
    def finished(body: FinishedCreate) -> Response:
        gateway.finish_attempt(body.job_id, body.attempt)
        return Response(status_code=204)

    return app
