"""The job page's model panels as HTML fragments (no page of their own): the binning tables and
the SecureBoost trees of one component, which the job page's panels (panels/binning.py,
panels/trees.py) load with htmx. Drawn from exactly the JSON of /api/v1/board/jobs/{job}/
binning|trees/{component} (fedgateway.api.board_models); a component without its model output
(yet) gets a sentence, not an error page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse

from fedgateway.api import board_models
from fedgateway.api.board_models import ComponentPath
from fedgateway.api.deps import JobIdPath
from fedgateway.board.auth import BoardUser
from fedgateway.board.registry import Page

router = APIRouter()


def _fragment(template: str, **context: Any) -> HTMLResponse:
    from fedgateway.board import SECURITY_HEADERS, templates

    html = templates.get_template(template).render(**context)
    return HTMLResponse(html, headers=SECURITY_HEADERS)


def _error(exc: HTTPException) -> str:
    """A refusal as a sentence in the panel (htmx does not swap an error answer in, so the
    panel would stay "Loading..." for good)."""
    return f"Not available ({exc.status_code}): {exc.detail}"


@router.get("/jobs/{job_id}/binning/{component}", response_class=HTMLResponse)
def binning_fragment(api: BoardUser, job_id: JobIdPath, component: ComponentPath) -> HTMLResponse:
    try:
        found = board_models.job_binning(api, job_id, component)
    except HTTPException as exc:
        return _fragment("_binning.html", error=_error(exc), b=None)
    return _fragment("_binning.html", error=None, b=found)


@router.get("/jobs/{job_id}/trees/{component}", response_class=HTMLResponse)
def trees_fragment(api: BoardUser, job_id: JobIdPath, component: ComponentPath) -> HTMLResponse:
    try:
        found = board_models.job_trees(api, job_id, component)
    except HTTPException as exc:
        return _fragment("_trees.html", error=_error(exc), t=None)
    return _fragment("_trees.html", error=None, t=found)


PAGE = Page(slug="model-panels", title="Model panels", router=router, order=12, nav=False)
