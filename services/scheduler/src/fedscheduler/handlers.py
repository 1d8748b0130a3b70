"""The scheduler's logic: message handlers keyed by type, and the commands users give.

Handlers are plain functions `(envelope, payload, tx, *, ctx)`; their effect goes through
`tx.session`, so it commits with the message's done marker (fedbus inbox), and the messages
they cause are published inside the handler, before the commit, with deterministic ids: a crash
before the commit re-runs the handler, which re-sends the same ids, and receivers drop copies.
Commands (`submit_job`, `stop_job`, `rerun_job`, `add_grant`) and the timer's checks
(`check_job`) follow the same rule inside the transaction their caller opens.

The flow (docs/scheduler.md has the long form):

    user ──job.submit──▶ initiator ──job.propose──▶ each other party
                                   ◀─job.accept / job.refuse─
    all accepted: initiator ──job.status(running) "start"──▶ parties; every party emits
    task.run to its own worker for the components whose inputs succeeded there.
    worker ──task.status──▶ own scheduler ──job.status(component)──▶ initiator
    initiator: any task failed -> job failed, job.stop(failed) to all; all succeeded at all
    parties -> job success, job.status(success) to all.

Only the initiator's scheduler ends a job (fails it, cancels it, or declares it a success);
the other parties follow its job.stop / job.status. The one exception: a participant that has
heard nothing of a job from its initiator for party_timeout_s fails its own side (the timer's
`check_job`), since the initiator heartbeats to every party while a job is open.

Every remote message is checked against the job's parties: only the initiator may start, stop
or rerun a job, and a party may only report for itself (the gateway has already verified who
signed it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

import sqlalchemy as sa
import structlog
from fedbus import Reject
from fedbus.inbox import InboxTransaction
from fedbus.runtime import EnvelopeHandler, EnvelopePublisher
from fedschemas import Envelope, PartyRef, Payload, Role, new_envelope
from fedschemas.payloads import (
    JobAccept,
    JobPropose,
    JobRefuse,
    JobRerun,
    JobStatus,
    JobStop,
    JobSubmit,
    SchedulerErrorKind,
    TaskCancel,
    TaskRun,
    TaskStatus,
)
from sqlalchemy.orm import Session

from fedscheduler import store
from fedscheduler.metrics import SchedulerMetrics
from fedscheduler.models import (
    CANCELED,
    FAILED,
    RUNNING,
    SUCCESS,
    TERMINAL,
    WAITING,
    Job,
    JobParty,
    Task,
)
from fedscheduler.pipeline import Pipeline, PipelineError

log = structlog.get_logger("fedscheduler")

SCHEDULER_COMPONENT = "scheduler"
"""The `component` of job-level messages (they belong to no component)."""

# Tags of the messages the scheduler sends; with (job, component, attempt, seq, source,
# destination) they make the deterministic message ids.
TAG_PROPOSE = "job.propose"
TAG_ANSWER = "job.answer"
TAG_START = "job.start"
TAG_END = "job.end"
TAG_STOP = "job.stop"
TAG_RERUN = "job.rerun"
TAG_STATUS = "job.status"
TAG_HEARTBEAT = "job.heartbeat"
TAG_TASK_RUN = "task.run"
TAG_TASK_CANCEL = "task.cancel"

_ROLES: tuple[str, ...] = get_args(Role)
_RANK = {WAITING: 0, RUNNING: 1, SUCCESS: 2, FAILED: 2, CANCELED: 2}


class CommandError(Exception):
    """A command that cannot be carried out; `kind` maps to the REST status (400/404/409)."""

    def __init__(self, kind: SchedulerErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class SchedulerContext:
    """What handlers need besides the message: identity, publisher, topics, timing."""

    party_id: str
    publisher: EnvelopePublisher
    worker_topic: str = "svc.worker"
    out_topic_prefix: str = "out."
    party_timeout_s: float = 120.0
    heartbeat_every_s: float = 20.0
    task_timeout_s: float = 0.0
    """Default limit of a task's run time at the initiator; 0: none (settings.task_timeout_s)."""
    self_grants_implied: bool = True
    clock: Callable[[], datetime] = store.utcnow
    metrics: SchedulerMetrics = field(default_factory=SchedulerMetrics)
    started_at: datetime = field(default_factory=store.utcnow)
    """When this scheduler started: silence is counted from here at the earliest, so a
    restarted initiator does not fail jobs whose parties kept talking while it was down."""


# --- sending --------------------------------------------------------------------------------


def _role(value: str) -> Role:
    for role in _ROLES:
        if role == value:
            return role  # type: ignore[return-value]  # narrowed by the loop over Role's values
    return "local"


def _party_ref(session: Session, job_id: str, party_id: str) -> PartyRef:
    row = store.job_party(session, job_id, party_id)
    return PartyRef(party_id=party_id, role=_role(row.roles.split(",")[0] if row else "local"))


def _task_id(job_id: str, component: str, attempt: int) -> str:
    return f"{job_id}:{component}:{attempt}"


def _send_remote(
    session: Session,
    ctx: SchedulerContext,
    job_id: str,
    party_id: str,
    payload: Payload,
    *,
    tag: str,
    attempt: int,
    component: str = SCHEDULER_COMPONENT,
    seq: int = 0,
) -> None:
    """To another party's scheduler, through `out.<party>` and the gateways."""
    envelope = new_envelope(
        payload,
        job_id=job_id,
        component=component,
        task_id=_task_id(job_id, component, attempt),
        attempt=attempt,
        source=_party_ref(session, job_id, ctx.party_id),
        destination=_party_ref(session, job_id, party_id),
        tag=tag,
        iteration=-1,
        seq=seq,
        created_at=ctx.clock(),
    )
    ctx.publisher.send(ctx.out_topic_prefix + party_id, envelope)


