"""The scheduler's domain: a job and its tasks as plain data, and the one table of transitions.

No IO here: no database, no bus, no clock of its own. `apply(job, event, policy, now)` looks
up the event's rule in `TRANSITIONS`, changes `job` in place (its new state) and returns the
effects the service layer must carry out: messages to other parties' schedulers
(`ToParty`), messages to this party's workers (`ToWorker`), and facts worth a metric
(`Counted`). Time comes in as `now`, so a test moves the clock instead of sleeping; the
timer's pass is the `Tick` event.

Invariants the rules keep (docs/scheduler.md has the long form):

- only the initiator ends a job (fails, cancels or declares success), except that a
  participant whose initiator has been silent for `party_timeout_s` fails its own side;
- task states only move forward (`TASK_RANK`): waiting -> running -> success | failed |
  canceled, and the first final state wins, so repeated or reordered reports cannot undo
  one another;
- a dispatched task is marked running in the same step, so it is never dispatched twice in
  an attempt;
- every message a step causes has a deterministic id (tag, attempt, component, seq are
  part of the effect), so a step replayed after a crash re-sends the same ids.

A message the rules refuse (a party reporting for another, a stop from a non-initiator)
raises `Refused`; a command they refuse raises `CommandError`. The service layer turns the
first into a dead letter and the second into an RPC error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from fedschemas.payloads import (
    GrantUsed,
    JobAccept,
    JobEnd,
    JobHeartbeat,
    JobPropose,
    JobRefuse,
    JobRerun,
    JobStart,
    JobStop,
    JobTaskReport,
    SchedulerErrorKind,
    TaskCancel,
    TaskRun,
)

if TYPE_CHECKING:  # the domain only calls a pipeline's methods; parsing is the service's
    from fedscheduler.pipeline import Pipeline

WAITING: Final = "waiting"
RUNNING: Final = "running"
SUCCESS: Final = "success"
FAILED: Final = "failed"
CANCELED: Final = "canceled"
TERMINAL: Final = frozenset({SUCCESS, FAILED, CANCELED})
OPEN: Final = (WAITING, RUNNING)

TASK_RANK: Final = {WAITING: 0, RUNNING: 1, SUCCESS: 2, FAILED: 2, CANCELED: 2}
"""A task's state moves only to a higher rank: the first final state wins."""

JOB_MOVES: Final = frozenset(
    {
        (WAITING, RUNNING),  # everyone accepted (initiator) / the start arrived (participant)
        (WAITING, FAILED),  # refused, unanswered, or the initiator went silent
        (WAITING, CANCELED),  # stopped by a user before it started
        (RUNNING, SUCCESS),  # every task of every party succeeded
        (RUNNING, FAILED),  # a task failed, a party or the initiator went silent, a timeout
        (RUNNING, CANCELED),  # stopped by a user
        (FAILED, RUNNING),  # rerun: a new attempt
        (CANCELED, RUNNING),  # rerun: a new attempt
        (RUNNING, RUNNING),  # a participant told to rerun while it still ran (the stop was lost)
    }
)
"""Every (from, to) a job's state may take; `Job.move` refuses anything else."""

SCHEDULER_COMPONENT: Final = "scheduler"
"""The `component` of job-level messages (they belong to no component)."""

# Tags of the messages the scheduler sends; with (job, component, attempt, seq, source,
# destination) they make the deterministic message ids. The tag, not the message type, tells
# the ids apart, so the legacy job.status and its successors share ids.
TAG_PROPOSE: Final = "job.propose"
TAG_ANSWER: Final = "job.answer"
TAG_START: Final = "job.start"
TAG_END: Final = "job.end"
TAG_STOP: Final = "job.stop"
TAG_RERUN: Final = "job.rerun"
TAG_STATUS: Final = "job.status"
TAG_HEARTBEAT: Final = "job.heartbeat"
TAG_TASK_RUN: Final = "task.run"
TAG_TASK_CANCEL: Final = "task.cancel"

MAX_REASON: Final = 4096


class Refused(Exception):
    """A message the job's rules do not allow (dead-lettered with this reason)."""


