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
    grant_add   {table, grantee, component_types}   -> grant view
    grant_list  {table?, grantee?}                  -> {data: [grant view], count}

Each request runs in one database transaction; the messages a command causes (proposals,
task.run, job.stop...) are published inside it, as in the message handlers. `error_kind` is
invalid (400), not_found (404), conflict (409) or internal (500).

`SchedulerClient` is the requesting side for Python callers (CLI, SDK, tests); another service
speaks the same protocol with fedschemas and fedbus alone (no import of this package).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from fedbus import Bus, Delivery, Subscription
from fedschemas import (
    MalformedMessage,
    PartyRef,
    decode_envelope,
    decode_payload,
    encode_envelope,
    new_envelope,
)
from fedschemas.payloads import (
    NAME_PATTERN,
    SchedulerErrorKind,
    SchedulerOp,
    SchedulerRequest,
    SchedulerResponse,
)
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
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
from fedscheduler.models import Job

log = structlog.get_logger("fedscheduler.rpc")

RPC_COMPONENT = "scheduler.rpc"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SubmitArgs(_Args):
    pipeline_yaml: str = Field(min_length=1)
    job_id: str | None = Field(default=None, pattern=NAME_PATTERN)


class JobArgs(_Args):
    job_id: str = Field(pattern=NAME_PATTERN)


class ListJobsArgs(_Args):
    state: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ListTasksArgs(_Args):
    job_id: str = Field(pattern=NAME_PATTERN)
    attempt: int | None = Field(default=None, ge=0)


class StopArgs(_Args):
    job_id: str = Field(pattern=NAME_PATTERN)
    reason: str | None = Field(default=None, max_length=1000)


class GrantAddArgs(_Args):
    table: str = Field(min_length=1, max_length=256)
    grantee: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    component_types: list[str] = Field(min_length=1)


class GrantListArgs(_Args):
    table: str | None = None
    grantee: str | None = None


def new_job_id(now: datetime) -> str:
    """A fresh job id: UTC time (sorts by submission) and 32 random bits."""
    return f"{now:%Y%m%d%H%M%S}-{secrets.token_hex(4)}"


def _job(session: Session, ctx: SchedulerContext, job: Job) -> dict[str, Any]:
    return store.job_view(session, job, party_id=ctx.party_id)