def _send_worker(
    session: Session,
    ctx: SchedulerContext,
    job_id: str,
    component: str,
    attempt: int,
    payload: Payload,
    *,
    tag: str,
) -> None:
    """To this party's own workers (svc.worker)."""
    me = _party_ref(session, job_id, ctx.party_id)
    envelope = new_envelope(
        payload,
        job_id=job_id,
        component=component,
        task_id=_task_id(job_id, component, attempt),
        attempt=attempt,
        source=me,
        destination=me,
        tag=tag,
        iteration=-1,
        seq=0,
        created_at=ctx.clock(),
    )
    ctx.publisher.send(ctx.worker_topic, envelope)


def _others(session: Session, ctx: SchedulerContext, job_id: str) -> list[JobParty]:
    return [p for p in store.job_parties(session, job_id) if p.party_id != ctx.party_id]


# --- grants ---------------------------------------------------------------------------------


def grant_problem(
    session: Session, ctx: SchedulerContext, pipeline: Pipeline, initiator: str
) -> str | None:
    """Why this party may not run its part of `pipeline` for `initiator`; None when it may.

    Every table this party's readers would read must be granted to the initiator for every
    component type its data flows into (or for "*"). Only grants are read here, never data.
    """
    if initiator == ctx.party_id and ctx.self_grants_implied:
        return None
    for use in pipeline.tables_read_by(ctx.party_id):
        allowed = store.granted_types(session, use.table, initiator)
        if not allowed:
            return (
                f"table {use.table} (read by {use.component}) is not granted to party {initiator}"
            )
        if store.ANY_COMPONENT in allowed:
            continue
        missing = sorted(set(use.downstream_types) - allowed)
        if missing:
            return (
                f"the grant of table {use.table} to party {initiator} does not cover "
                f"component types {', '.join(missing)} (granted: {', '.join(sorted(allowed))})"
            )
    return None


def add_grant(
    session: Session, ctx: SchedulerContext, table: str, grantee: str, component_types: list[str]
) -> dict[str, Any]:
    if not table or not grantee or not component_types:
        raise CommandError("invalid", "a grant needs a table, a grantee and component types")
    grant = store.add_grant(session, table, grantee, component_types, ctx.clock())
    log.info("grant_added", table=table, grantee=grantee, component_types=component_types)
    return store.grant_view(grant)


# --- job life cycle -------------------------------------------------------------------------


def _parse(job: Job) -> Pipeline:
    return _parse_text(job.pipeline_yaml)


@functools.lru_cache(maxsize=64)
def _parse_text(text: str) -> Pipeline:
    # Every task report of a running job needs the model; parsing and validating the YAML
    # each time costs more than the rest of the handler. Pipelines are not changed after
    # parsing, so one parse per text is shared.
    return Pipeline.from_yaml(text)


def submit_job(session: Session, ctx: SchedulerContext, job_id: str, pipeline_yaml: str) -> Job:
    """Store a new job initiated here, check own grants, propose it to the other parties.

    Submitting the same job id with the same pipeline again returns the existing job (a
    client retrying after a lost reply); with another pipeline it is a conflict.
    """
    existing = store.get_job(session, job_id)
    if existing is not None:
        if existing.pipeline_yaml == pipeline_yaml:
            return existing
        raise CommandError("conflict", f"job {job_id} exists with another pipeline")
    try:
        pipeline = Pipeline.from_yaml(pipeline_yaml)
    except PipelineError as exc:
        raise CommandError("invalid", f"pipeline refused: {exc}") from exc
    unsupported = _one_task_per_party(pipeline)
    if unsupported is not None:
        raise CommandError("invalid", f"pipeline refused: {unsupported}")
    if pipeline.initiator != ctx.party_id:
        raise CommandError(
            "invalid",
            f"this is party {ctx.party_id}, the pipeline's guest is party {pipeline.initiator}: "
            "submit the job at the guest",
        )
    now = ctx.clock()
    job = Job(
        job_id=job_id,
        initiator=ctx.party_id,
        pipeline_yaml=pipeline_yaml,
        state=WAITING,
        attempt=0,
        created_at=now,
        updated_at=now,
        heartbeat_seq=0,
    )
    session.add(job)
    for pid in pipeline.party_ids():
        session.add(
            JobParty(
                job_id=job_id,
                party_id=pid,
                roles=",".join(pipeline.roles_of(pid)),
                state=RUNNING if pid == ctx.party_id else WAITING,
                last_seen=now if pid == ctx.party_id else None,
            )
        )
    session.flush()
    ctx.metrics.jobs_submitted.inc()
    log.info("job_submitted", job_id=job_id, parties=pipeline.party_ids())
    problem = grant_problem(session, ctx, pipeline, ctx.party_id)
    if problem is not None:
        me = store.job_party(session, job_id, ctx.party_id)
        assert me is not None
        me.state, me.reason = FAILED, problem
        # Nobody else has heard of the job yet: no proposals, so no job.stop either.
        reason = f"party {ctx.party_id} refused the job: {problem}"
        _end_job(session, ctx, job, FAILED, reason, notify=False)
        return job
    others = _others(session, ctx, job_id)
    for party in others:
        _send_remote(
            session,
            ctx,
            job_id,
            party.party_id,
            JobPropose(job_id=job_id, initiator=ctx.party_id, pipeline_yaml=pipeline_yaml),
            tag=TAG_PROPOSE,
            attempt=0,
        )
    if not others:
        _start_job(session, ctx, job, pipeline)
    return job


