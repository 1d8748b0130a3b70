"""/api/v1/jobs: submit a pipeline, follow, stop and rerun jobs, read their tasks, metrics and
logs. Every call is a command to this party's scheduler; a job is submitted at its initiator
(the pipeline's guest), which proposes it to the other parties through the gateways.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fedschemas.payloads import NAME_PATTERN
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fedgateway.api.deps import (
    ROUTER_REFUSALS,
    JobIdPath,
    SchedulerDep,
    answering,
    refusals,
    require_token,
    unprocessable,
)
from fedgateway.api.models import (
    MAX_ATTEMPT,
    PARTY_PATTERN,
    JobCreate,
    JobPublic,
    JobsPublic,
    JobStop,
    LogsPublic,
    MetricsPublic,
    State,
    TasksPublic,
)

MAX_PIPELINE_BYTES = 1 << 20
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    dependencies=[Depends(require_token)],
    responses=ROUTER_REFUSALS,
)

_SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/yaml": {
                "schema": {"type": "string", "description": "the pipeline file (docs/pipelines.md)"}
            },
            "application/json": {"schema": JobCreate.model_json_schema()},
        },
    }
}


async def _job_create(request: Request, job_id: str | None) -> JobCreate:
    body = await request.body()
    if len(body) > MAX_PIPELINE_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"a pipeline is at most {MAX_PIPELINE_BYTES} bytes"
        )
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body is not UTF-8 text") from None
    try:
        if media == "application/json":
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise HTTPException(
                    status.HTTP_400_BAD_REQUEST, f"the body is not JSON: {exc}"
                ) from None
            if not isinstance(raw, dict):
                raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body must be a JSON object")
            if job_id is not None:
                raw.setdefault("job_id", job_id)
            return JobCreate.model_validate(raw)
        if media and media not in YAML_TYPES:
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                f"send the pipeline as application/yaml (or JSON {{pipeline_yaml}}), not {media}",
            )
        return JobCreate(pipeline_yaml=text, job_id=job_id)
    except ValidationError as exc:
        raise unprocessable(exc) from None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    openapi_extra=_SUBMIT_BODY,
    responses=refusals(
        400,
        409,
        413,
        415,
        s400="the pipeline is malformed or refused: the detail names the problem",
        s409="the job id exists with another pipeline, or a party it names is not a peer",
    ),
)
async def submit_job(
    request: Request,
    scheduler: SchedulerDep,
    job_id: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="default: a fresh id")
    ] = None,
) -> JobPublic:
    """Submit a pipeline (the YAML file as the body). Submitting the same job id with the same
    pipeline again returns the job (safe to retry)."""
    create = await _job_create(request, job_id)
    with answering():
        job = await run_in_threadpool(scheduler.submit, create.pipeline_yaml, create.job_id)
    return JobPublic.model_validate(job)


@router.get("", response_model=JobsPublic)
def list_jobs(
    scheduler: SchedulerDep,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobsPublic:
    """Jobs this party knows of, newest first."""
    with answering():
        rows = scheduler.list_jobs(state=state, limit=limit)
    return JobsPublic.model_validate({"data": rows, "count": len(rows)})


@router.get("/{job_id}", response_model=JobPublic, responses=refusals(404, s404="no job"))
def get_job(scheduler: SchedulerDep, job_id: JobIdPath) -> JobPublic:
    """A job's state, its parties' answers and its task counts."""
    with answering():
        return JobPublic.model_validate(scheduler.status(job_id))


@router.post(
    "/{job_id}/stop",
    response_model=JobPublic,
    responses=refusals(
        400, 404, 409, s400="the body is not JSON", s404="no job", s409="ended, or not ours"
    ),
)
def stop_job(scheduler: SchedulerDep, job_id: JobIdPath, body: JobStop | None = None) -> JobPublic:
    """Stop a running job at every party (it becomes canceled)."""
    reason = body.reason if body is not None else None
    with answering():
        return JobPublic.model_validate(scheduler.stop(job_id, reason))


@router.post(
    "/{job_id}/rerun",
    response_model=JobPublic,
    responses=refusals(404, 409, s404="no job", s409="not failed or canceled, or not ours"),
)
def rerun_job(scheduler: SchedulerDep, job_id: JobIdPath) -> JobPublic:
    """A new attempt of a failed or canceled job from the components that did not succeed."""
    with answering():
        return JobPublic.model_validate(scheduler.rerun(job_id))


@router.get("/{job_id}/tasks", response_model=TasksPublic, responses=refusals(404, s404="no job"))
def list_tasks(
    scheduler: SchedulerDep,
    job_id: JobIdPath,
    attempt: Annotated[int | None, Query(ge=0, le=MAX_ATTEMPT)] = None,
) -> TasksPublic:
    """The job's tasks (one per component, party and attempt)."""
    with answering():
        rows = scheduler.list_tasks(job_id, attempt)
    return TasksPublic.model_validate({"data": rows, "count": len(rows)})


@router.get(
    "/{job_id}/metrics", response_model=MetricsPublic, responses=refusals(404, s404="no job")
)
def get_metrics(
    scheduler: SchedulerDep,
    job_id: JobIdPath,
    component: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    party_id: Annotated[str | None, Query(pattern=PARTY_PATTERN)] = None,
) -> MetricsPublic:
    """This party's metrics and curves of the job (e.g. AUC at the guest, intersection sizes at
    every party)."""
    with answering():
        return MetricsPublic.model_validate(scheduler.metrics(job_id, component, party_id))


@router.get("/{job_id}/logs", response_model=LogsPublic, responses=refusals(404, s404="no job"))
def get_logs(scheduler: SchedulerDep, job_id: JobIdPath) -> LogsPublic:
    """The job's events as this party's scheduler recorded them (created, answers, each task's
    start and end with its reason, the job's end), oldest first."""
    with answering():
        rows = scheduler.logs(job_id)
    return LogsPublic.model_validate({"data": rows, "count": len(rows)})