def _submit(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = SubmitArgs.model_validate(raw)
    job_id = args.job_id or new_job_id(ctx.clock())
    return _job(session, ctx, submit_job(session, ctx, job_id, args.pipeline_yaml))


def _status(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = JobArgs.model_validate(raw)
    job = store.get_job(session, args.job_id)
    if job is None:
        raise CommandError("not_found", f"no job {args.job_id}")
    return _job(session, ctx, job)


def _list_jobs(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = ListJobsArgs.model_validate(raw)
    query = sa.select(Job).order_by(Job.created_at.desc()).limit(args.limit)
    if args.state is not None:
        query = query.where(Job.state == args.state)
    jobs: list[JsonValue] = [_job(session, ctx, j) for j in session.scalars(query)]
    return {"data": jobs, "count": len(jobs)}


def _list_tasks(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = ListTasksArgs.model_validate(raw)
    if store.get_job(session, args.job_id) is None:
        raise CommandError("not_found", f"no job {args.job_id}")
    tasks: list[JsonValue] = [
        store.task_view(t) for t in store.tasks_of(session, args.job_id, attempt=args.attempt)
    ]
    return {"data": tasks, "count": len(tasks)}


def _stop(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = StopArgs.model_validate(raw)
    return _job(session, ctx, stop_job(session, ctx, args.job_id, args.reason))


def _rerun(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = JobArgs.model_validate(raw)
    return _job(session, ctx, rerun_job(session, ctx, args.job_id))


def _grant_add(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = GrantAddArgs.model_validate(raw)
    return add_grant(session, ctx, args.table, args.grantee, args.component_types)


def _grant_list(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = GrantListArgs.model_validate(raw)
    rows: list[JsonValue] = [
        store.grant_view(g) for g in store.grants(session, table=args.table, grantee=args.grantee)
    ]
    return {"data": rows, "count": len(rows)}


Op = Callable[[Session, SchedulerContext, dict[str, JsonValue]], JsonValue]

OPS: dict[str, Op] = {
    "submit": _submit,
    "status": _status,
    "list_jobs": _list_jobs,
    "list_tasks": _list_tasks,
    "stop": _stop,
    "rerun": _rerun,
    "grant_add": _grant_add,
    "grant_list": _grant_list,
}


def execute(
    sessions: sessionmaker[Session], ctx: SchedulerContext, request: SchedulerRequest
) -> SchedulerResponse:
    """Run one command in one transaction; every failure becomes a response, never a raise."""
    op = OPS[request.op]
    try:
        with sessions.begin() as session:
            result = op(session, ctx, dict(request.args))
    except CommandError as exc:
        outcome: SchedulerErrorKind = exc.kind
        response = SchedulerResponse(op=request.op, ok=False, error=exc.message, error_kind=outcome)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
        )
        response = SchedulerResponse(
            op=request.op, ok=False, error=f"bad arguments: {problems}", error_kind="invalid"
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


def _envelope_bytes(payload: SchedulerRequest | SchedulerResponse, party_id: str, op: str) -> bytes:
    me = PartyRef(party_id=party_id, role="local")
    envelope = new_envelope(
        payload,
        job_id="",
        component=RPC_COMPONENT,
        task_id="",
        attempt=0,
        source=me,
        destination=me,
        tag=f"rpc.{op}",
        iteration=-1,
        # Requests are not deduplicated (each is answered once, to its own reply address);
        # a random seq only keeps their message ids apart in logs and traces.
        seq=secrets.randbits(62),
        created_at=datetime.now(UTC),
    )
    return encode_envelope(envelope)


class RpcServer:
    """Answers scheduler.request envelopes on `topic` (one thread, in arrival order)."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        sessions: sessionmaker[Session],
        ctx: SchedulerContext,
    ) -> None:
        self._bus = bus
        self._topic = topic
        self._sessions = sessions
        self._ctx = ctx
        self._subscription: Subscription | None = None

    def start(self) -> None:
        self._bus.declare(self._topic)
        # One delivery only: a request is answered once; a crash mid-request leaves the
        # requester to time out and retry (commands are idempotent by job id).
        self._subscription = self._bus.subscribe(
            self._topic, self._handle, prefetch=1, max_deliveries=1
        )
        log.info("rpc_started", topic=self._topic)

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    def _handle(self, delivery: Delivery) -> None:
        if delivery.reply_to is None:
            log.warning("rpc_without_reply_to", message_id=delivery.message_id)
            return
        try:
            envelope = decode_envelope(delivery.body)
            request = decode_payload(envelope, SchedulerRequest)
        except MalformedMessage as exc:
            log.warning("rpc_malformed", reason=exc.reason)
            return  # nothing to answer to; the requester times out
        if envelope.source.party_id != self._ctx.party_id:
            response = SchedulerResponse(
                op=request.op,
                ok=False,
                error=f"commands come from this party ({self._ctx.party_id}) only",
                error_kind="invalid",
            )
        else:
            response = execute(self._sessions, self._ctx, request)
        self._bus.reply(delivery, _envelope_bytes(response, self._ctx.party_id, request.op))


class SchedulerCommandFailed(Exception):
    """The scheduler refused a command; `kind` is its error_kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class SchedulerClient:
    """Sends commands to the scheduler of `party_id` over `bus` and waits for the answer."""

    def __init__(
        self,
        bus: Bus,
        party_id: str,
        *,
        topic: str = "svc.scheduler.rpc",
        timeout: float = 10.0,
    ) -> None:
        self._bus = bus
        self._party_id = party_id
        self._topic = topic
        self._timeout = timeout

    def call(self, op: SchedulerOp, **args: JsonValue) -> JsonValue:
        """The op's result; SchedulerCommandFailed when refused, RequestTimeout on silence."""
        body = _envelope_bytes(SchedulerRequest(op=op, args=args), self._party_id, op)
        reply = self._bus.request(self._topic, body, timeout=self._timeout)
        response = decode_payload(decode_envelope(reply.body), SchedulerResponse)
        if not response.ok:
            raise SchedulerCommandFailed(response.error_kind or "internal", response.error or "")
        return response.result

    def _dict(self, op: SchedulerOp, **args: JsonValue) -> dict[str, Any]:
        result = self.call(op, **args)
        assert isinstance(result, dict)
        return result

    def submit(self, pipeline_yaml: str, job_id: str | None = None) -> dict[str, Any]:
        if job_id is None:
            return self._dict("submit", pipeline_yaml=pipeline_yaml)
        return self._dict("submit", pipeline_yaml=pipeline_yaml, job_id=job_id)

    def status(self, job_id: str) -> dict[str, Any]:
        return self._dict("status", job_id=job_id)

    def list_jobs(self, state: str | None = None) -> list[dict[str, Any]]:
        result = self._dict("list_jobs") if state is None else self._dict("list_jobs", state=state)
        return list(result["data"])

    def list_tasks(self, job_id: str, attempt: int | None = None) -> list[dict[str, Any]]:
        if attempt is None:
            result = self._dict("list_tasks", job_id=job_id)
        else:
            result = self._dict("list_tasks", job_id=job_id, attempt=attempt)
        return list(result["data"])

    def stop(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        if reason is None:
            return self._dict("stop", job_id=job_id)
        return self._dict("stop", job_id=job_id, reason=reason)

    def rerun(self, job_id: str) -> dict[str, Any]:
        return self._dict("rerun", job_id=job_id)

    def grant_add(self, table: str, grantee: str, component_types: list[str]) -> dict[str, Any]:
        types: list[JsonValue] = list(component_types)
        return self._dict("grant_add", table=table, grantee=grantee, component_types=types)

    def grant_list(self, table: str | None = None) -> list[dict[str, Any]]:
        result = (
            self._dict("grant_list") if table is None else self._dict("grant_list", table=table)
        )
        return list(result["data"])