def _start_job(session: Session, ctx: SchedulerContext, job: Job, pipeline: Pipeline) -> None:
    """Initiator, everyone accepted: tell the parties to start, start here."""
    now = ctx.clock()
    job.state, job.updated_at = RUNNING, now
    parties = store.job_parties(session, job.job_id)
    for party in parties:
        party.last_seen = now
        _add_tasks(session, job, pipeline, _all_components(pipeline), party, now)
    session.flush()
    for party in parties:
        if party.party_id != ctx.party_id:
            _send_remote(
                session,
                ctx,
                job.job_id,
                party.party_id,
                JobStatus(
                    job_id=job.job_id,
                    party_id=ctx.party_id,
                    attempt=job.attempt,
                    state=RUNNING,
                    at=now,
                ),
                tag=TAG_START,
                attempt=job.attempt,
            )
    log.info("job_started", job_id=job.job_id, attempt=job.attempt)
    _dispatch_ready(session, ctx, job, pipeline)


def _add_tasks(
    session: Session,
    job: Job,
    pipeline: Pipeline,
    components: list[str],
    party: JobParty,
    now: datetime,
) -> None:
    """Waiting rows of the current attempt for those of `components` that run at `party`
    (a component runs only where its type's roles are played: evaluation at the guest)."""
    # One query for the rows that exist (a redelivered start or rerun): a lookup per component
    # cost a SELECT and an autoflushed INSERT each, 2 round trips per task at every job start.
    existing = {
        task.component
        for task in store.tasks_of(
            session, job.job_id, attempt=job.attempt, party_id=party.party_id
        )
    }
    for name in components:
        spec = pipeline.component(name)
        if not spec.roles_at(party.party_id):
            continue
        if name not in existing:
            existing.add(name)
            session.add(
                Task(
                    job_id=job.job_id,
                    component=name,
                    attempt=job.attempt,
                    party_id=party.party_id,
                    component_type=spec.type,
                    state=WAITING,
                    updated_at=now,
                    status_seq=0,
                )
            )


def _all_components(pipeline: Pipeline) -> list[str]:
    return [spec.name for spec in pipeline.components_in_order()]


def _one_task_per_party(pipeline: Pipeline) -> str | None:
    """Why the scheduler cannot run `pipeline`, or None: a task is one component at one party
    (task.status names no role), so a party may play only one role in each component."""
    for spec in pipeline.components_in_order():
        for party in pipeline.party_ids():
            roles = spec.roles_at(party)
            if len(roles) > 1:
                return (
                    f"party {party} would run component {spec.name} in several roles "
                    f"({', '.join(roles)}); give each role its own party"
                )
    return None


def _dispatch_ready(session: Session, ctx: SchedulerContext, job: Job, pipeline: Pipeline) -> None:
    """Send task.run for each waiting component of this party whose inputs succeeded here.

    A dispatched task is marked running at once, so it is never sent twice in an attempt; a
    re-run of this transaction after a crash sends the same message id, which the worker drops.
    """
    effective = store.effective_tasks(session, job.job_id)
    now = ctx.clock()
    parties = pipeline.parties.by_role()
    for spec in pipeline.components_in_order():
        task = store.get_task(session, job.job_id, spec.name, job.attempt, ctx.party_id)
        if task is None or task.state != WAITING:
            continue
        ready = all(
            (up, ctx.party_id) in effective and effective[(up, ctx.party_id)].state == SUCCESS
            for up in spec.upstream
        )
        if not ready:
            continue
        role = spec.roles_at(ctx.party_id)[0]
        _send_worker(
            session,
            ctx,
            job.job_id,
            spec.name,
            job.attempt,
            TaskRun(
                job_id=job.job_id,
                component=spec.name,
                component_type=spec.type,
                attempt=job.attempt,
                role=role,
                party_id=ctx.party_id,
                parties=parties,
                params=spec.params_for(role, ctx.party_id),
                inputs=spec.inputs_as_strings(),
                pipeline_yaml=job.pipeline_yaml,
            ),
            tag=TAG_TASK_RUN,
        )
        task.state, task.started_at, task.updated_at = RUNNING, now, now
        ctx.metrics.tasks_dispatched.inc()
        log.info("task_dispatched", job_id=job.job_id, component=spec.name, attempt=job.attempt)


def _all_succeeded(session: Session, job: Job) -> bool:
    """store.all_succeeded, answered with one EXISTS while a task of the current attempt is
    still open (every success of a running job asked, loading all its task rows each time).
    Rows of the current attempt are the effective ones for their components: attempts only
    go up."""
    still_open = session.scalar(
        sa.select(
            sa.exists().where(
                Task.job_id == job.job_id, Task.attempt == job.attempt, Task.state != SUCCESS
            )
        )
    )
    return not still_open and store.all_succeeded(session, job.job_id)


def _count_end(ctx: SchedulerContext, job: Job, state: str) -> None:
    """Count a job reaching `state` here, and how long it took since this party created it
    (a rerun counts again, from the original creation: what the user waited for)."""
    ctx.metrics.jobs_ended.labels(state).inc()
    ended = job.ended_at or ctx.clock()
    ctx.metrics.job_duration.labels(state).observe(
        max((ended - job.created_at).total_seconds(), 0.0)
    )


