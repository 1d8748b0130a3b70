"""Local commands and read-models over the bus: request/reply on `svc.scheduler.rpc`.

The REST API and the CLI are fronts for these, never a back channel into the database. A
request is an envelope (fedschemas) whose payload is `scheduler.request` {op, args}; the reply
is an envelope with `scheduler.response` {op, ok, result | error, error_kind}. Ops and their
args (validated here, unknown args refused) and results (JSON-like) are in docs/scheduler.md:

    submit      {pipeline_yaml, job_id?}            -> job view
    status      {job_id}                            -> job view
    list_jobs   {state?, limit?}                    -> {data: [job view], count}
    list_tasks  {job_id, attempt?}                  -> {data: [task view], count}
    stop        {job_id, reason?}                   -> job view
    rerun       {job_id}                            -> job view
    grant_add   {table, grantee, component_types, params?} -> grant view
    grant_list  {table?, grantee?}                  -> {data: [grant view], count}
    logs        {job_id}                            -> {data: [event], count}
    metrics     {job_id, component?, party_id?}     -> {data: [metric], count, curves: [curve]}

Each request runs in one database transaction; the messages a command causes (proposals,
task.run, job.stop...) are published inside it, as in the message handlers. `error_kind` is
invalid (400), not_found (404), conflict (409) or internal (500).

`metrics` answers from the scheduler's own read model (job_metrics.py), which the party's
workers feed with task.metrics messages; the scheduler reads no table of theirs. The table ops
that SchedulerOp still lists (table_upload, table_upload_begin/part/commit/abort, table_get,
table_list) are refused as invalid here: the party's tables belong to its workers, which serve
them as the data service (fedworker.data, data.request on svc.data.rpc).

A command must fit in one bus frame: this server consumes with prefetch 1, and a chunked request
would hold its first chunk unacknowledged while the broker withholds the others -- no answer,
and every later command stuck behind it.

`fedcontrol.SchedulerClient` is the requesting side for Python callers (REST API, CLI, tests;
re-exported here); `fedcontrol.command_envelope` builds requests and replies alike.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from fedbus import Bus
from fedcommon.tracing import get_tracer
from fedcontrol import (
    RPC_COMPONENT,
    SchedulerClient,
    SchedulerCommandFailed,
    SchedulerUnavailable,
)
from fedcontrol.server import CommandServer
from fedflow.descriptors import CATALOGUE
from fedschemas import topics
from fedschemas.payloads import (
    NAME_PATTERN,
    SchedulerErrorKind,
    SchedulerRequest,
    SchedulerResponse,
)
from opentelemetry.trace import Span
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator
from sqlalchemy.orm import Session, sessionmaker

from fedscheduler import store
from fedscheduler.handlers import (
    CommandError,
    SchedulerContext,
    add_grant,
    rerun_job,
    stop_job,
    submit_job,
)
from fedscheduler.job_metrics import metrics_view
from fedscheduler.models import Job
from fedscheduler.queries import QUERIES, JobArgs, Query, job_view

_TRACER = get_tracer("fedscheduler.rpc")
log = structlog.get_logger("fedscheduler.rpc")

__all__ = [
    "OPS",
    "RPC_COMPONENT",
    "RpcServer",
    "SchedulerClient",
    "SchedulerCommandFailed",
    "SchedulerUnavailable",
    "execute",
    "new_job_id",
]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SubmitArgs(_Args):
    pipeline_yaml: str = Field(min_length=1)
    job_id: str | None = Field(default=None, pattern=NAME_PATTERN)


class StopArgs(_Args):
    job_id: str = Field(pattern=NAME_PATTERN)
    reason: str | None = Field(default=None, max_length=1000)


class GrantAddArgs(_Args):
    table: str = Field(min_length=1, max_length=256)
    grantee: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    component_types: list[str] = Field(min_length=1)
    params: dict[str, dict[str, JsonValue]] | None = None
    """{component type: {may_set, bounds}} (fedflow.policy.ParamGrant); checked by add_grant."""

    @field_validator("component_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted({t for t in value if t != store.ANY_COMPONENT and t not in CATALOGUE})
        if unknown:
            raise ValueError(
                f"unknown component type(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(CATALOGUE))}, or * for any)"
            )
        return value


class MetricsArgs(_Args):
    job_id: str = Field(pattern=NAME_PATTERN)
    component: str | None = Field(default=None, pattern=NAME_PATTERN)
    party_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")


def new_job_id(now: datetime) -> str:
    """A fresh job id: UTC time (sorts by submission) and 32 random bits."""
    return f"{now:%Y%m%d%H%M%S}-{secrets.token_hex(4)}"


def _job(session: Session, ctx: SchedulerContext, job: Job) -> dict[str, Any]:
    return job_view(session, job, party_id=ctx.party_id)


def _query(query: Query) -> Op:
    """A read model as an op (queries need only this party's id, not the context)."""
    return lambda session, ctx, raw: query(session, ctx.party_id, raw)


def _submit(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = SubmitArgs.model_validate(raw)
    job_id = args.job_id or new_job_id(ctx.clock())
    return _job(session, ctx, submit_job(session, ctx, job_id, args.pipeline_yaml))


def _stop(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = StopArgs.model_validate(raw)
    return _job(session, ctx, stop_job(session, ctx, args.job_id, args.reason))


def _rerun(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = JobArgs.model_validate(raw)
    return _job(session, ctx, rerun_job(session, ctx, args.job_id))


def _grant_add(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = GrantAddArgs.model_validate(raw)
    return add_grant(session, ctx, args.table, args.grantee, args.component_types, args.params)


def _metrics(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    """The job's metrics and curves from the read model its workers' task.metrics keep
    (job_metrics.py); the scheduler never reads the workers' own tables."""
    args = MetricsArgs.model_validate(raw)
    if store.get_job(session, args.job_id) is None:
        raise CommandError("not_found", f"no job {args.job_id}")
    return metrics_view(session, args.job_id, args.component, args.party_id)


Op = Callable[[Session, SchedulerContext, dict[str, JsonValue]], JsonValue]

OPS: dict[str, Op] = {
    "submit": _submit,
    "stop": _stop,
    "rerun": _rerun,
    "grant_add": _grant_add,
    **{name: _query(query) for name, query in QUERIES.items()},
    "metrics": _metrics,
}


MOVED_TO_DATA_SERVICE = frozenset(
    {
        "table_upload",
        "table_upload_begin",
        "table_upload_part",
        "table_upload_commit",
        "table_upload_abort",
        "table_get",
        "table_list",
    }
)
"""Table ops of SchedulerOp (kept in the literal: only additions within a version) that the
party's data service answers now (fedworker.data, data.request on svc.data.rpc)."""


def _bad_arguments(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
    )
    return f"bad arguments: {problems}"


def execute(
    sessions: sessionmaker[Session],
    ctx: SchedulerContext,
    request: SchedulerRequest,
) -> SchedulerResponse:
    """Run one command in one transaction; every failure becomes a response, never a raise."""
    try:
        if request.op in MOVED_TO_DATA_SERVICE:
            raise CommandError(
                "invalid",
                f"{request.op}: tables are the data service's (data.request on "
                f"{topics.DATA_RPC}, answered by the party's workers), not the scheduler's",
            )
        with sessions.begin() as session:
            result = OPS[request.op](session, ctx, dict(request.args))
    except CommandError as exc:
        outcome: SchedulerErrorKind = exc.kind
        response = SchedulerResponse(op=request.op, ok=False, error=exc.message, error_kind=outcome)
    except ValidationError as exc:
        response = SchedulerResponse(
            op=request.op, ok=False, error=_bad_arguments(exc), error_kind="invalid"
        )
    except Exception as exc:
        log.exception("rpc_failed", op=request.op)
        response = SchedulerResponse(
            op=request.op,
            ok=False,
            error=f"internal error ({type(exc).__name__})",
            error_kind="internal",
        )
    else:
        response = SchedulerResponse(op=request.op, ok=True, result=result)
    ctx.metrics.rpc_requests.labels(request.op, response.error_kind or "ok").inc()
    return response


class RpcServer(CommandServer[SchedulerRequest, SchedulerResponse]):
    """Answers scheduler.request envelopes on `topic` (one thread, in arrival order)."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        sessions: sessionmaker[Session],
        ctx: SchedulerContext,
    ) -> None:
        super().__init__(
            bus, topic, ctx.party_id, SchedulerRequest, SchedulerResponse, log=log, tracer=_TRACER
        )
        self._sessions = sessions
        self._ctx = ctx

    def answer(self, request: SchedulerRequest, span: Span) -> SchedulerResponse:
        job_id = request.args.get("job_id")
        if isinstance(job_id, str):
            span.set_attribute("fedmq.job_id", job_id)
        response = execute(self._sessions, self._ctx, request)
        if isinstance(response.result, dict) and isinstance(response.result.get("job_id"), str):
            span.set_attribute("fedmq.job_id", response.result["job_id"])
        return response
