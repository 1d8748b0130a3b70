"""The scheduler's service layer: load a job, apply the domain, save it, publish the effects.

Handlers are plain functions `(envelope, payload, tx, *, ctx)` registered by payload class
(`HANDLERS`); each turns its message into a domain event (domain.py), runs it against the
job from the repository (sql_job_repository.py, inside the inbox's transaction `tx`), saves
the job and publishes the effects the domain returned, all before the commit: the job's
change commits with the message's done marker, and the messages carry deterministic ids, so
a crash before the commit re-runs the handler, which re-sends the same ids, and receivers
drop the copies. Commands (`submit_job`, `stop_job`, `rerun_job`, `add_grant`) and the
timer's pass (`check_job`) follow the same rule inside the transaction their caller opens.

Here, not in the domain: envelopes (who is source and destination, task ids, the wire form a
peer of the previous version reads), grants (a database read), metrics and logs, and the
mapping of refusals to dead letters (`Reject`) and command errors.

The old job.status is still read: `bind_handlers` maps it to its successor type with
fedschemas' `SUPERSEDED` function and hands it to that type's handler. With
`legacy_job_status` (the default in this version) the scheduler also still sends job.status
instead of job.start / job.end / job.heartbeat / job.task_report, so a party of the previous
version reads everything it sends; the message ids are the same either way (the tag, not
the type, is part of the id).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fedbus import Reject, Unroutable
from fedbus.inbox import InboxTransaction
from fedbus.runtime import EnvelopeHandler, EnvelopePublisher
from fedflow.policy import (
    SecurityPolicy,
    grant_params_problem,
    parse_grant_params,
    pipeline_problem,
)
from fedschemas import Envelope, PartyRef, Payload, Role, canonical_bytes, new_envelope, topics
from fedschemas.payloads import (
    AuditStop,
    GrantUsed,
    JobAccept,
    JobEnd,
    JobEnded,
    JobHeartbeat,
    JobPropose,
    JobRefuse,
    JobRerun,
    JobStart,
    JobStop,
    JobSubmit,
    JobTaskReport,
    TableProfile,
    TaskMetrics,
    TaskRun,
    TaskStatus,
    as_job_status,
    task_scope_id,
)
from fedschemas.registry import SUPERSEDED, payload_type
from sqlalchemy.orm import Session

from fedscheduler import domain, models, store
from fedscheduler.domain import (
    RUNNING,
    SCHEDULER_COMPONENT,
    SUCCESS,
    CommandError,
    Counted,
    Effect,
    Event,
    Job,
    Policy,
    Refused,
    ToParty,
    ToWorker,
)
from fedscheduler.job_metrics import handle_task_metrics
from fedscheduler.metrics import SchedulerMetrics
from fedscheduler.pipeline import Pipeline, PipelineError
from fedscheduler.queries import grant_view
from fedscheduler.sql_job_repository import SqlJobRepository
from fedscheduler.table_profiles import handle_table_profile, label_problem, profile_of

log = structlog.get_logger("fedscheduler")

__all__ = [
    "HANDLERS",
    "CommandError",
    "SchedulerContext",
    "add_grant",
    "bind_handlers",
    "check_job",
    "rerun_job",
    "stop_job",
    "submit_job",
]

_ROLES: tuple[str, ...] = get_args(Role)
_SUCCESSORS = (JobStart, JobEnd, JobHeartbeat, JobTaskReport)


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
    security: SecurityPolicy = field(default_factory=SecurityPolicy)
    """This party's security policy (fedflow.policy; settings.policy_file): checked before
    it accepts a proposed job and before it submits one."""
    legacy_job_status: bool = True
    """Send job.status for starts, ends, heartbeats and task reports (parties of the
    previous version read no other); False: their own types (every party on this version)."""
    clock: Callable[[], datetime] = store.utcnow
    audit_key: Ed25519PublicKey | None = None
    """The public key of this party's audit service (settings.audit_public_key): only
    control.audit_stop requests it signed stop jobs; None: such requests are refused."""
    metrics: SchedulerMetrics = field(default_factory=SchedulerMetrics)
    started_at: datetime = field(default_factory=store.utcnow)
    """When this scheduler started: silence is counted from here at the earliest, so a
    restarted initiator does not fail jobs whose parties kept talking while it was down."""

    @property
    def policy(self) -> Policy:
        return Policy(
            party_id=self.party_id,
            party_timeout_s=self.party_timeout_s,
            heartbeat_every_s=self.heartbeat_every_s,
            task_timeout_s=self.task_timeout_s,
            started_at=self.started_at,
        )


# --- the pipeline, parsed once per text -------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _parse_text(text: str) -> Pipeline:
    # Every task report of a running job needs the model; parsing and validating the YAML
    # each time costs more than the rest of the handler. Pipelines are not changed after
    # parsing, so one parse per text is shared.
    return Pipeline.from_yaml(text)


def _pipeline_of(job: Job) -> Pipeline:
    return _parse_text(job.pipeline_yaml)


# --- carrying out effects ---------------------------------------------------------------------


def _role(value: str) -> Role:
    for role in _ROLES:
        if role == value:
            return role  # type: ignore[return-value]  # narrowed by the loop over Role's values
    return "local"


def _party_ref(job: Job, party_id: str) -> PartyRef:
    return PartyRef(party_id=party_id, role=_role(job.role_of(party_id)))


def _task_id(job: Job, component: str, party_id: str) -> str:
    """The envelope's task id (fedschemas.task_scope_id); empty for job-level messages."""
    if component == SCHEDULER_COMPONENT:
        return ""
    roles = _pipeline_of(job).component(component).roles_at(party_id)
    return task_scope_id(job.job_id, component, party_id, roles[0] if roles else "local")