def _end_job(
    session: Session,
    ctx: SchedulerContext,
    job: Job,
    state: str,
    reason: str,
    *,
    notify: bool = True,
) -> None:
    """The job ends here as `state`: open tasks are canceled (this party's workers are told);
    at the initiator (with `notify`), every other party gets job.stop."""
    now = ctx.clock()
    job.state, job.reason, job.ended_at, job.updated_at = state, reason, now, now
    for task in store.tasks_of(session, job.job_id, attempt=job.attempt):
        if task.state not in (WAITING, RUNNING):
            continue
        if task.party_id == ctx.party_id and task.state == RUNNING:
            _send_worker(
                session,
                ctx,
                job.job_id,
                task.component,
                task.attempt,
                TaskCancel(
                    job_id=job.job_id,
                    component=task.component,
                    attempt=task.attempt,
                    reason=reason[:4096],
                ),
                tag=TAG_TASK_CANCEL,
            )
        task.state, task.ended_at, task.updated_at = CANCELED, now, now
    if notify and job.initiator == ctx.party_id and state in (FAILED, CANCELED):
        for party in _others(session, ctx, job.job_id):
            _send_remote(
                session,
                ctx,
                job.job_id,
                party.party_id,
                JobStop(
                    job_id=job.job_id,
                    attempt=job.attempt,
                    state=FAILED if state == FAILED else CANCELED,
                    reason=reason[:4096],
                ),
                tag=TAG_STOP,
                attempt=job.attempt,
            )
    _count_end(ctx, job, state)
    log.info("job_ended", job_id=job.job_id, state=state, attempt=job.attempt, reason=reason)


def _finish_success(session: Session, ctx: SchedulerContext, job: Job) -> None:
    now = ctx.clock()
    job.state, job.reason, job.ended_at, job.updated_at = SUCCESS, None, now, now
    for party in _others(session, ctx, job.job_id):
        _send_remote(
            session,
            ctx,
            job.job_id,
            party.party_id,
            JobStatus(
                job_id=job.job_id,
                party_id=ctx.party_id,
                attempt=job.attempt,
                state=SUCCESS,
                at=now,
            ),
            tag=TAG_END,
            attempt=job.attempt,
        )
    _count_end(ctx, job, SUCCESS)
    log.info("job_ended", job_id=job.job_id, state=SUCCESS, attempt=job.attempt)


def _apply_task_update(
    session: Session,
    ctx: SchedulerContext,
    job: Job,
    party_id: str,
    component: str,
    attempt: int,
    state: str,
    reason: str | None,
    progress: float | None,
    outputs: dict[str, str] | None,
) -> Task | None:
    """Record a task's new state; None when nothing changed (a stale or repeated report).

    States only move forward (waiting -> running -> a final state; the first final state
    wins), so reports that arrive out of order cannot undo one another.
    """
    task = store.get_task(session, job.job_id, component, attempt, party_id)
    if task is None:
        log.warning(
            "task_status_for_unknown_task",
            job_id=job.job_id,
            component=component,
            attempt=attempt,
            party_id=party_id,
        )
        return None
    now = ctx.clock()
    if task.state == state == RUNNING:
        if progress is None or progress == task.progress:
            return None
        task.progress, task.updated_at = progress, now
        return task
    if _RANK[state] <= _RANK[task.state]:
        return None
    task.state, task.updated_at = state, now
    task.reason = reason
    if progress is not None:
        task.progress = progress
    if outputs is not None:
        task.outputs = dict(outputs)
    if task.started_at is None:
        task.started_at = now
    if state in TERMINAL:
        task.ended_at = now
        if state == SUCCESS:
            task.progress = 1.0
    return task


def _on_task_update(
    session: Session,
    ctx: SchedulerContext,
    job: Job,
    party_id: str,
    component: str,
    attempt: int,
    state: str,
    reason: str | None,
    progress: float | None,
    outputs: dict[str, str] | None,
) -> None:
    """Initiator: a task of any party changed; fail the job, go on, or declare success."""
    task = _apply_task_update(
        session, ctx, job, party_id, component, attempt, state, reason, progress, outputs
    )
    if task is None or job.state != RUNNING or attempt != job.attempt:
        return
    if state in (FAILED, CANCELED):
        why = reason or "no reason given"
        _end_job(
            session,
            ctx,
            job,
            FAILED,
            f"party {party_id}: component {component} {state}: {why}",
        )
        return
    if state == SUCCESS:
        session.flush()
        if party_id == ctx.party_id:
            _dispatch_ready(session, ctx, job, _parse(job))
        if _all_succeeded(session, job):
            _finish_success(session, ctx, job)


def stop_job(session: Session, ctx: SchedulerContext, job_id: str, reason: str | None) -> Job:
    job = store.lock_job(session, job_id)
    if job is None:
        raise CommandError("not_found", f"no job {job_id}")
    if job.initiator != ctx.party_id:
        raise CommandError(
            "conflict", f"job {job_id} was initiated by party {job.initiator}: stop it there"
        )
    if job.state in TERMINAL:
        raise CommandError("conflict", f"job {job_id} has already ended ({job.state})")
    _end_job(session, ctx, job, CANCELED, reason or "stopped by a user")
    return job


def rerun_job(session: Session, ctx: SchedulerContext, job_id: str) -> Job:
    """A new attempt from the components that did not succeed (and everything downstream of
    them); earlier successes are kept. Only the initiator reruns; every party follows."""
    job = store.lock_job(session, job_id)
    if job is None:
        raise CommandError("not_found", f"no job {job_id}")
    if job.initiator != ctx.party_id:
        raise CommandError(
            "conflict", f"job {job_id} was initiated by party {job.initiator}: rerun it there"
        )
    if job.state not in (FAILED, CANCELED):
        raise CommandError(
            "conflict", f"job {job_id} is {job.state}: only a failed or canceled job is rerun"
        )
    parties = store.job_parties(session, job_id)
    unaccepted = [p.party_id for p in parties if p.state != RUNNING]
    if unaccepted:
        raise CommandError(
            "conflict",
            f"party {', '.join(unaccepted)} did not accept job {job_id}: fix the cause (e.g. a "
            "grant) and submit a new job",
        )
    pipeline = _parse(job)
    effective = store.effective_tasks(session, job_id)
    redo = {c for (c, _p), t in effective.items() if t.state != SUCCESS}
    for spec in pipeline.components_in_order():  # everything downstream of a rerun component
        if set(spec.upstream) & redo:
            redo.add(spec.name)
    if not redo:
        raise CommandError("conflict", f"every component of job {job_id} already succeeded")
    ordered = [c.name for c in pipeline.components_in_order() if c.name in redo]
    now = ctx.clock()
    job.attempt += 1
    job.state, job.reason, job.ended_at, job.updated_at = RUNNING, None, None, now
    for party in parties:
        party.last_seen, party.reason = now, None
        _add_tasks(session, job, pipeline, ordered, party, now)
    session.flush()
    for party in _others(session, ctx, job_id):
        _send_remote(
            session,
            ctx,
            job_id,
            party.party_id,
            JobRerun(job_id=job_id, attempt=job.attempt, components=ordered),
            tag=TAG_RERUN,
            attempt=job.attempt,
        )
    log.info("job_rerun", job_id=job_id, attempt=job.attempt, components=ordered)
    _dispatch_ready(session, ctx, job, pipeline)
    return job


