"""A job: the pipeline as a DAG with each component's state; per component its parameters, log,
metrics and charts (the registered panels); the messages that crossed, per tag and direction."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fedgateway.api import board_data
from fedgateway.api.deps import JobIdPath, answering
from fedgateway.board import dag_svg, registry, views
from fedgateway.board.auth import BoardUser
from fedgateway.board.registry import Page

router = APIRouter()


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, api: BoardUser, job_id: JobIdPath) -> HTMLResponse:
    from fedgateway.board import render

    scheduler = api.scheduler()
    with answering():
        job = scheduler.status(job_id)
        tasks = scheduler.list_tasks(job_id)
        metrics = scheduler.metrics(job_id)
        logs = scheduler.logs(job_id)
    dag = board_data.dag_from(job, tasks)
    charts = board_data.charts_from(job_id, metrics)
    crossed, crossed_error = views.optional(lambda: board_data.job_crossed(api, job_id))
    ctx: dict[str, Any] = {
        "job": job,
        "dag": dag,
        "charts": charts,
        "metrics": metrics,
        "logs": logs,
        "crossed": crossed,
        "crossed_error": crossed_error,
        "node": None,
    }
    panels = registry.panels()
    sections = []
    for node in dag.nodes:
        built = []
        for panel in panels:
            if not panel.per_component:
                continue
            data = panel.build({**ctx, "node": node})
            if data is not None:
                built.append({"panel": panel, "data": data})
        sections.append({"node": node, "panels": built})
    job_panels = []
    for panel in panels:
        if panel.per_component:
            continue
        data = panel.build(ctx)
        if data is not None:
            job_panels.append({"panel": panel, "data": data})
    return render(
        request,
        "job.html",
        active="jobs",
        job=job,
        dag=dag,
        svg=dag_svg.layout(dag),
        live=job["state"] in LIVE_STATES,
        sections=sections,
        job_panels=job_panels,
        charts_json=charts.model_dump(mode="json"),
    )


LIVE_STATES = frozenset({"waiting", "running"})


@router.get("/jobs/{job_id}/live-dag", response_class=HTMLResponse)
def live_dag(request: Request, api: BoardUser, job_id: JobIdPath) -> HTMLResponse:
    """The DAG alone, for the job page to poll while the job runs (htmx swaps it in; the
    answer for an ended job carries no trigger, so the polling stops)."""
    from fedgateway.board import SECURITY_HEADERS, templates

    scheduler = api.scheduler()
    with answering():
        job = scheduler.status(job_id)
        tasks = scheduler.list_tasks(job_id)
    dag = board_data.dag_from(job, tasks)
    html = templates.get_template("_dag_live.html").render(
        job=job, dag=dag, svg=dag_svg.layout(dag), live=job["state"] in LIVE_STATES
    )
    return HTMLResponse(html, headers=SECURITY_HEADERS)


PAGE = Page(slug="job", title="Job", router=router, order=11, nav=False)
