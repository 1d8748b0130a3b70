"""Audit: findings by rule and severity (every job), and for one job its trail (the records of
what crossed), the post-hoc replay's findings and whether the log's hash chain verifies."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fedschemas.payloads import NAME_PATTERN

from fedgateway.api.audit import ask_audit
from fedgateway.api.deps import answering
from fedgateway.board import views
from fedgateway.board.auth import BoardUser
from fedgateway.board.registry import Page

TRAIL_ROWS = 500
router = APIRouter()


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    api: BoardUser,
    job_id: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> HTMLResponse:
    from fedgateway.board import render

    with answering():
        jobs = api.scheduler().list_jobs(limit=50)
    if job_id is None and jobs:
        job_id = jobs[0]["job_id"]
    alerts, error = views.optional(lambda: ask_audit(api, {"op": "alerts", "job_id": None}))
    by_rule: Counter[tuple[str, str]] = Counter((a["rule"], a["severity"]) for a in (alerts or []))
    report: Any = None
    trail: Any = None
    if job_id is not None and error is None:
        report, error = views.optional(lambda: ask_audit(api, {"op": "report", "job_id": job_id}))
        trail, _ = views.optional(
            lambda: ask_audit(
                api, {"op": "events", "job_id": job_id, "after": 0, "limit": TRAIL_ROWS}
            )
        )
    return render(
        request,
        "audit.html",
        active="audit",
        jobs=jobs,
        job_id=job_id,
        alerts=alerts or [],
        by_rule=sorted(by_rule.items()),
        report=report,
        trail=trail or [],
        trail_rows=TRAIL_ROWS,
        error=error,
    )


PAGE = Page(slug="audit", title="Audit", router=router, order=30)