# --- timer: silence and heartbeats ----------------------------------------------------------


def check_job(session: Session, ctx: SchedulerContext, job_id: str) -> None:
    """One timer pass over one open job: its timeouts, then a heartbeat when one is due.

    At the initiator: fail the job when a party is silent too long, leaves the proposal
    unanswered too long, or a task runs past its timeout; heartbeats go to every party that
    accepted. At a participant: fail this party's side when the initiator is silent too long;
    heartbeats go to the initiator while the job runs. Each side's heartbeats are what keep the
    other side from timing it out, so a long but healthy job never ends here.
    """
    job = store.lock_job(session, job_id)
    if job is None or job.state in TERMINAL:
        return
    now = ctx.clock()
    if job.initiator == ctx.party_id:
        if _fail_silent_party(session, ctx, job, now) or _fail_overdue_task(session, ctx, job, now):
            return
        recipients = [p.party_id for p in _others(session, ctx, job_id) if p.state == RUNNING]
    else:
        if _fail_silent_initiator(session, ctx, job, now):
            return
        # A participant that has only accepted stays quiet: the initiator times out the
        # proposal by the answer, and the first heartbeat follows the start.
        recipients = [job.initiator] if job.state == RUNNING else []
    _send_heartbeats(session, ctx, job, recipients, now)


def _fail_silent_party(session: Session, ctx: SchedulerContext, job: Job, now: datetime) -> bool:
    """Initiator: end the job when a party left the proposal unanswered, or stopped talking
    while the job runs, for longer than party_timeout_s; True when it did."""
    timeout = ctx.party_timeout_s
    for party in _others(session, ctx, job.job_id):
        if job.state == WAITING and party.state == WAITING:
            since = max(job.created_at, ctx.started_at)
            if (now - since).total_seconds() > timeout:
                party.state = FAILED
                party.reason = f"no answer to the proposal within {timeout:g} s"
                ctx.metrics.party_timeouts.labels("proposal").inc()
                _end_job(
                    session,
                    ctx,
                    job,
                    FAILED,
                    f"party {party.party_id} did not answer the job proposal within "
                    f"{timeout:g} s (party_timeout_s)",
                )
                return True
        elif job.state == RUNNING and party.state == RUNNING:
            since = max(party.last_seen or job.updated_at, ctx.started_at)
            silent = (now - since).total_seconds()
            if silent > timeout:
                party.reason = f"silent for {silent:.0f} s"
                ctx.metrics.party_timeouts.labels("running").inc()
                _end_job(
                    session,
                    ctx,
                    job,
                    FAILED,
                    f"party {party.party_id} sent nothing for {silent:.0f} s "
                    f"(party_timeout_s={timeout:g}): its services may be down or its "
                    "link cut",
                )
                return True
    return False


def _fail_overdue_task(session: Session, ctx: SchedulerContext, job: Job, now: datetime) -> bool:
    """Initiator: end the job when a task of the current attempt, at any party, has not
    finished within its component's `timeout_s` (else task_timeout_s); True when it did.

    The initiator keeps every party's task rows, but a participant reports a task only when
    it ends or its progress moves, so a remote task's clock starts when its inputs had all
    succeeded there (as reported here): a task whose worker never picked it up is overdue
    too. Time is counted from this scheduler's start at the earliest: the reports of tasks
    that ended while it was down may still be queued.
    """
    if job.state != RUNNING:
        return False
    pipeline = _parse(job)
    specs = pipeline.components_in_order()
    if not ctx.task_timeout_s and all(spec.timeout_s is None for spec in specs):
        return False  # no limit anywhere: spare the timer the task rows of every running job
    effective = store.effective_tasks(session, job.job_id)
    for task in store.tasks_of(session, job.job_id, attempt=job.attempt):
        if task.state not in (WAITING, RUNNING):
            continue
        spec = pipeline.component(task.component)
        limit = spec.timeout_s or ctx.task_timeout_s
        if not limit:
            continue
        since = _task_clock_start(task, spec.upstream, effective)
        if since is None:
            continue
        took = (now - max(since, ctx.started_at)).total_seconds()
        if took <= limit:
            continue
        setting = "timeout_s in the pipeline" if spec.timeout_s else "task_timeout_s"
        ctx.metrics.task_timeouts.inc()
        log.warning(
            "task_timed_out",
            job_id=job.job_id,
            component=task.component,
            party_id=task.party_id,
            limit_s=limit,
        )
        _end_job(
            session,
            ctx,
            job,
            FAILED,
            f"component {task.component} at party {task.party_id} did not finish within "
            f"{limit:g} s ({setting}): it may hang",
        )
        return True
    return False


