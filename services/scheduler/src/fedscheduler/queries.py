"""The scheduler's read models: what the RPC queries answer, apart from the commands.

Queries only read: each runs in a transaction of its own that changes no row and sends no
message, so they never take a job's lock (commands and message handlers do, in handlers.py).
Views are JSON-like dicts (docs/scheduler.md, "Commands"): a job view, a task view, a grant
view, and a job's story (`logs`) told from the recorded transitions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from fedflow.pipeline import Pipeline, PipelineError
from fedschemas.payloads import NAME_PATTERN
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from sqlalchemy.orm import Session

from fedscheduler import store
from fedscheduler.domain import CommandError
from fedscheduler.models import FAILED, SUCCESS, TERMINAL, Grant, Job, Task

__all__ = ["QUERIES", "JobArgs", "grant_view", "job_view", "task_view"]


class Args(BaseModel):
    """Arguments of a query: unknown ones refused, no coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)


class JobArgs(Args):
    job_id: str = Field(pattern=NAME_PATTERN)


class ListJobsArgs(Args):
    state: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ListTasksArgs(Args):
    job_id: str = Field(pattern=NAME_PATTERN)
    attempt: int | None = Field(default=None, ge=0)


class GrantListArgs(Args):
    table: str | None = None
    grantee: str | None = None


# --- views --------------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_view(session: Session, job: Job, *, party_id: str) -> dict[str, Any]:
    parties = store.job_parties(session, job.job_id)
    effective = store.effective_tasks(session, job.job_id)
    done = sum(1 for t in effective.values() if t.state == SUCCESS)
    return {
        "job_id": job.job_id,
        "state": job.state,
        "attempt": job.attempt,
        "initiator": job.initiator,
        "is_initiator": job.initiator == party_id,
        "reason": job.reason,
        "created_at": _time(job.created_at),
        "updated_at": _time(job.updated_at),
        "ended_at": _time(job.ended_at),
        "tasks_total": len(effective),
        "tasks_succeeded": done,
        "parties": [
            {
                "party_id": p.party_id,
                "roles": p.roles.split(","),
                "state": p.state,
                "last_seen": _time(p.last_seen),
                "reason": p.reason,
            }
            for p in parties
        ],
    }


def task_view(task: Task) -> dict[str, Any]:
    return {
        "job_id": task.job_id,
        "component": task.component,
        "component_type": task.component_type,
        "attempt": task.attempt,
        "party_id": task.party_id,
        "state": task.state,
        "reason": task.reason,
        "progress": task.progress,
        "outputs": task.outputs,
        "started_at": _time(task.started_at),
        "ended_at": _time(task.ended_at),
        "updated_at": _time(task.updated_at),
    }


def grant_view(grant: Grant) -> dict[str, Any]:
    return {
        "table": grant.table_name,
        "grantee": grant.grantee,
        "component_types": list(grant.component_types),
        "params": grant.params,
        "granted_at": _time(grant.granted_at),
    }


# --- queries ------------------------------------------------------------------------------


def _job(session: Session, party_id: str, job: Job) -> dict[str, Any]:
    return job_view(session, job, party_id=party_id)


def _status(session: Session, party_id: str, raw: dict[str, JsonValue]) -> JsonValue:
    args = JobArgs.model_validate(raw)
    job = store.get_job(session, args.job_id)
    if job is None:
        raise CommandError("not_found", f"no job {args.job_id}")
    view = _job(session, party_id, job)
    view["components"] = pipeline_components(job.pipeline_yaml)
    return view


def pipeline_components(pipeline_yaml: str) -> list[dict[str, Any]] | None:
    """The job's pipeline as a DAG for its views (the board draws it): each component's name,
    type, inputs ("upstream.output" per slot) and params as written, in run order. Only the
    single-job `status` carries it; None if the stored pipeline no longer parses (a component
    type this version does not know)."""
    parsed = _pipeline_components_json(pipeline_yaml)
    return None if parsed is None else list(json.loads(parsed))


@functools.lru_cache(maxsize=64)
def _pipeline_components_json(pipeline_yaml: str) -> str | None:
    # Cached by the pipeline's text: a client following a job asks for its status every
    # fraction of a second, and parsing the pipeline costs milliseconds each time.
    try:
        pipeline = Pipeline.from_yaml(pipeline_yaml)
    except PipelineError:
        return None
    return json.dumps(
        [
            {
                "name": c.name,
                "type": c.type,
                "inputs": {slot: str(ref) for slot, ref in c.inputs.items()},
                "params": dict(c.params),
            }
            for c in pipeline.components_in_order()
        ],
        # A YAML value JSON lacks (an unquoted date) becomes its text.
        default=str,
    )


def _list_jobs(session: Session, party_id: str, raw: dict[str, JsonValue]) -> JsonValue:
    args = ListJobsArgs.model_validate(raw)
    query = sa.select(Job).order_by(Job.created_at.desc()).limit(args.limit)
    if args.state is not None:
        query = query.where(Job.state == args.state)
    jobs: list[JsonValue] = [_job(session, party_id, j) for j in session.scalars(query)]
    return {"data": jobs, "count": len(jobs)}