def _carry_out(job: Job, effects: list[Effect], ctx: SchedulerContext, now: datetime) -> None:
    """Publish the messages and count the facts of one domain step, in order."""
    for effect in effects:
        if isinstance(effect, ToParty):
            _send_remote(job, effect, ctx, now)
        elif isinstance(effect, ToWorker):
            _send_worker(job, effect, ctx, now)
        else:
            _count(job, effect, ctx)


def _send_remote(job: Job, effect: ToParty, ctx: SchedulerContext, now: datetime) -> None:
    """To another party's scheduler, through `out.<party>` and the gateways."""
    payload: Payload = effect.payload
    if ctx.legacy_job_status and isinstance(payload, _SUCCESSORS):
        payload = as_job_status(payload, job.state)  # type: ignore[arg-type]  # a JobState
    envelope = new_envelope(
        payload,
        job_id=job.job_id,
        component=effect.component,
        task_id=_task_id(job, effect.component, ctx.party_id),
        attempt=effect.attempt,
        source=_party_ref(job, ctx.party_id),
        destination=_party_ref(job, effect.party_id),
        tag=effect.tag,
        iteration=-1,
        seq=effect.seq,
        created_at=now,
    )
    try:
        ctx.publisher.send(ctx.out_topic_prefix + effect.party_id, envelope)
    except Unroutable as exc:
        raise UnknownPeer(effect.party_id, str(exc)) from exc


class UnknownPeer(Unroutable):
    """Nothing takes messages for this party here: the gateway declares `out.<peer>` for each
    peer in its settings, so the party is not one of them (or the gateway never started)."""

    def __init__(self, party_id: str, detail: str) -> None:
        super().__init__(detail)
        self.party_id = party_id


def _send_worker(job: Job, effect: ToWorker, ctx: SchedulerContext, now: datetime) -> None:
    """To this party's own workers (svc.worker)."""
    me = _party_ref(job, ctx.party_id)
    payload = effect.payload
    role = payload.role if isinstance(payload, TaskRun) else None
    envelope = new_envelope(
        payload,
        job_id=job.job_id,
        component=effect.component,
        task_id=(
            task_scope_id(job.job_id, effect.component, ctx.party_id, role)
            if role is not None
            else _task_id(job, effect.component, ctx.party_id)
        ),
        attempt=effect.attempt,
        source=me,
        destination=me,
        tag=effect.tag,
        iteration=-1,
        seq=0,
        created_at=now,
    )
    ctx.publisher.send(ctx.worker_topic, envelope)
    if isinstance(payload, TaskRun):
        log.info(
            "task_dispatched",
            job_id=job.job_id,
            task_id=envelope.task_id,
            component=payload.component,
            attempt=payload.attempt,
        )


