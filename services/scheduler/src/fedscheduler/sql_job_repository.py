"""SqlJobRepository: jobs in the scheduler's tables (models.py), through a caller's Session.

Supports PostgreSQL (the stack) and SQLite (the embedded default). `get` costs three SELECTs
(the job, locked with `lock`, its parties, its tasks). Nothing here commits: the unit of work
is the caller's transaction. On PostgreSQL `get(lock=True)` is SELECT ... FOR UPDATE on the
job's row; on SQLite every write transaction already holds the database's write lock from its
first statement (BEGIN IMMEDIATE, fedbus.sql_inbox.make_engine).

The job's own row is an ORM object (the read models take it as it is); party and task rows
are read and written as plain rows (SQLAlchemy Core): a job has dozens of them, every message
loads them all, and building and tracking ORM objects for each cost more than the rest of a
handler. `save` writes only the rows whose values changed (one UPDATE each, by primary key)
and inserts new ones in one statement.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fedscheduler import models, store
from fedscheduler.domain import OPEN, Job, Party, Task, TaskKey
from fedscheduler.job_repository import JobExists, JobRepository

_JOB_FIELDS = (
    "initiator",
    "pipeline_yaml",
    "state",
    "attempt",
    "created_at",
    "updated_at",
    "ended_at",
    "reason",
    "heartbeat_at",
    "heartbeat_seq",
)
_PARTY_FIELDS = ("state", "last_seen", "reason")
_TASK_FIELDS = (
    "component_type",
    "state",
    "reason",
    "progress",
    "outputs",
    "started_at",
    "ended_at",
    "updated_at",
    "status_seq",
)
_PARTIES = models.Base.metadata.tables["scheduler_job_parties"]
_TASKS = models.Base.metadata.tables["scheduler_tasks"]


@dataclass
class _Stored:
    """What a unit of work read or wrote: the job's row, and the values of each party and
    task row as stored (to write only what changed)."""

    job: models.Job
    parties: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    tasks: dict[TaskKey, tuple[Any, ...]] = field(default_factory=dict)


# A record's stored fields as one tuple (attrgetter: one C call, not a loop per field). The
# domain never changes a task's `outputs` in place (it assigns a new dict), so comparing the
# tuples finds every change.
_party_values = operator.attrgetter(*_PARTY_FIELDS)
_task_values = operator.attrgetter(*_TASK_FIELDS)


class SqlJobRepository(JobRepository):
    def __init__(self, session: Session) -> None:
        self.session = session
        self._stored: dict[str, _Stored] = {}
        self._absent: set[str] = set()
        """Ids `get` found no job for in this unit: `add` needs no second look."""

    def get(self, job_id: str, *, lock: bool = False) -> Job | None:
        row = store.lock_job(self.session, job_id) if lock else store.get_job(self.session, job_id)
        if row is None:
            self._absent.add(job_id)
            return None
        stored = _Stored(row)
        job = Job(
            job_id=row.job_id,
            initiator=row.initiator,
            pipeline_yaml=row.pipeline_yaml,
            state=row.state,
            attempt=row.attempt,
            created_at=row.created_at,
            updated_at=row.updated_at,
            ended_at=row.ended_at,
            reason=row.reason,
            heartbeat_at=row.heartbeat_at,
            heartbeat_seq=row.heartbeat_seq or 0,
        )
        parties = self.session.execute(sa.select(_PARTIES).where(_PARTIES.c.job_id == job_id))
        for p in parties.all():
            job.parties[p.party_id] = Party(
                party_id=p.party_id,
                roles=tuple(r for r in p.roles.split(",") if r),
                state=p.state,
                last_seen=p.last_seen,
                reason=p.reason,
            )
            stored.parties[p.party_id] = (p.state, p.last_seen, p.reason)
        tasks = self.session.execute(sa.select(_TASKS).where(_TASKS.c.job_id == job_id))
        for t in tasks.all():
            task = Task(
                component=t.component,
                attempt=t.attempt,
                party_id=t.party_id,
                component_type=t.component_type,
                state=t.state,
                updated_at=t.updated_at,
                reason=t.reason,
                progress=t.progress,
                outputs=dict(t.outputs) if t.outputs is not None else None,
                started_at=t.started_at,
                ended_at=t.ended_at,
                status_seq=t.status_seq or 0,
            )
            job.tasks[task.key] = task
            stored.tasks[task.key] = _task_values(task)
        self._stored[job_id] = stored
        return job

    def add(self, job: Job) -> None:
        if job.job_id in self._stored or (
            job.job_id not in self._absent and store.get_job(self.session, job.job_id) is not None
        ):
            raise JobExists(job.job_id)
        self._absent.discard(job.job_id)
        row = models.Job(job_id=job.job_id)
        for name in _JOB_FIELDS:
            setattr(row, name, getattr(job, name))
        self.session.add(row)
        self.session.flush()  # the parties and tasks refer to it
        self._stored[job.job_id] = _Stored(row)
        self.save(job)

    def save(self, job: Job) -> None:
        stored = self._stored.get(job.job_id)
        if stored is None:
            raise KeyError(f"job {job.job_id} was not loaded or added by this repository")
        row = stored.job
        for name in _JOB_FIELDS:
            # Only changed values are set: each changed row costs an UPDATE at the flush.
            value = getattr(job, name)
            if getattr(row, name) != value:
                setattr(row, name, value)
        new_parties = []
        for party_id, party in job.parties.items():
            values = _party_values(party)
            before = stored.parties.get(party_id)
            if before is None:
                new_parties.append(
                    {"job_id": job.job_id, "party_id": party_id, "roles": ",".join(party.roles)}
                    | dict(zip(_PARTY_FIELDS, values, strict=True))
                )
            elif before != values:
                self.session.execute(
                    sa.update(_PARTIES)
                    .where(_PARTIES.c.job_id == job.job_id, _PARTIES.c.party_id == party_id)
                    .values(dict(zip(_PARTY_FIELDS, values, strict=True)))
                )
            stored.parties[party_id] = values
        new_tasks = []
        for key, task in job.tasks.items():
            values = _task_values(task)
            before = stored.tasks.get(key)
            if before is None:
                new_tasks.append(
                    {
                        "job_id": job.job_id,
                        "component": task.component,
                        "attempt": task.attempt,
                        "party_id": task.party_id,
                    }
                    | dict(zip(_TASK_FIELDS, values, strict=True))
                )
            elif before != values:
                changed = {
                    name: value
                    for name, value, old in zip(_TASK_FIELDS, values, before, strict=True)
                    if value != old
                }
                self.session.execute(
                    sa.update(_TASKS)
                    .where(
                        _TASKS.c.job_id == job.job_id,
                        _TASKS.c.component == task.component,
                        _TASKS.c.attempt == task.attempt,
                        _TASKS.c.party_id == task.party_id,
                    )
                    .values(changed)
                )
            stored.tasks[key] = values
        if new_parties:
            self.session.execute(sa.insert(_PARTIES), new_parties)
        if new_tasks:
            self.session.execute(sa.insert(_TASKS), new_tasks)

    def row(self, job_id: str) -> models.Job:
        """The ORM row of a job this repository loaded or added (for the read models)."""
        return self._stored[job_id].job

    def open_job_ids(self) -> list[str]:
        return store.jobs_in_states(self.session, OPEN)
