"""Models and serving: published models and their versions (state, hosts' acceptance), the
bound services with their traffic split (the version served, the canary's version and share),
and the lifecycle log; read through the serving API's read models (fedgateway.api.serving).

Shown only where the gateway has the serving API. Latency and error charts are not here yet:
the serving service keeps them as Prometheus metrics only, which the REST API does not serve
(docs/board.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.routing import NoMatchFound

from fedgateway.board import views
from fedgateway.board.auth import BoardUser
from fedgateway.board.registry import Page

READ_TIMEOUT_S = 3.0
"""The board's reads of the serving service: a page must not hang on a missing service."""
router = APIRouter()


def has_serving_api(app: FastAPI) -> bool:
    """Whether the app serves GET /api/v1/serving/services (its route is named `services`;
    included routers are not listed route by route in `app.routes`)."""
    try:
        return str(app.url_path_for("services")).startswith("/api/v1/serving/")
    except NoMatchFound:
        return False


@router.get("/serving", response_class=HTMLResponse)
def serving_page(request: Request, api: BoardUser) -> HTMLResponse:
    from fedgateway.api.serving import ask_serving
    from fedgateway.board import render

    def read(op: str) -> Any:
        return ask_serving(api, op, timeout=READ_TIMEOUT_S)

    models, error = views.optional(lambda: read("model_list"))
    services: Any = None
    events: Any = None
    if error is None:
        services, error = views.optional(lambda: read("service_list"))
        events, _ = views.optional(lambda: read("events"))
    return render(
        request,
        "serving.html",
        active="serving",
        models=(models or {}).get("data", []),
        services=(services or {}).get("data", []),
        events=(events or {}).get("data", [])[-50:],
        error=error,
    )


PAGE = Page(
    slug="serving", title="Models & serving", router=router, order=25, available=has_serving_api
)