def _count(job: Job, fact: Counted, ctx: SchedulerContext) -> None:
    metrics = ctx.metrics
    if fact.name == "job_ended":
        metrics.jobs_ended.labels(fact.label).inc()
        metrics.job_duration.labels(fact.label).observe(fact.seconds)
        # A failed job needs an operator's look: warning, like task_timed_out.
        (log.warning if fact.label == "failed" else log.info)(
            "job_ended", job_id=job.job_id, state=fact.label, attempt=job.attempt, reason=job.reason
        )
        _tell_gateway(job, fact.label, ctx)
    elif fact.name == "job_submitted":
        metrics.jobs_submitted.inc()
    elif fact.name == "proposal":
        metrics.proposals.labels(fact.label).inc()
    elif fact.name == "task_dispatched":
        metrics.tasks_dispatched.inc()
    elif fact.name == "party_timeout":
        metrics.party_timeouts.labels(fact.label).inc()
    elif fact.name == "task_timeout":
        metrics.task_timeouts.inc()
        log.warning("task_timed_out", job_id=job.job_id, component=fact.label)
    elif fact.name == "heartbeat_sent":
        metrics.heartbeats_sent.inc()


def _tell_gateway(job: Job, state: str, ctx: SchedulerContext) -> None:
    """gateway.job_ended: the party's gateway refuses this attempt's cross-site messages from
    now on (its replay guard). Same id for the same attempt, so a redelivery is a duplicate."""
    me = PartyRef(party_id=ctx.party_id, role="local")
    ended = JobEnded(job_id=job.job_id, attempt=job.attempt, state=state)  # type: ignore[arg-type]
    envelope = new_envelope(
        ended,
        job_id=job.job_id,
        component="scheduler",
        task_id="",
        attempt=job.attempt,
        source=me,
        destination=me,
        tag="job_ended",
        iteration=-1,
        seq=0,
        created_at=ctx.clock(),
    )
    ctx.publisher.bus.declare(topics.GATEWAY)  # the gateway may not have started yet
    ctx.publisher.send(topics.GATEWAY, envelope)


def _step(
    repo: SqlJobRepository, job: Job, event: Event, ctx: SchedulerContext, now: datetime
) -> None:
    """One domain step on a loaded job: apply, save, publish (before the caller commits)."""
    effects = domain.apply(job, event, ctx.policy, now, _pipeline_of)
    repo.save(job)
    _carry_out(job, effects, ctx, now)


def _on_message(
    tx: InboxTransaction, ctx: SchedulerContext, job_id: str, make_event: Callable[[], Event]
) -> None:
    """A message's step on its job, locked; a message the job's rules refuse is a dead
    letter with the reason."""
    session = tx.require_session()
    repo = SqlJobRepository(session)
    job = repo.get(job_id, lock=True)
    if job is None:
        # Its submit may not have committed yet (it publishes the proposal first, and the
        # answer can be back before the commit): wait for that submit, then look again.
        store.hold_job_creation(session, job_id)
        job = repo.get(job_id, lock=True)
    if job is None:
        raise Reject(f"no job {job_id} at this party")
    try:
        _step(repo, job, make_event(), ctx, ctx.clock())
    except Refused as exc:
        raise Reject(str(exc)) from exc


# --- grants -----------------------------------------------------------------------------------


def grant_problem(
    session: Session, ctx: SchedulerContext, pipeline: Pipeline, initiator: str
) -> str | None:
    """Why this party may not run its part of `pipeline` for `initiator`; None when it may.
    This party's security policy first (its own jobs too), then the label profiles of its
    tables, then its grants. Only grants and profiles are read here, never data."""
    refused = pipeline_problem(ctx.security, pipeline, ctx.party_id)
    if refused is not None:
        return refused
    # The labels its tables hold (as its workers reported them) against the models.
    refused = label_problem(pipeline, ctx.party_id, profile_of(session))
    if refused is not None:
        return refused
    if initiator == ctx.party_id and ctx.self_grants_implied:
        return None
    refused = domain.grant_problem(
        pipeline,
        ctx.party_id,
        initiator,
        lambda table, grantee: store.granted_types(session, table, grantee),
    )
    if refused is not None:
        return refused
    return grant_params_problem(
        pipeline,
        ctx.party_id,
        lambda table: parse_grant_params(store.granted_params(session, table, initiator)),
    )


def grants_used(
    session: Session, pipeline: Pipeline, party_id: str, initiator: str
) -> list[GrantUsed]:
    """The grants of this party that let `initiator`'s job read its tables (one per table:
    grants are unique per table and grantee), as they stand now, when the job is accepted."""
    used = {
        grant.id: GrantUsed(
            grant_id=grant.id, table=grant.table_name, component_types=list(grant.component_types)
        )
        for use in pipeline.tables_read_by(party_id)
        for grant in store.grants(session, table=use.table, grantee=initiator)
    }
    return [used[grant_id] for grant_id in sorted(used)]