def _task_clock_start(
    task: Task, upstream: list[str], effective: dict[tuple[str, str], Task]
) -> datetime | None:
    """When `task`'s time limit started to run: its start, or, for a task not known to have
    started, when it became ready; None while it waits for inputs."""
    if task.started_at is not None:
        return task.started_at
    ready_at = task.updated_at  # a waiting row's: when it was added (start or rerun)
    for name in upstream:
        up = effective.get((name, task.party_id))
        if up is None or up.state != SUCCESS:
            return None
        ready_at = max(ready_at, up.ended_at or up.updated_at)
    return ready_at


def _fail_silent_initiator(
    session: Session, ctx: SchedulerContext, job: Job, now: datetime
) -> bool:
    """Participant: end this party's side of the job when nothing of it has come from the
    initiator for party_timeout_s (the initiator heartbeats while the job is open); True
    when it did. Only the initiator could end the job otherwise, so a site that died for good
    would leave the job, and the tasks holding resources here, running forever."""
    timeout = ctx.party_timeout_s
    initiator = store.job_party(session, job.job_id, job.initiator)
    heard = initiator.last_seen if initiator is not None else None
    since = max(heard or job.created_at, ctx.started_at)
    silent = (now - since).total_seconds()
    if silent <= timeout:
        return False
    reason = (
        f"no word from initiator party {job.initiator} for {silent:.0f} s "
        f"(party_timeout_s={timeout:g}): its services may be down or its link cut"
    )
    if initiator is not None:
        initiator.reason = f"silent for {silent:.0f} s"
    ctx.metrics.party_timeouts.labels("initiator").inc()
    open_tasks = [
        t
        for t in store.tasks_of(session, job.job_id, attempt=job.attempt)
        if t.party_id == ctx.party_id and t.state in (WAITING, RUNNING)
    ]
    _end_job(session, ctx, job, FAILED, reason)
    # If the initiator is alive and only its messages are lost (or it comes back), these
    # reports make it fail the job with this reason at once, not after a timeout of its own.
    for task in open_tasks:
        task.reason = reason
        task.status_seq += 1
        _send_remote(
            session,
            ctx,
            job.job_id,
            job.initiator,
            JobStatus(
                job_id=job.job_id,
                party_id=ctx.party_id,
                attempt=task.attempt,
                state=FAILED,
                component=task.component,
                task_state=CANCELED,
                reason=reason[:4096],
                at=now,
            ),
            tag=TAG_STATUS,
            attempt=task.attempt,
            component=task.component,
            seq=task.status_seq,
        )
    return True


def _send_heartbeats(
    session: Session, ctx: SchedulerContext, job: Job, recipients: list[str], now: datetime
) -> None:
    """A job.status heartbeat to each of `recipients` when one is due; one counter numbers
    them per job (the destination tells the initiator's beats to different parties apart)."""
    if not recipients:
        return
    due = job.heartbeat_at is None or (
        (now - job.heartbeat_at).total_seconds() >= ctx.heartbeat_every_s
    )
    if not due:
        return
    job.heartbeat_seq += 1
    job.heartbeat_at = now
    for party_id in recipients:
        _send_remote(
            session,
            ctx,
            job.job_id,
            party_id,
            JobStatus(
                job_id=job.job_id,
                party_id=ctx.party_id,
                attempt=job.attempt,
                state=job.state,  # type: ignore[arg-type]  # always one of JobState's values
                at=now,
            ),
            tag=TAG_HEARTBEAT,
            attempt=job.attempt,
            seq=job.heartbeat_seq,
        )
        ctx.metrics.heartbeats_sent.inc()


# --- message handlers -----------------------------------------------------------------------


def _require_local(envelope: Envelope, ctx: SchedulerContext) -> None:
    if envelope.source.party_id != ctx.party_id:
        raise Reject(
            f"{envelope.type} must come from this party ({ctx.party_id}), "
            f"not from party {envelope.source.party_id}"
        )


def _expect(payload: Payload, model: type[Payload]) -> None:
    if not isinstance(payload, model):  # the consumer dispatches by type; belt and braces
        raise Reject(f"{model.__name__} handler got {type(payload).__name__}")


def _locked_job(session: Session, job_id: str) -> Job:
    job = store.lock_job(session, job_id)
    if job is None:
        raise Reject(f"no job {job_id} at this party")
    return job


