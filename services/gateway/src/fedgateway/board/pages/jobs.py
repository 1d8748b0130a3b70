"""Jobs: this party's jobs with state, progress, parties, start and duration; filter by state,
search by id or party; live while the page is open (server-sent events, no manual refresh)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from fedcontrol import SchedulerClient
from starlette.concurrency import run_in_threadpool

from fedgateway.api.deps import answering
from fedgateway.board.auth import BoardUser
from fedgateway.board.registry import Page

STREAM_INTERVAL_S = 1.0
"""How often an open jobs page's stream asks the scheduler for the list."""
STREAM_MAX_S = 300.0
"""A stream ends after this; the browser's EventSource reconnects at once. Bounds what a
forgotten tab holds and lets the gateway stop without waiting for streams."""
KEEPALIVE_S = 15.0
LIMIT = 100

router = APIRouter()
StateQuery = Annotated[
    str, Query(pattern="^(|waiting|running|success|failed|canceled)$", description="empty: any")
]
SearchQuery = Annotated[str, Query(max_length=128)]


def matching(jobs: list[dict[str, Any]], q: str) -> list[dict[str, Any]]:
    """Jobs whose id or one of whose parties contains `q` (case-insensitive)."""
    needle = q.strip().lower()
    if not needle:
        return jobs
    return [
        j
        for j in jobs
        if needle in j["job_id"].lower() or any(needle in p["party_id"] for p in j["parties"])
    ]


def jobs_rows(scheduler: SchedulerClient, state: str, q: str) -> list[dict[str, Any]]:
    with answering():
        jobs = scheduler.list_jobs(state=state or None, limit=LIMIT)
    return matching(jobs, q)


def _rows_html(jobs: list[dict[str, Any]]) -> str:
    from fedgateway.board import templates

    return templates.get_template("_jobs_rows.html").render(jobs=jobs)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request, api: BoardUser, state: StateQuery = "", q: SearchQuery = ""
) -> HTMLResponse:
    from fedgateway.board import render

    jobs = jobs_rows(api.scheduler(), state, q)
    return render(request, "jobs.html", active="jobs", jobs=jobs, state=state, q=q)


def sse(event: str, html: str) -> str:
    """One server-sent event; every line of the data gets its own `data:` field."""
    lines = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {event}\n{lines}\n"


@router.get("/jobs/stream")
async def jobs_stream(
    request: Request, api: BoardUser, state: StateQuery = "", q: SearchQuery = ""
) -> StreamingResponse:
    """`jobs` events with the table's rows whenever they change (checked every second)."""
    scheduler = await run_in_threadpool(api.scheduler)
    # The running gateway's stop event: a stream ends within a tick of the gateway stopping,
    # so an open page never holds up its shutdown.
    stopping = getattr(getattr(request.app.state, "gateway", None), "stopping", None)

    async def events() -> AsyncIterator[str]:
        started = last_sent = time.monotonic()
        previous = None
        while time.monotonic() - started < STREAM_MAX_S:
            if await request.is_disconnected() or (stopping is not None and stopping.is_set()):
                return
            try:
                jobs = await run_in_threadpool(jobs_rows, scheduler, state, q)
            except Exception:  # the scheduler away: try again next tick
                jobs = None
            if jobs is not None:
                html = _rows_html(jobs)
                if html != previous:
                    previous, last_sent = html, time.monotonic()
                    yield sse("jobs", html)
            if time.monotonic() - last_sent > KEEPALIVE_S:
                last_sent = time.monotonic()
                yield ": keepalive\n\n"
            await asyncio.sleep(STREAM_INTERVAL_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


PAGE = Page(slug="jobs", title="Jobs", router=router, order=10)