def _list_tasks(session: Session, party_id: str, raw: dict[str, JsonValue]) -> JsonValue:
    args = ListTasksArgs.model_validate(raw)
    if store.get_job(session, args.job_id) is None:
        raise CommandError("not_found", f"no job {args.job_id}")
    tasks: list[JsonValue] = [
        task_view(t) for t in store.tasks_of(session, args.job_id, attempt=args.attempt)
    ]
    return {"data": tasks, "count": len(tasks)}


def _grant_list(session: Session, party_id: str, raw: dict[str, JsonValue]) -> JsonValue:
    args = GrantListArgs.model_validate(raw)
    rows: list[JsonValue] = [
        grant_view(g) for g in store.grants(session, table=args.table, grantee=args.grantee)
    ]
    return {"data": rows, "count": len(rows)}


def _end_level(state: str) -> str:
    """The log level of a job's or task's final state: success is news, failure an error,
    anything else (canceled, timed out) a warning."""
    return "info" if state == SUCCESS else ("error" if state == FAILED else "warning")


def _reason_suffix(reason: str | None) -> str:
    return f": {reason}" if reason else ""


def _logs(session: Session, party_id: str, raw: dict[str, JsonValue]) -> JsonValue:
    """The job's story from what this scheduler recorded: the job, each party's answer, every
    task's start and end (with reasons), the job's end. The scheduler keeps states and their
    times, not a separate event log, so each event here is one recorded transition; running
    progress reports in between are not kept."""
    args = JobArgs.model_validate(raw)
    job = store.get_job(session, args.job_id)
    if job is None:
        raise CommandError("not_found", f"no job {args.job_id}")
    events: list[dict[str, Any]] = []

    def add(
        when: datetime | None, level: str, event: str, message: str, **fields: JsonValue
    ) -> None:
        events.append(
            {
                "time": _time(when),
                "level": level,
                "event": event,
                "job_id": job.job_id,
                "component": None,
                "party_id": None,
                "attempt": None,
                "state": None,
                **fields,
                "message": message,
            }
        )

    parties = store.job_parties(session, job.job_id)
    add(
        job.created_at,
        "info",
        "job_created",
        f"job {job.job_id} initiated by party {job.initiator} with parties "
        + ", ".join(f"{p.party_id} ({p.roles})" for p in parties),
        party_id=job.initiator,
    )
    for p in parties:
        if p.party_id == job.initiator:
            continue
        if p.state == FAILED:
            add(
                p.last_seen or job.ended_at,
                "error",
                "party_failed",
                f"party {p.party_id}: {p.reason or 'failed'}",
                party_id=p.party_id,
                state=p.state,
            )
        elif p.state != "waiting":
            add(
                p.last_seen,
                "info",
                "party_last_seen",
                f"party {p.party_id} ({p.roles}) accepted the job; its last message came now",
                party_id=p.party_id,
                state=p.state,
            )
        else:
            add(
                None,
                "warning",
                "party_waiting",
                f"party {p.party_id} has not answered the proposal",
                party_id=p.party_id,
                state=p.state,
            )
    for t in store.tasks_of(session, job.job_id):
        where: dict[str, JsonValue] = {
            "component": t.component,
            "party_id": t.party_id,
            "attempt": t.attempt,
        }
        if t.started_at is not None:
            add(
                t.started_at,
                "info",
                "task_started",
                f"{t.component} ({t.component_type}) started at party {t.party_id}, "
                f"attempt {t.attempt}",
                state="running",
                **where,
            )
        if t.state in TERMINAL:
            add(
                t.ended_at or t.updated_at,
                _end_level(t.state),
                f"task_{t.state}",
                f"{t.component} at party {t.party_id}, attempt {t.attempt}: {t.state}"
                + _reason_suffix(t.reason),
                state=t.state,
                **where,
            )
    if job.state in TERMINAL:
        add(
            job.ended_at or job.updated_at,
            _end_level(job.state),
            f"job_{job.state}",
            f"job {job.job_id} {job.state} (attempt {job.attempt})" + _reason_suffix(job.reason),
            state=job.state,
            attempt=job.attempt,
        )
    # Events without a time (an unanswered proposal) go last; the sort is stable otherwise.
    events.sort(key=lambda e: (e["time"] is None, e["time"] or ""))
    rows: list[JsonValue] = list(events)
    return {"data": rows, "count": len(rows)}


Query = Callable[[Session, str, dict[str, JsonValue]], JsonValue]
"""(session, this party's id, the request's args) -> the result."""

QUERIES: dict[str, Query] = {
    "status": _status,
    "list_jobs": _list_jobs,
    "list_tasks": _list_tasks,
    "grant_list": _grant_list,
    "logs": _logs,
}
"""Op name -> query (read only)."""