def handle_job_submit(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """job.submit (from a local user): like the submit command; a refused pipeline is stored
    as a failed job, so the user finds the reason in its status."""
    _expect(payload, JobSubmit)
    assert isinstance(payload, JobSubmit)
    _require_local(envelope, ctx)
    session = tx.require_session()
    try:
        submit_job(session, ctx, payload.job_id, payload.pipeline_yaml)
    except CommandError as exc:
        log.warning("job_submit_refused", job_id=payload.job_id, reason=exc.message)
        if exc.kind == "invalid" and store.get_job(session, payload.job_id) is None:
            now = ctx.clock()
            session.add(
                Job(
                    job_id=payload.job_id,
                    initiator=ctx.party_id,
                    pipeline_yaml=payload.pipeline_yaml,
                    state=FAILED,
                    attempt=0,
                    created_at=now,
                    updated_at=now,
                    ended_at=now,
                    reason=exc.message,
                    heartbeat_seq=0,
                )
            )


def handle_job_propose(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """job.propose: check the pipeline and this party's grants; accept or refuse.

    A refusal reads nothing: only the grants table is consulted."""
    _expect(payload, JobPropose)
    assert isinstance(payload, JobPropose)
    if envelope.source.party_id != payload.initiator:
        raise Reject(
            f"job.propose names initiator {payload.initiator} but comes from party "
            f"{envelope.source.party_id}"
        )
    session = tx.require_session()
    if store.get_job(session, payload.job_id) is not None:
        log.info("job_propose_repeated", job_id=payload.job_id)
        return
    problem: str | None = None
    pipeline: Pipeline | None = None
    try:
        pipeline = Pipeline.from_yaml(payload.pipeline_yaml)
    except PipelineError as exc:
        problem = f"pipeline refused: {exc}"
    if pipeline is not None:
        if pipeline.initiator != payload.initiator:
            problem = (
                f"the pipeline's guest is party {pipeline.initiator}, not the proposing party "
                f"{payload.initiator}"
            )
        elif ctx.party_id not in pipeline.party_ids():
            problem = f"party {ctx.party_id} is not a party of the pipeline"
        elif (unsupported := _one_task_per_party(pipeline)) is not None:
            problem = f"pipeline refused: {unsupported}"
        else:
            problem = grant_problem(session, ctx, pipeline, payload.initiator)
    now = ctx.clock()
    proposed = Job(
        job_id=payload.job_id,
        initiator=payload.initiator,
        pipeline_yaml=payload.pipeline_yaml,
        state=FAILED if problem else WAITING,
        attempt=0,
        created_at=now,
        updated_at=now,
        ended_at=now if problem else None,
        reason=f"refused: {problem}" if problem else None,
        heartbeat_seq=0,
    )
    session.add(proposed)
    if pipeline is not None and problem is None:
        for party in pipeline.party_ids():
            session.add(
                JobParty(
                    job_id=payload.job_id,
                    party_id=party,
                    roles=",".join(pipeline.roles_of(party)),
                    state=RUNNING if party in (ctx.party_id, payload.initiator) else WAITING,
                    last_seen=now if party == payload.initiator else None,
                )
            )
    else:
        own_roles = ",".join(pipeline.roles_of(ctx.party_id)) if pipeline else ""
        session.add(
            JobParty(
                job_id=payload.job_id,
                party_id=payload.initiator,
                roles=",".join(pipeline.roles_of(payload.initiator)) if pipeline else "guest",
                state=RUNNING,
                last_seen=now,
            )
        )
        if ctx.party_id != payload.initiator:
            session.add(
                JobParty(
                    job_id=payload.job_id,
                    party_id=ctx.party_id,
                    roles=own_roles or "host",
                    state=FAILED,
                    reason=problem,
                )
            )
    session.flush()
    answer: Payload
    if problem is None:
        answer = JobAccept(job_id=payload.job_id, party_id=ctx.party_id)
        ctx.metrics.proposals.labels("accept").inc()
        log.info("job_accepted", job_id=payload.job_id, initiator=payload.initiator)
    else:
        answer = JobRefuse(job_id=payload.job_id, party_id=ctx.party_id, reason=problem[:4096])
        ctx.metrics.proposals.labels("refuse").inc()
        _count_end(ctx, proposed, FAILED)
        log.warning(
            "job_refused", job_id=payload.job_id, initiator=payload.initiator, reason=problem
        )
    _send_remote(session, ctx, payload.job_id, payload.initiator, answer, tag=TAG_ANSWER, attempt=0)


def _heard_from_initiator(session: Session, ctx: SchedulerContext, job: Job) -> None:
    """Participant: a message of `job` came from its initiator, so it is alive (any message
    counts, of any attempt: the silence timeout is about the site, not the attempt)."""
    initiator = store.job_party(session, job.job_id, job.initiator)
    if initiator is not None:
        initiator.last_seen = ctx.clock()


def _initiator_party(
    session: Session,
    ctx: SchedulerContext,
    envelope: Envelope,
    job_id: str,
    reporter: str,
    locked: Job | None = None,
) -> tuple[Job, JobParty]:
    """At the initiator: the job and the reporting party, checked; marks the party as heard.
    `locked`: the job, already locked in this transaction by the caller."""
    if reporter != envelope.source.party_id:
        raise Reject(f"party {envelope.source.party_id} may not report for party {reporter}")
    job = locked if locked is not None else _locked_job(session, job_id)
    if job.initiator != ctx.party_id:
        raise Reject(f"{envelope.type} for job {job_id}, which party {job.initiator} initiated")
    party = store.job_party(session, job_id, reporter)
    if party is None:
        raise Reject(f"party {reporter} is not a party of job {job_id}")
    party.last_seen = ctx.clock()
    return job, party


def handle_job_accept(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    _expect(payload, JobAccept)
    assert isinstance(payload, JobAccept)
    session = tx.require_session()
    job, party = _initiator_party(session, ctx, envelope, payload.job_id, payload.party_id)
    if job.state != WAITING or party.state != WAITING:
        return
    party.state = RUNNING
    session.flush()
    log.info("job_accepted_by", job_id=job.job_id, party_id=party.party_id)
    if all(p.state == RUNNING for p in store.job_parties(session, job.job_id)):
        _start_job(session, ctx, job, _parse(job))


def handle_job_refuse(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    _expect(payload, JobRefuse)
    assert isinstance(payload, JobRefuse)
    session = tx.require_session()
    job, party = _initiator_party(session, ctx, envelope, payload.job_id, payload.party_id)
    if party.state == WAITING:
        party.state, party.reason = FAILED, payload.reason
    if job.state == WAITING:
        _end_job(
            session,
            ctx,
            job,
            FAILED,
            f"party {party.party_id} refused the job: {payload.reason}",
        )


def handle_job_status(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """job.status: at the initiator, a party's report or heartbeat; at a participant, the
    initiator's start (running), end (success) or heartbeat (waiting or running) of the job."""
    _expect(payload, JobStatus)
    assert isinstance(payload, JobStatus)
    session = tx.require_session()
    job = _locked_job(session, payload.job_id)
    if job.initiator == ctx.party_id:
        job, _party = _initiator_party(
            session, ctx, envelope, payload.job_id, payload.party_id, locked=job
        )
        if payload.component is not None and payload.task_state is not None:
            _on_task_update(
                session,
                ctx,
                job,
                payload.party_id,
                payload.component,
                payload.attempt,
                payload.task_state,
                payload.reason,
                payload.progress,
                None,
            )
        return
    if envelope.source.party_id != job.initiator or payload.party_id != job.initiator:
        raise Reject(
            f"only the initiator ({job.initiator}) sends job.status to party {ctx.party_id}"
        )
    _heard_from_initiator(session, ctx, job)
    if payload.attempt != job.attempt:
        return
    if payload.state == RUNNING and job.state == WAITING:
        now = ctx.clock()
        job.state, job.updated_at, job.heartbeat_at = RUNNING, now, None
        pipeline = _parse(job)
        me = store.job_party(session, job.job_id, ctx.party_id)
        assert me is not None
        _add_tasks(session, job, pipeline, _all_components(pipeline), me, now)
        session.flush()
        log.info("job_started", job_id=job.job_id, attempt=job.attempt)
        _dispatch_ready(session, ctx, job, pipeline)
    elif payload.state == SUCCESS and job.state == RUNNING:
        now = ctx.clock()
        job.state, job.reason, job.ended_at, job.updated_at = SUCCESS, None, now, now
        _count_end(ctx, job, SUCCESS)
        log.info("job_ended", job_id=job.job_id, state=SUCCESS, attempt=job.attempt)


def handle_job_stop(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """job.stop (from the initiator): cancel this party's open tasks, end the job as told."""
    _expect(payload, JobStop)
    assert isinstance(payload, JobStop)
    session = tx.require_session()
    job = _locked_job(session, payload.job_id)
    if envelope.source.party_id != job.initiator or job.initiator == ctx.party_id:
        raise Reject(f"only the initiator ({job.initiator}) stops job {job.job_id}")
    _heard_from_initiator(session, ctx, job)
    if job.state in TERMINAL or payload.attempt < job.attempt:
        return
    _end_job(session, ctx, job, payload.state, payload.reason)


def handle_job_rerun(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """job.rerun (from the initiator): start attempt `attempt` with the listed components."""
    _expect(payload, JobRerun)
    assert isinstance(payload, JobRerun)
    session = tx.require_session()
    job = _locked_job(session, payload.job_id)
    if envelope.source.party_id != job.initiator or job.initiator == ctx.party_id:
        raise Reject(f"only the initiator ({job.initiator}) reruns job {job.job_id}")
    _heard_from_initiator(session, ctx, job)
    if payload.attempt <= job.attempt:
        return
    pipeline = _parse(job)
    known = set(_all_components(pipeline))
    unknown = sorted(set(payload.components) - known)
    if unknown:
        raise Reject(f"job.rerun names components not in the pipeline: {', '.join(unknown)}")
    me = store.job_party(session, job.job_id, ctx.party_id)
    if me is None:
        raise Reject(f"party {ctx.party_id} is not a party of job {job.job_id}")
    now = ctx.clock()
    job.attempt = payload.attempt
    job.state, job.reason, job.ended_at, job.updated_at = RUNNING, None, None, now
    job.heartbeat_at = None
    _add_tasks(session, job, pipeline, list(payload.components), me, now)
    session.flush()
    log.info("job_rerun", job_id=job.job_id, attempt=job.attempt, components=payload.components)
    _dispatch_ready(session, ctx, job, pipeline)


def handle_task_status(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """task.status (from this party's worker): record it; participants forward it to the
    initiator and start what became ready; the initiator decides the job's fate."""
    _expect(payload, TaskStatus)
    assert isinstance(payload, TaskStatus)
    _require_local(envelope, ctx)
    if payload.party_id != ctx.party_id:
        raise Reject(f"task.status for party {payload.party_id} at party {ctx.party_id}")
    session = tx.require_session()
    job = _locked_job(session, payload.job_id)
    args = (
        payload.component,
        payload.attempt,
        payload.state,
        payload.reason,
        payload.progress,
        payload.outputs,
    )
    if job.initiator == ctx.party_id:
        _on_task_update(session, ctx, job, ctx.party_id, *args)
        return
    task = _apply_task_update(session, ctx, job, ctx.party_id, *args)
    if task is None:
        return
    task.status_seq += 1
    # The next task.run goes out first: it is this party's critical path (its worker starts
    # now), the report to the initiator is not. Both are in this transaction either way.
    if payload.state == SUCCESS and job.state == RUNNING and payload.attempt == job.attempt:
        session.flush()
        _dispatch_ready(session, ctx, job, _parse(job))
    _send_remote(
        session,
        ctx,
        job.job_id,
        job.initiator,
        JobStatus(
            job_id=job.job_id,
            party_id=ctx.party_id,
            attempt=payload.attempt,
            state=job.state,  # type: ignore[arg-type]  # always one of JobState's values
            component=payload.component,
            task_state=payload.state,
            reason=payload.reason,
            progress=task.progress,
            at=ctx.clock(),
        ),
        tag=TAG_STATUS,
        attempt=payload.attempt,
        component=payload.component,
        seq=task.status_seq,
    )


HANDLERS: dict[str, Callable[..., None]] = {
    "job.submit": handle_job_submit,
    "job.propose": handle_job_propose,
    "job.accept": handle_job_accept,
    "job.refuse": handle_job_refuse,
    "job.status": handle_job_status,
    "job.stop": handle_job_stop,
    "job.rerun": handle_job_rerun,
    "task.status": handle_task_status,
}
"""Message type -> handler. Adding a message type the scheduler handles is one line here."""


def bind_handlers(ctx: SchedulerContext) -> dict[str, EnvelopeHandler]:
    """The handlers with their context bound, as the EnvelopeConsumer wants them."""
    return {name: functools.partial(handler, ctx=ctx) for name, handler in HANDLERS.items()}