def add_grant(
    session: Session,
    ctx: SchedulerContext,
    table: str,
    grantee: str,
    component_types: list[str],
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if not table or not grantee or not component_types:
        raise CommandError("invalid", "a grant needs a table, a grantee and component types")
    try:
        checked = parse_grant_params(params)
    except ValueError as exc:
        raise CommandError("invalid", f"grant params refused: {exc}") from None
    stored = (
        {t: rules.model_dump(mode="json", exclude_defaults=True) for t, rules in checked.items()}
        if checked
        else None
    )
    grant = store.add_grant(session, table, grantee, component_types, ctx.clock(), stored)
    log.info(
        "grant_added",
        table=table,
        grantee=grantee,
        component_types=component_types,
        param_types=sorted(checked or ()),
    )
    return grant_view(grant)


# --- commands ---------------------------------------------------------------------------------


def submit_job(
    session: Session, ctx: SchedulerContext, job_id: str, pipeline_yaml: str
) -> models.Job:
    """Store a new job initiated here, check own grants, propose it to the other parties.

    Submitting the same job id with the same pipeline again returns the existing job (a
    client retrying after a lost reply); with another pipeline it is a conflict.
    """
    # Held until this command commits: a party's answer to the proposal published below waits
    # for the job row instead of missing it (store.hold_job_creation).
    store.hold_job_creation(session, job_id)
    repo = SqlJobRepository(session)
    existing = repo.get(job_id)
    if existing is not None:
        if existing.pipeline_yaml == pipeline_yaml:
            return repo.row(job_id)
        raise CommandError("conflict", f"job {job_id} exists with another pipeline")
    try:
        pipeline = _parse_text(pipeline_yaml)
    except PipelineError as exc:
        raise CommandError("invalid", f"pipeline refused: {exc}") from exc
    unsupported = domain.one_task_per_party(pipeline)
    if unsupported is not None:
        raise CommandError("invalid", f"pipeline refused: {unsupported}")
    if pipeline.initiator != ctx.party_id:
        raise CommandError(
            "invalid",
            f"this is party {ctx.party_id}, the pipeline's guest is party {pipeline.initiator}: "
            "submit the job at the guest",
        )
    now = ctx.clock()
    job, effects = domain.submit(
        job_id,
        pipeline_yaml,
        pipeline,
        ctx.policy,
        now,
        own_grant_problem=grant_problem(session, ctx, pipeline, ctx.party_id),
    )
    repo.add(job)
    try:
        _carry_out(job, effects, ctx, now)
    except UnknownPeer as exc:
        # The command's transaction rolls back: the job is not stored here.
        raise CommandError(
            "conflict",
            f"pipeline refused: party {exc.party_id} is not a peer of party {ctx.party_id} "
            f"(no route to it: add it to the gateway's peers, or check that the gateway runs)",
        ) from exc
    log.info("job_submitted", job_id=job_id, parties=pipeline.party_ids())
    return repo.row(job_id)


def _command(session: Session, ctx: SchedulerContext, job_id: str, event: Event) -> models.Job:
    repo = SqlJobRepository(session)
    job = repo.get(job_id, lock=True)
    if job is None:
        raise CommandError("not_found", f"no job {job_id}")
    try:
        _step(repo, job, event, ctx, ctx.clock())
    except UnknownPeer as exc:
        # Rolled back with the command: the job stays as it was.
        raise CommandError(
            "conflict",
            f"job {job_id}: party {exc.party_id} is not a peer of party {ctx.party_id} any "
            "more (no route to it: add it back to the gateway's peers, or check that the "
            "gateway runs)",
        ) from exc
    return repo.row(job_id)


def stop_job(
    session: Session, ctx: SchedulerContext, job_id: str, reason: str | None
) -> models.Job:
    return _command(session, ctx, job_id, domain.StopRequested(reason))


def rerun_job(session: Session, ctx: SchedulerContext, job_id: str) -> models.Job:
    """A new attempt from the components that did not succeed (and everything downstream of
    them); earlier successes are kept. Only the initiator reruns; every party follows."""
    job = _command(session, ctx, job_id, domain.RerunRequested())
    log.info("job_rerun", job_id=job_id, attempt=job.attempt)
    return job


def check_job(session: Session, ctx: SchedulerContext, job_id: str) -> None:
    """One timer pass over one open job: its timeouts, then a heartbeat when one is due
    (domain.Tick: at the initiator a silent party, an unanswered proposal or an overdue task
    fails the job; at a participant a silent initiator fails this party's side)."""
    repo = SqlJobRepository(session)
    job = repo.get(job_id, lock=True)
    if job is None:
        return
    _step(repo, job, domain.Tick(), ctx, ctx.clock())


# --- message handlers -------------------------------------------------------------------------


def _require_local(envelope: Envelope, ctx: SchedulerContext) -> None:
    if envelope.source.party_id != ctx.party_id:
        raise Reject(
            f"{envelope.type} must come from this party ({ctx.party_id}), "
            f"not from party {envelope.source.party_id}"
        )


def handle_job_submit(
    envelope: Envelope, payload: JobSubmit, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """job.submit (from a local user): like the submit command; a refused pipeline is stored
    as a failed job, so the user finds the reason in its status."""
    _require_local(envelope, ctx)
    session = tx.require_session()
    try:
        submit_job(session, ctx, payload.job_id, payload.pipeline_yaml)
    except CommandError as exc:
        log.warning("job_submit_refused", job_id=payload.job_id, reason=exc.message)
        if exc.kind == "invalid" and store.get_job(session, payload.job_id) is None:
            refused = domain.refused_submission(
                payload.job_id, payload.pipeline_yaml, ctx.policy, ctx.clock(), exc.message
            )
            SqlJobRepository(session).add(refused)


def handle_job_propose(
    envelope: Envelope, payload: JobPropose, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """job.propose: check the pipeline and this party's grants; accept or refuse.

    A refusal reads nothing: only the grants table is consulted."""
    if envelope.source.party_id != payload.initiator:
        raise Reject(
            f"job.propose names initiator {payload.initiator} but comes from party "
            f"{envelope.source.party_id}"
        )
    session = tx.require_session()
    repo = SqlJobRepository(session)
    if repo.get(payload.job_id) is not None:
        log.info("job_propose_repeated", job_id=payload.job_id)
        return
    problem: str | None = None
    pipeline: Pipeline | None = None
    try:
        pipeline = _parse_text(payload.pipeline_yaml)
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
        elif (unsupported := domain.one_task_per_party(pipeline)) is not None:
            problem = f"pipeline refused: {unsupported}"
        else:
            problem = grant_problem(session, ctx, pipeline, payload.initiator)
    grants = (
        grants_used(session, pipeline, ctx.party_id, payload.initiator)
        if pipeline is not None and problem is None
        else []
    )
    now = ctx.clock()
    job, effects = domain.answer_proposal(
        payload.job_id,
        payload.initiator,
        payload.pipeline_yaml,
        pipeline,
        problem,
        ctx.policy,
        now,
        grants,
    )
    repo.add(job)
    if problem is None:
        log.info(
            "job_accepted",
            job_id=payload.job_id,
            initiator=payload.initiator,
            grants=[g.grant_id for g in grants],
        )
    else:
        log.warning(
            "job_refused", job_id=payload.job_id, initiator=payload.initiator, reason=problem
        )
    _carry_out(job, effects, ctx, now)


def handle_job_accept(
    envelope: Envelope, payload: JobAccept, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    _on_message(
        tx,
        ctx,
        payload.job_id,
        lambda: domain.Accepted(payload.party_id, envelope.source.party_id, kind=envelope.type),
    )


def handle_job_refuse(
    envelope: Envelope, payload: JobRefuse, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    _on_message(
        tx,
        ctx,
        payload.job_id,
        lambda: domain.RefusedBy(
            payload.party_id, envelope.source.party_id, payload.reason, kind=envelope.type
        ),
    )


def handle_job_news(
    envelope: Envelope,
    payload: JobStart | JobEnd | JobHeartbeat,
    tx: InboxTransaction,
    *,
    ctx: SchedulerContext,
) -> None:
    """job.start / job.end / job.heartbeat: at a participant, the initiator's word on the
    job (start it, it succeeded, it is alive); at the initiator, a party's sign of life."""
    state = (
        RUNNING
        if isinstance(payload, JobStart)
        else SUCCESS
        if isinstance(payload, JobEnd)
        else payload.state
    )
    _on_message(
        tx,
        ctx,
        payload.job_id,
        lambda: domain.StatusHeard(
            payload.party_id, envelope.source.party_id, payload.attempt, state, envelope.type
        ),
    )


def handle_job_task_report(
    envelope: Envelope, payload: JobTaskReport, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """job.task_report (at the initiator): a participant's task changed."""
    _on_message(
        tx,
        ctx,
        payload.job_id,
        lambda: domain.TaskReported(
            payload.party_id,
            envelope.source.party_id,
            payload.component,
            payload.attempt,
            payload.task_state,
            payload.reason,
            payload.progress,
            kind=envelope.type,
        ),
    )


def handle_job_stop(
    envelope: Envelope, payload: JobStop, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """job.stop (from the initiator): cancel this party's open tasks, end the job as told."""
    _on_message(
        tx,
        ctx,
        payload.job_id,
        lambda: domain.StopOrdered(
            envelope.source.party_id, payload.attempt, payload.state, payload.reason
        ),
    )


def handle_audit_stop(
    envelope: Envelope, payload: AuditStop, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """control.audit_stop (from this party's audit service): a critical audit finding fails
    the job at once. Only a request signed by the audit key this scheduler is configured with
    counts: any local service can publish on svc.scheduler, only the audit holds that key."""
    _require_local(envelope, ctx)
    if ctx.audit_key is None:
        raise Reject("control.audit_stop refused: no audit public key is configured here")
    try:
        ctx.audit_key.verify(envelope.signature or b"", canonical_bytes(envelope))
    except InvalidSignature as exc:
        raise Reject("control.audit_stop refused: not signed by this party's audit key") from exc
    if payload.job_id != envelope.job_id:
        raise Reject(f"control.audit_stop for job {payload.job_id} in an envelope of another job")
    log.warning(
        "audit_stop",
        job_id=payload.job_id,
        rule=payload.rule,
        party=payload.party_id,
        message_id=payload.message_id,
    )
    _on_message(
        tx,
        ctx,
        payload.job_id,
        lambda: domain.AuditStopRequested(
            payload.rule, payload.party_id, payload.message_id, payload.detail
        ),
    )


def handle_job_rerun(
    envelope: Envelope, payload: JobRerun, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """job.rerun (from the initiator): start attempt `attempt` with the listed components."""
    _on_message(
        tx,
        ctx,
        payload.job_id,
        lambda: domain.RerunOrdered(
            envelope.source.party_id, payload.attempt, tuple(payload.components)
        ),
    )


def handle_task_status(
    envelope: Envelope, payload: TaskStatus, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """task.status (from this party's worker): record it; participants forward it to the
    initiator and start what became ready; the initiator decides the job's fate."""
    _require_local(envelope, ctx)
    if payload.party_id != ctx.party_id:
        raise Reject(f"task.status for party {payload.party_id} at party {ctx.party_id}")
    _on_message(
        tx,
        ctx,
        payload.job_id,
        lambda: domain.TaskReported(
            ctx.party_id,
            ctx.party_id,
            payload.component,
            payload.attempt,
            payload.state,
            payload.reason,
            payload.progress,
            payload.outputs,
            local=True,
            kind=envelope.type,
        ),
    )


HANDLERS: dict[type[Payload], Callable[..., None]] = {
    JobSubmit: handle_job_submit,
    JobPropose: handle_job_propose,
    JobAccept: handle_job_accept,
    JobRefuse: handle_job_refuse,
    JobStart: handle_job_news,
    JobEnd: handle_job_news,
    JobHeartbeat: handle_job_news,
    JobTaskReport: handle_job_task_report,
    JobStop: handle_job_stop,
    JobRerun: handle_job_rerun,
    AuditStop: handle_audit_stop,
    TaskStatus: handle_task_status,
    TaskMetrics: handle_task_metrics,
    TableProfile: handle_table_profile,
}
"""Payload class -> handler. Adding a message the scheduler handles is one line here; the
consumer decodes each type into its class, so a handler gets the class it is listed for."""


def _superseded(type_name: str, bound: dict[type[Payload], EnvelopeHandler]) -> EnvelopeHandler:
    """A handler for an old type: its message, mapped to its successor, goes to the
    successor's handler (the envelope, and so its type name in refusals, stays as sent)."""
    to_successor = SUPERSEDED[type_name]

    def handle(envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        successor = to_successor(payload)
        bound[type(successor)](envelope, successor, tx)

    return handle


def bind_handlers(ctx: SchedulerContext) -> dict[str, EnvelopeHandler]:
    """The handlers with their context bound, keyed by type name as the EnvelopeConsumer
    wants them; superseded types the handlers' successors cover are read too."""
    bound: dict[type[Payload], EnvelopeHandler] = {
        model: functools.partial(handler, ctx=ctx) for model, handler in HANDLERS.items()
    }
    by_name: dict[str, EnvelopeHandler] = {
        payload_type(model): handler for model, handler in bound.items()
    }
    for old in SUPERSEDED:
        by_name[old] = _superseded(old, bound)
    return by_name