class CommandError(Exception):
    """A command that cannot be carried out; `kind` maps to the REST status (400/404/409)."""

    def __init__(self, kind: SchedulerErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# --- the aggregate ----------------------------------------------------------------------------


@dataclass
class Party:
    """A party of a job: its roles, its answer to the proposal, when it was last heard of."""

    party_id: str
    roles: tuple[str, ...]
    state: str
    """waiting: proposed, no answer yet; running: accepted; failed: refused or went silent."""
    last_seen: datetime | None = None
    reason: str | None = None


@dataclass
class Task:
    """One component of a job at one party in one attempt."""

    component: str
    attempt: int
    party_id: str
    component_type: str
    state: str
    updated_at: datetime
    reason: str | None = None
    progress: float | None = None
    outputs: dict[str, str] | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    status_seq: int = 0
    """Status reports forwarded to the initiator so far; numbers their message ids."""

    @property
    def key(self) -> TaskKey:
        return (self.component, self.attempt, self.party_id)


TaskKey = tuple[str, int, str]
"""(component, attempt, party_id)."""


@dataclass
class Job:
    """One job as this party sees it, with its parties and every task row it keeps (the
    initiator keeps every party's, a participant its own)."""

    job_id: str
    initiator: str
    pipeline_yaml: str
    state: str
    attempt: int
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    reason: str | None = None
    heartbeat_at: datetime | None = None
    heartbeat_seq: int = 0
    parties: dict[str, Party] = field(default_factory=dict)
    tasks: dict[TaskKey, Task] = field(default_factory=dict)

    def move(self, state: str, now: datetime) -> None:
        if (self.state, state) not in JOB_MOVES:
            raise ValueError(f"job {self.job_id} cannot go from {self.state} to {state}")
        self.state, self.updated_at = state, now

    def party(self, party_id: str) -> Party | None:
        return self.parties.get(party_id)

    def others(self, me: str) -> list[Party]:
        """The parties other than `me`, by party id (the order messages go out in)."""
        return [self.parties[p] for p in sorted(self.parties) if p != me]

    def role_of(self, party_id: str) -> str:
        party = self.parties.get(party_id)
        return party.roles[0] if party is not None and party.roles else "local"

    def tasks_of(self, attempt: int | None = None, party_id: str | None = None) -> list[Task]:
        """Task rows by attempt, party, component (the order the database lists them in)."""
        rows = [
            t
            for t in self.tasks.values()
            if (attempt is None or t.attempt == attempt)
            and (party_id is None or t.party_id == party_id)
        ]
        rows.sort(key=lambda t: (t.attempt, t.party_id, t.component))
        return rows

    def effective(self) -> dict[tuple[str, str], Task]:
        """(component, party) -> its row of the highest attempt: the state that counts now."""
        latest: dict[tuple[str, str], Task] = {}
        for task in self.tasks.values():
            key = (task.component, task.party_id)
            if key not in latest or task.attempt > latest[key].attempt:
                latest[key] = task
        return latest

    def all_succeeded(self) -> bool:
        if any(t.attempt == self.attempt and t.state != SUCCESS for t in self.tasks.values()):
            return False  # the cheap answer while a task of this attempt is open
        effective = self.effective()
        return bool(effective) and all(t.state == SUCCESS for t in effective.values())


# --- effects ----------------------------------------------------------------------------------

JobMessage = JobPropose | JobAccept | JobRefuse | JobStart | JobEnd | JobHeartbeat
RemoteMessage = JobMessage | JobTaskReport | JobStop | JobRerun


@dataclass(frozen=True)
class ToParty:
    """Send `payload` to party `party_id`'s scheduler (out.<party>, through the gateways)."""

    party_id: str
    payload: RemoteMessage
    tag: str
    attempt: int
    component: str = SCHEDULER_COMPONENT
    seq: int = 0


@dataclass(frozen=True)
class ToWorker:
    """Send `payload` to this party's workers (svc.worker)."""

    payload: TaskRun | TaskCancel
    tag: str
    component: str
    attempt: int


CountName = Literal[
    "job_submitted",
    "job_ended",
    "proposal",
    "task_dispatched",
    "party_timeout",
    "task_timeout",
    "heartbeat_sent",
]


@dataclass(frozen=True)
class Counted:
    """Something a metric counts: `label` is the metric's label value where it has one."""

    name: CountName
    label: str = ""
    seconds: float = 0.0
    """For job_ended: how long the job took since this party created it."""


Effect = ToParty | ToWorker | Counted


@dataclass(frozen=True)
class Policy:
    """What the rules need besides the job and the event: who we are, and the limits."""

    party_id: str
    party_timeout_s: float = 120.0
    heartbeat_every_s: float = 20.0
    task_timeout_s: float = 0.0
    """Default limit of a task's run time at the initiator; 0: none."""
    started_at: datetime | None = None
    """When this scheduler started: silence and task time are counted from here at the
    earliest, so a restarted scheduler does not fail jobs whose other side kept talking."""

    def since(self, moment: datetime) -> datetime:
        return moment if self.started_at is None else max(moment, self.started_at)


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """Initiator: `party_id` accepted the proposal (`source`: the envelope's sender)."""

    party_id: str
    source: str
    kind: str = "job.accept"


@dataclass(frozen=True)
class RefusedBy:
    """Initiator: `party_id` refused the proposal."""

    party_id: str
    source: str
    reason: str
    kind: str = "job.refuse"


@dataclass(frozen=True)
class StatusHeard:
    """A start, end or heartbeat of the job from the other side; at the initiator only a
    sign of life, at a participant the initiator's word on the job's state."""

    party_id: str
    source: str
    attempt: int
    state: str
    kind: str


@dataclass(frozen=True)
class TaskReported:
    """A task changed: from this party's worker (`local`) or in a participant's report."""

    party_id: str
    source: str
    component: str
    attempt: int
    state: str
    reason: str | None = None
    progress: float | None = None
    outputs: dict[str, str] | None = None
    local: bool = False
    kind: str = "job.task_report"


@dataclass(frozen=True)
class StopOrdered:
    """Participant: the initiator's job.stop."""

    source: str
    attempt: int
    state: str
    reason: str


@dataclass(frozen=True)
class RerunOrdered:
    """Participant: the initiator's job.rerun."""

    source: str
    attempt: int
    components: tuple[str, ...]


@dataclass(frozen=True)
class StopRequested:
    """Initiator: a user stops the job."""

    reason: str | None = None


@dataclass(frozen=True)
class AuditStopRequested:
    """Either side: this party's audit service found a critical rule broken in the job
    (control.audit_stop, signature checked by the handler)."""

    rule: str
    party_id: str
    message_id: str
    detail: str


@dataclass(frozen=True)
class RerunRequested:
    """Initiator: a user reruns the job."""


@dataclass(frozen=True)
class Tick:
    """The timer's pass: timeouts, then a heartbeat when one is due."""


Event = (
    Accepted
    | RefusedBy
    | StatusHeard
    | TaskReported
    | StopOrdered
    | RerunOrdered
    | StopRequested
    | RerunRequested
    | AuditStopRequested
    | Tick
)


# --- pipeline-derived rules -------------------------------------------------------------------


def one_task_per_party(pipeline: Pipeline) -> str | None:
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


ANY_COMPONENT: Final = "*"


def grant_problem(
    pipeline: Pipeline, party_id: str, initiator: str, granted: Callable[[str, str], set[str]]
) -> str | None:
    """Why `party_id` may not run its part of `pipeline` for `initiator`; None when it may.

    Every table the party's readers would read must be granted to the initiator for every
    component type its data flows into (or for "*"). `granted(table, grantee)` answers from
    the grants only: a refused job reads none of the party's data.
    """
    for use in pipeline.tables_read_by(party_id):
        allowed = granted(use.table, initiator)
        if not allowed:
            return (
                f"table {use.table} (read by {use.component}) is not granted to party {initiator}"
            )
        if ANY_COMPONENT in allowed:
            continue
        missing = sorted(set(use.downstream_types) - allowed)
        if missing:
            return (
                f"the grant of table {use.table} to party {initiator} does not cover "
                f"component types {', '.join(missing)} (granted: {', '.join(sorted(allowed))})"
            )
    return None


def all_components(pipeline: Pipeline) -> list[str]:
    return [spec.name for spec in pipeline.components_in_order()]


# --- creating a job ---------------------------------------------------------------------------


def _parties_of(pipeline: Pipeline, state_of: Callable[[str], str]) -> dict[str, Party]:
    return {
        pid: Party(party_id=pid, roles=tuple(pipeline.roles_of(pid)), state=state_of(pid))
        for pid in pipeline.party_ids()
    }


def submit(
    job_id: str,
    pipeline_yaml: str,
    pipeline: Pipeline,
    policy: Policy,
    now: datetime,
    *,
    own_grant_problem: str | None,
) -> tuple[Job, list[Effect]]:
    """A new job initiated here: proposed to every other party, or failed at once when this
    party's own grants do not cover it (then nobody else hears of it)."""
    me = policy.party_id
    job = Job(
        job_id=job_id,
        initiator=me,
        pipeline_yaml=pipeline_yaml,
        state=WAITING,
        attempt=0,
        created_at=now,
        updated_at=now,
        parties=_parties_of(pipeline, lambda pid: RUNNING if pid == me else WAITING),
    )
    job.parties[me].last_seen = now
    effects: list[Effect] = [Counted("job_submitted")]
    if own_grant_problem is not None:
        job.parties[me].state, job.parties[me].reason = FAILED, own_grant_problem
        reason = f"party {me} refused the job: {own_grant_problem}"
        effects += _end(job, policy, now, FAILED, reason, notify=False)
        return job, effects
    others = job.others(me)
    for party in others:
        effects.append(
            ToParty(
                party.party_id,
                JobPropose(job_id=job_id, initiator=me, pipeline_yaml=pipeline_yaml),
                tag=TAG_PROPOSE,
                attempt=0,
            )
        )
    if not others:
        effects += _start(job, pipeline, policy, now)
    return job, effects


def refused_submission(
    job_id: str, pipeline_yaml: str, policy: Policy, now: datetime, reason: str
) -> Job:
    """A job.submit whose pipeline was refused: kept as a failed job, so the user who sent it
    without waiting for an answer finds the reason in its status."""
    return Job(
        job_id=job_id,
        initiator=policy.party_id,
        pipeline_yaml=pipeline_yaml,
        state=FAILED,
        attempt=0,
        created_at=now,
        updated_at=now,
        ended_at=now,
        reason=reason,
    )


def answer_proposal(
    job_id: str,
    initiator: str,
    pipeline_yaml: str,
    pipeline: Pipeline | None,
    problem: str | None,
    policy: Policy,
    now: datetime,
    grants: list[GrantUsed] | None = None,
) -> tuple[Job, list[Effect]]:
    """A participant's side of a proposed job, and its answer: accept, or refuse with
    `problem` (the job is then kept as failed, with this party's reason). An accept names
    `grants`, the grants that cover the job (the audit of both parties records them)."""
    me = policy.party_id
    job = Job(
        job_id=job_id,
        initiator=initiator,
        pipeline_yaml=pipeline_yaml,
        state=FAILED if problem else WAITING,
        attempt=0,
        created_at=now,
        updated_at=now,
        ended_at=now if problem else None,
        reason=f"refused: {problem}" if problem else None,
    )
    if pipeline is not None and problem is None:
        job.parties = _parties_of(
            pipeline, lambda pid: RUNNING if pid in (me, initiator) else WAITING
        )
        job.parties[initiator].last_seen = now
    else:
        own_roles = tuple(pipeline.roles_of(me)) if pipeline else ()
        job.parties[initiator] = Party(
            party_id=initiator,
            roles=tuple(pipeline.roles_of(initiator)) if pipeline else ("guest",),
            state=RUNNING,
            last_seen=now,
        )
        if me != initiator:
            job.parties[me] = Party(
                party_id=me, roles=own_roles or ("host",), state=FAILED, reason=problem
            )
    effects: list[Effect] = []
    answer: JobAccept | JobRefuse
    if problem is None:
        answer = JobAccept(job_id=job_id, party_id=me, grants=grants or [])
        effects.append(Counted("proposal", "accept"))
    else:
        answer = JobRefuse(job_id=job_id, party_id=me, reason=problem[:MAX_REASON])
        effects.append(Counted("proposal", "refuse"))
        effects.append(_ended(job, now))
    effects.append(ToParty(initiator, answer, tag=TAG_ANSWER, attempt=0))
    return job, effects


# --- the transition table ---------------------------------------------------------------------


Rule = Callable[[Job, "Event", Policy, datetime, "Pipelines"], list[Effect]]
Pipelines = Callable[[Job], "Pipeline"]
"""Parses a job's pipeline (the service layer caches parses: they cost more than a step)."""


def apply(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    """The job's next state for `event` (changed in place) and the effects to carry out."""
    initiator = job.initiator == policy.party_id
    rule = TRANSITIONS[(type(event), initiator)]
    return rule(job, event, policy, now, pipeline_of)


def _heard_from_initiator(job: Job, now: datetime) -> None:
    """Participant: any message of the job from its initiator counts as a sign of life, of
    any attempt (the silence timeout is about the site, not the attempt)."""
    initiator = job.parties.get(job.initiator)
    if initiator is not None:
        initiator.last_seen = now


def _heard_from_party(
    job: Job, event: Accepted | RefusedBy | StatusHeard | TaskReported, now: datetime
) -> Party:
    """Initiator: the reporting party, checked (a party reports only for itself; the gateway
    has verified who signed) and marked as heard."""
    party_id = event.party_id
    if party_id != event.source:
        raise Refused(f"party {event.source} may not report for party {party_id}")
    party = job.parties.get(party_id)
    if party is None:
        raise Refused(f"party {party_id} is not a party of job {job.job_id}")
    party.last_seen = now
    return party


def _answer_at_participant(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    assert isinstance(event, Accepted | RefusedBy)
    if event.party_id != event.source:
        raise Refused(f"party {event.source} may not report for party {event.party_id}")
    raise Refused(f"{event.kind} for job {job.job_id}, which party {job.initiator} initiated")


def _on_accepted(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    assert isinstance(event, Accepted)
    party = _heard_from_party(job, event, now)
    if job.state != WAITING or party.state != WAITING:
        return []
    party.state = RUNNING
    if all(p.state == RUNNING for p in job.parties.values()):
        return _start(job, pipeline_of(job), policy, now)
    return []


def _on_refused(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    assert isinstance(event, RefusedBy)
    party = _heard_from_party(job, event, now)
    if party.state == WAITING:
        party.state, party.reason = FAILED, event.reason
    if job.state != WAITING:
        return []
    return _end(job, policy, now, FAILED, f"party {party.party_id} refused the job: {event.reason}")


def _status_at_initiator(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    assert isinstance(event, StatusHeard | TaskReported)
    if isinstance(event, TaskReported) and event.local:
        return _task_update(job, event, policy, now, pipeline_of)
    _heard_from_party(job, event, now)
    if isinstance(event, TaskReported):
        return _task_update(job, event, policy, now, pipeline_of)
    return []


def _status_at_participant(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    assert isinstance(event, StatusHeard)
    if event.source != job.initiator or event.party_id != job.initiator:
        raise Refused(
            f"only the initiator ({job.initiator}) sends {event.kind} to party {policy.party_id}"
        )
    _heard_from_initiator(job, now)
    if event.attempt != job.attempt:
        return []
    if event.state == RUNNING and job.state == WAITING:
        job.move(RUNNING, now)
        job.heartbeat_at = None
        pipeline = pipeline_of(job)
        me = job.parties.get(policy.party_id)
        if me is None:
            raise Refused(f"party {policy.party_id} is not a party of job {job.job_id}")
        _add_tasks(job, pipeline, all_components(pipeline), me, now)
        return _dispatch_ready(job, pipeline, policy, now)
    if event.state == SUCCESS and job.state == RUNNING:
        job.move(SUCCESS, now)
        job.reason, job.ended_at = None, now
        return [_ended(job, now)]
    return []


def _report_at_participant(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    """Participant: this party's worker reported a task; record it, start what became ready,
    and forward the report to the initiator."""
    assert isinstance(event, TaskReported)
    if not event.local:
        raise Refused(
            f"only the initiator ({job.initiator}) sends {event.kind} to party {policy.party_id}"
        )
    task = _record_task(job, event, now)
    if task is None:
        return []
    task.status_seq += 1
    effects: list[Effect] = []
    # The next task.run goes out first: it is this party's critical path (its worker starts
    # now), the report to the initiator is not. Both are in this step either way.
    if event.state == SUCCESS and job.state == RUNNING and event.attempt == job.attempt:
        effects += _dispatch_ready(job, pipeline_of(job), policy, now)
    effects.append(
        ToParty(
            job.initiator,
            JobTaskReport(
                job_id=job.job_id,
                party_id=policy.party_id,
                attempt=event.attempt,
                component=event.component,
                task_state=event.state,  # type: ignore[arg-type]  # a TaskReport value
                reason=event.reason,
                progress=task.progress,
                at=now,
            ),
            tag=TAG_STATUS,
            attempt=event.attempt,
            component=event.component,
            seq=task.status_seq,
        )
    )
    return effects


def _on_stop_ordered(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    assert isinstance(event, StopOrdered)
    if event.source != job.initiator:
        raise Refused(f"only the initiator ({job.initiator}) stops job {job.job_id}")
    _heard_from_initiator(job, now)
    if job.state in TERMINAL or event.attempt < job.attempt:
        return []
    return _end(job, policy, now, event.state, event.reason)


def _on_rerun_ordered(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    assert isinstance(event, RerunOrdered)
    if event.source != job.initiator:
        raise Refused(f"only the initiator ({job.initiator}) reruns job {job.job_id}")
    _heard_from_initiator(job, now)
    if event.attempt <= job.attempt:
        return []
    pipeline = pipeline_of(job)
    unknown = sorted(set(event.components) - set(all_components(pipeline)))
    if unknown:
        raise Refused(f"job.rerun names components not in the pipeline: {', '.join(unknown)}")
    me = job.parties.get(policy.party_id)
    if me is None:
        raise Refused(f"party {policy.party_id} is not a party of job {job.job_id}")
    job.attempt = event.attempt
    job.move(RUNNING, now)
    job.reason, job.ended_at, job.heartbeat_at = None, None, None
    _add_tasks(job, pipeline, list(event.components), me, now)
    return _dispatch_ready(job, pipeline, policy, now)


def _not_from_a_participant(what: str) -> Rule:
    def refuse(
        job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
    ) -> list[Effect]:
        raise Refused(f"only the initiator ({job.initiator}) {what} job {job.job_id}")

    return refuse


def _on_stop_requested(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    assert isinstance(event, StopRequested)
    if job.state in TERMINAL:
        raise CommandError("conflict", f"job {job.job_id} has already ended ({job.state})")
    return _end(job, policy, now, CANCELED, event.reason or "stopped by a user")


def _on_audit_stop(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    """The audit asks to stop the job: it fails here, at once. The initiator stops every
    party (job.stop); a participant ends its side and reports its tasks failed to the
    initiator, which then stops everyone. A job that has ended already stays as it is."""
    assert isinstance(event, AuditStopRequested)
    if job.state in TERMINAL:
        return []
    reason = (
        f"stopped by the audit of party {policy.party_id}: rule {event.rule} broken by party "
        f"{event.party_id} (message {event.message_id}): {event.detail}"
    )
    if job.initiator == policy.party_id:
        return _end(job, policy, now, FAILED, reason)
    return _end_and_tell_initiator(job, policy, now, FAILED, reason)


def _not_here(what: str) -> Rule:
    def refuse(
        job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
    ) -> list[Effect]:
        raise CommandError(
            "conflict", f"job {job.job_id} was initiated by party {job.initiator}: {what} it there"
        )

    return refuse


def _on_rerun_requested(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    """A new attempt of the components that did not succeed at some party and everything
    downstream of them; earlier successes are kept."""
    if job.state not in (FAILED, CANCELED):
        raise CommandError(
            "conflict", f"job {job.job_id} is {job.state}: only a failed or canceled job is rerun"
        )
    parties = [job.parties[p] for p in sorted(job.parties)]
    unaccepted = [p.party_id for p in parties if p.state != RUNNING]
    if unaccepted:
        raise CommandError(
            "conflict",
            f"party {', '.join(unaccepted)} did not accept job {job.job_id}: fix the cause "
            "(e.g. a grant) and submit a new job",
        )
    pipeline = pipeline_of(job)
    redo = {c for (c, _p), t in job.effective().items() if t.state != SUCCESS}
    for spec in pipeline.components_in_order():  # everything downstream of a rerun component
        if set(spec.upstream) & redo:
            redo.add(spec.name)
    if not redo:
        raise CommandError("conflict", f"every component of job {job.job_id} already succeeded")
    ordered = [c.name for c in pipeline.components_in_order() if c.name in redo]
    job.attempt += 1
    job.move(RUNNING, now)
    job.reason, job.ended_at = None, None
    for party in parties:
        party.last_seen, party.reason = now, None
        _add_tasks(job, pipeline, ordered, party, now)
    effects: list[Effect] = [
        ToParty(
            party.party_id,
            JobRerun(job_id=job.job_id, attempt=job.attempt, components=ordered),
            tag=TAG_RERUN,
            attempt=job.attempt,
        )
        for party in job.others(policy.party_id)
    ]
    return effects + _dispatch_ready(job, pipeline, policy, now)


def _tick_at_initiator(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    """Fail the job when a party is silent too long, leaves the proposal unanswered too long,
    or a task runs past its limit; otherwise heartbeat every party that accepted."""
    if job.state in TERMINAL:
        return []
    effects = _fail_silent_party(job, policy, now)
    if effects is None:
        effects = _fail_overdue_task(job, policy, now, pipeline_of)
    if effects is not None:
        return effects
    me = policy.party_id
    recipients = [p.party_id for p in job.others(me) if p.state == RUNNING]
    return _heartbeats(job, policy, now, recipients)


def _tick_at_participant(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    """Fail this party's side when the initiator is silent too long; otherwise heartbeat to
    the initiator while the job runs (a participant that has only accepted stays quiet: the
    initiator times out the proposal by the answer, the first beat follows the start)."""
    if job.state in TERMINAL:
        return []
    effects = _fail_silent_initiator(job, policy, now)
    if effects is not None:
        return effects
    return _heartbeats(job, policy, now, [job.initiator] if job.state == RUNNING else [])


TRANSITIONS: dict[tuple[type[Event], bool], Rule] = {
    # (event, at the initiator?) -> rule
    (Accepted, True): _on_accepted,
    (Accepted, False): _answer_at_participant,
    (RefusedBy, True): _on_refused,
    (RefusedBy, False): _answer_at_participant,
    (StatusHeard, True): _status_at_initiator,
    (StatusHeard, False): _status_at_participant,
    (TaskReported, True): _status_at_initiator,
    (TaskReported, False): _report_at_participant,
    (StopOrdered, True): _not_from_a_participant("stops"),
    (StopOrdered, False): _on_stop_ordered,
    (RerunOrdered, True): _not_from_a_participant("reruns"),
    (RerunOrdered, False): _on_rerun_ordered,
    (StopRequested, True): _on_stop_requested,
    (StopRequested, False): _not_here("stop"),
    (RerunRequested, True): _on_rerun_requested,
    (RerunRequested, False): _not_here("rerun"),
    (AuditStopRequested, True): _on_audit_stop,
    (AuditStopRequested, False): _on_audit_stop,
    (Tick, True): _tick_at_initiator,
    (Tick, False): _tick_at_participant,
}
"""The one table of the job's rules: which rule handles an event where."""


# --- steps shared by the rules ----------------------------------------------------------------


def _add_tasks(
    job: Job, pipeline: Pipeline, components: Iterable[str], party: Party, now: datetime
) -> None:
    """Waiting rows of the current attempt for those of `components` that run at `party` (a
    component runs only where its type's roles are played: evaluation at the guest). Rows
    that exist (a redelivered start or rerun) are kept as they are."""
    for name in components:
        spec = pipeline.component(name)
        if not spec.roles_at(party.party_id):
            continue
        key = (name, job.attempt, party.party_id)
        if key not in job.tasks:
            job.tasks[key] = Task(
                component=name,
                attempt=job.attempt,
                party_id=party.party_id,
                component_type=spec.type,
                state=WAITING,
                updated_at=now,
            )


def _start(job: Job, pipeline: Pipeline, policy: Policy, now: datetime) -> list[Effect]:
    """Initiator, everyone accepted: tell the parties to start, start here."""
    job.move(RUNNING, now)
    for pid in sorted(job.parties):
        party = job.parties[pid]
        party.last_seen = now
        _add_tasks(job, pipeline, all_components(pipeline), party, now)
    effects: list[Effect] = [
        ToParty(
            party.party_id,
            JobStart(job_id=job.job_id, party_id=policy.party_id, attempt=job.attempt, at=now),
            tag=TAG_START,
            attempt=job.attempt,
        )
        for party in job.others(policy.party_id)
    ]
    return effects + _dispatch_ready(job, pipeline, policy, now)


def _dispatch_ready(job: Job, pipeline: Pipeline, policy: Policy, now: datetime) -> list[Effect]:
    """task.run for each waiting component of this party whose inputs succeeded here; each
    is marked running at once, so it is never sent twice in an attempt."""
    me = policy.party_id
    effective = job.effective()
    parties = pipeline.parties.by_role()
    effects: list[Effect] = []
    for spec in pipeline.components_in_order():
        task = job.tasks.get((spec.name, job.attempt, me))
        if task is None or task.state != WAITING:
            continue
        ready = all(
            (up, me) in effective and effective[(up, me)].state == SUCCESS for up in spec.upstream
        )
        if not ready:
            continue
        role = spec.roles_at(me)[0]
        effects.append(
            ToWorker(
                TaskRun(
                    job_id=job.job_id,
                    component=spec.name,
                    component_type=spec.type,
                    attempt=job.attempt,
                    role=role,
                    party_id=me,
                    parties=parties,
                    params=spec.params_for(role, me),
                    inputs=spec.inputs_as_strings(),
                    # No worker reads it back (they record it only): a dead field, kept
                    # filled within this version (docs/scheduler.md, "Dead contract").
                    pipeline_yaml=job.pipeline_yaml,
                ),
                tag=TAG_TASK_RUN,
                component=spec.name,
                attempt=job.attempt,
            )
        )
        task.state, task.started_at, task.updated_at = RUNNING, now, now
        effects.append(Counted("task_dispatched"))
    return effects


def _ended(job: Job, now: datetime) -> Counted:
    ended = job.ended_at or now
    return Counted("job_ended", job.state, max((ended - job.created_at).total_seconds(), 0.0))


def _end(
    job: Job, policy: Policy, now: datetime, state: str, reason: str, *, notify: bool = True
) -> list[Effect]:
    """The job ends here as `state`: open tasks are canceled (this party's running ones get
    task.cancel); at the initiator (with `notify`) every other party gets job.stop."""
    me = policy.party_id
    job.move(state, now)
    job.reason, job.ended_at = reason, now
    effects: list[Effect] = []
    for task in job.tasks_of(attempt=job.attempt):
        if task.state not in OPEN:
            continue
        if task.party_id == me and task.state == RUNNING:
            effects.append(
                ToWorker(
                    TaskCancel(
                        job_id=job.job_id,
                        component=task.component,
                        attempt=task.attempt,
                        reason=reason[:MAX_REASON],
                    ),
                    tag=TAG_TASK_CANCEL,
                    component=task.component,
                    attempt=task.attempt,
                )
            )
        task.state, task.ended_at, task.updated_at = CANCELED, now, now
    if notify and job.initiator == me and state in (FAILED, CANCELED):
        for party in job.others(me):
            effects.append(
                ToParty(
                    party.party_id,
                    JobStop(
                        job_id=job.job_id,
                        attempt=job.attempt,
                        state=FAILED if state == FAILED else CANCELED,
                        reason=reason[:MAX_REASON],
                    ),
                    tag=TAG_STOP,
                    attempt=job.attempt,
                )
            )
    effects.append(_ended(job, now))
    return effects


def _succeed(job: Job, policy: Policy, now: datetime) -> list[Effect]:
    job.move(SUCCESS, now)
    job.reason, job.ended_at = None, now
    effects: list[Effect] = [
        ToParty(
            party.party_id,
            JobEnd(job_id=job.job_id, party_id=policy.party_id, attempt=job.attempt, at=now),
            tag=TAG_END,
            attempt=job.attempt,
        )
        for party in job.others(policy.party_id)
    ]
    effects.append(_ended(job, now))
    return effects


def _record_task(job: Job, event: TaskReported, now: datetime) -> Task | None:
    """Record a task's new state; None when nothing changed (an unknown task, a stale or
    repeated report)."""
    task = job.tasks.get((event.component, event.attempt, event.party_id))
    if task is None:
        return None
    state = event.state
    if task.state == state == RUNNING:
        if event.progress is None or event.progress == task.progress:
            return None
        task.progress, task.updated_at = event.progress, now
        return task
    if TASK_RANK[state] <= TASK_RANK[task.state]:
        return None
    task.state, task.updated_at, task.reason = state, now, event.reason
    if event.progress is not None:
        task.progress = event.progress
    if event.outputs is not None:
        task.outputs = dict(event.outputs)
    if task.started_at is None:
        task.started_at = now
    if state in TERMINAL:
        task.ended_at = now
        if state == SUCCESS:
            task.progress = 1.0
    return task


def _task_update(
    job: Job, event: Event, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect]:
    """Initiator: a task of any party changed; fail the job, go on, or declare success."""
    assert isinstance(event, TaskReported)
    task = _record_task(job, event, now)
    if task is None or job.state != RUNNING or event.attempt != job.attempt:
        return []
    if event.state in (FAILED, CANCELED):
        why = event.reason or "no reason given"
        return _end(
            job,
            policy,
            now,
            FAILED,
            f"party {event.party_id}: component {event.component} {event.state}: {why}",
        )
    effects: list[Effect] = []
    if event.state == SUCCESS:
        if event.party_id == policy.party_id:
            effects += _dispatch_ready(job, pipeline_of(job), policy, now)
        if job.all_succeeded():
            effects += _succeed(job, policy, now)
    return effects


def _fail_silent_party(job: Job, policy: Policy, now: datetime) -> list[Effect] | None:
    """Initiator: end the job when a party left the proposal unanswered, or stopped talking
    while the job runs, for longer than party_timeout_s."""
    timeout = policy.party_timeout_s
    for party in job.others(policy.party_id):
        if job.state == WAITING and party.state == WAITING:
            if (now - policy.since(job.created_at)).total_seconds() > timeout:
                party.state = FAILED
                party.reason = f"no answer to the proposal within {timeout:g} s"
                return [
                    Counted("party_timeout", "proposal"),
                    *_end(
                        job,
                        policy,
                        now,
                        FAILED,
                        f"party {party.party_id} did not answer the job proposal within "
                        f"{timeout:g} s (party_timeout_s)",
                    ),
                ]
        elif job.state == RUNNING and party.state == RUNNING:
            silent = (now - policy.since(party.last_seen or job.updated_at)).total_seconds()
            if silent > timeout:
                party.reason = f"silent for {silent:.0f} s"
                return [
                    Counted("party_timeout", "running"),
                    *_end(
                        job,
                        policy,
                        now,
                        FAILED,
                        f"party {party.party_id} sent nothing for {silent:.0f} s "
                        f"(party_timeout_s={timeout:g}): its services may be down or its "
                        "link cut",
                    ),
                ]
    return None


def _fail_overdue_task(
    job: Job, policy: Policy, now: datetime, pipeline_of: Pipelines
) -> list[Effect] | None:
    """Initiator: end the job when a task of the current attempt, at any party, has not
    finished within its component's `timeout_s` (else task_timeout_s).

    A participant reports a task only when it ends or its progress moves, so a remote task's
    clock starts when its inputs had all succeeded there (as reported here): a task whose
    worker never picked it up is overdue too.
    """
    if job.state != RUNNING:
        return None
    pipeline = pipeline_of(job)
    specs = pipeline.components_in_order()
    if not policy.task_timeout_s and all(spec.timeout_s is None for spec in specs):
        return None  # no limit anywhere
    effective = job.effective()
    for task in job.tasks_of(attempt=job.attempt):
        if task.state not in OPEN:
            continue
        spec = pipeline.component(task.component)
        limit = spec.timeout_s or policy.task_timeout_s
        if not limit:
            continue
        since = _task_clock_start(task, spec.upstream, effective)
        if since is None:
            continue
        if (now - policy.since(since)).total_seconds() <= limit:
            continue
        setting = "timeout_s in the pipeline" if spec.timeout_s else "task_timeout_s"
        return [
            Counted("task_timeout", task.component),
            *_end(
                job,
                policy,
                now,
                FAILED,
                f"component {task.component} at party {task.party_id} did not finish within "
                f"{limit:g} s ({setting}): it may hang",
            ),
        ]
    return None


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


def _fail_silent_initiator(job: Job, policy: Policy, now: datetime) -> list[Effect] | None:
    """Participant: end this party's side of the job when nothing of it has come from the
    initiator for party_timeout_s. Only the initiator could end the job otherwise, so a site
    that died for good would leave the job, and the tasks holding resources here, running
    forever."""
    timeout = policy.party_timeout_s
    initiator = job.parties.get(job.initiator)
    heard = initiator.last_seen if initiator is not None else None
    silent = (now - policy.since(heard or job.created_at)).total_seconds()
    if silent <= timeout:
        return None
    reason = (
        f"no word from initiator party {job.initiator} for {silent:.0f} s "
        f"(party_timeout_s={timeout:g}): its services may be down or its link cut"
    )
    if initiator is not None:
        initiator.reason = f"silent for {silent:.0f} s"
    effects: list[Effect] = [Counted("party_timeout", "initiator")]
    # If the initiator is alive and only its messages are lost (or it comes back), these
    # reports make it fail the job with this reason at once, not after a timeout of its own.
    return effects + _end_and_tell_initiator(job, policy, now, CANCELED, reason)


def _end_and_tell_initiator(
    job: Job, policy: Policy, now: datetime, task_state: str, reason: str
) -> list[Effect]:
    """Participant: end this party's side as failed, and report each of its open tasks to the
    initiator as `task_state` with `reason` (the initiator then fails the job for everyone)."""
    open_tasks = [
        t for t in job.tasks_of(attempt=job.attempt, party_id=policy.party_id) if t.state in OPEN
    ]
    effects = _end(job, policy, now, FAILED, reason)
    for task in open_tasks:
        task.reason = reason
        task.status_seq += 1
        effects.append(
            ToParty(
                job.initiator,
                JobTaskReport(
                    job_id=job.job_id,
                    party_id=policy.party_id,
                    attempt=task.attempt,
                    component=task.component,
                    task_state=CANCELED if task_state == CANCELED else FAILED,
                    reason=reason[:MAX_REASON],
                    at=now,
                ),
                tag=TAG_STATUS,
                attempt=task.attempt,
                component=task.component,
                seq=task.status_seq,
            )
        )
    return effects


def _heartbeats(job: Job, policy: Policy, now: datetime, recipients: list[str]) -> list[Effect]:
    """A heartbeat to each of `recipients` when one is due; one counter numbers them per job
    (the destination tells the initiator's beats to different parties apart)."""
    if not recipients:
        return []
    due = job.heartbeat_at is None or (
        (now - job.heartbeat_at).total_seconds() >= policy.heartbeat_every_s
    )
    if not due:
        return []
    job.heartbeat_seq += 1
    job.heartbeat_at = now
    effects: list[Effect] = []
    for party_id in recipients:
        effects.append(
            ToParty(
                party_id,
                JobHeartbeat(
                    job_id=job.job_id,
                    party_id=policy.party_id,
                    attempt=job.attempt,
                    state=job.state,  # type: ignore[arg-type]  # an open JobState value
                    at=now,
                ),
                tag=TAG_HEARTBEAT,
                attempt=job.attempt,
                seq=job.heartbeat_seq,
            )
        )
        effects.append(Counted("heartbeat_sent"))
    return effects
