"""SqlJobRepository: jobs in the scheduler's tables (models.py), through a caller's Session.

Supports PostgreSQL (the stack) and SQLite (the embedded default). `get` costs three SELECTs
(the job, locked with `lock`, its parties, its tasks); `save` copies onto the loaded rows
only the fields that changed, so an unchanged row issues no UPDATE. Nothing here commits:
the unit of work is the caller's transaction. On PostgreSQL `get(lock=True)` is SELECT ...
FOR UPDATE on the job's row; on SQLite every write transaction already holds the database's
write lock from its first statement (BEGIN IMMEDIATE, fedbus.sql_inbox.make_engine).
"""

from __future__ import annotations

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


@dataclass
class _Rows:
    job: models.Job
    parties: dict[str, models.JobParty] = field(default_factory=dict)
    tasks: dict[TaskKey, models.Task] = field(default_factory=dict)


def _copy(target: Any, source: Any, names: tuple[str, ...]) -> None:
    # Only changed values are set: an attribute set to an equal value can still count as a
    # change, and each changed row costs an UPDATE at the commit.
    for name in names:
        value = getattr(source, name)
        if getattr(target, name) != value:
            setattr(target, name, dict(value) if isinstance(value, dict) else value)


class SqlJobRepository(JobRepository):
    def __init__(self, session: Session) -> None:
        self.session = session
        self._rows: dict[str, _Rows] = {}
        self._absent: set[str] = set()
        """Ids `get` found no job for in this unit: `add` needs no second look."""

    def get(self, job_id: str, *, lock: bool = False) -> Job | None:
        row = store.lock_job(self.session, job_id) if lock else store.get_job(self.session, job_id)
        if row is None:
            self._absent.add(job_id)
            return None
        rows = _Rows(row)
        rows.parties = {
            p.party_id: p
            for p in self.session.scalars(
                sa.select(models.JobParty)
                .where(models.JobParty.job_id == job_id)
                .execution_options(populate_existing=True)
            )
        }
        rows.tasks = {
            (t.component, t.attempt, t.party_id): t
            for t in self.session.scalars(
                sa.select(models.Task)
                .where(models.Task.job_id == job_id)
                .execution_options(populate_existing=True)
            )
        }
        self._rows[job_id] = rows
        return _to_domain(rows)

    def add(self, job: Job) -> None:
        if job.job_id in self._rows or (
            job.job_id not in self._absent and store.get_job(self.session, job.job_id) is not None
        ):
            raise JobExists(job.job_id)
        self._absent.discard(job.job_id)
        row = models.Job(job_id=job.job_id)
        _copy(row, job, _JOB_FIELDS)
        self.session.add(row)
        self._rows[job.job_id] = _Rows(row)
        self.save(job)

    def save(self, job: Job) -> None:
        rows = self._rows.get(job.job_id)
        if rows is None:
            raise KeyError(f"job {job.job_id} was not loaded or added by this repository")
        _copy(rows.job, job, _JOB_FIELDS)
        for party_id, party in job.parties.items():
            party_row = rows.parties.get(party_id)
            if party_row is None:
                party_row = rows.parties[party_id] = models.JobParty(
                    job_id=job.job_id, party_id=party_id, roles=",".join(party.roles)
                )
                self.session.add(party_row)
            _copy(party_row, party, _PARTY_FIELDS)
        for key, task in job.tasks.items():
            task_row = rows.tasks.get(key)
            if task_row is None:
                task_row = rows.tasks[key] = models.Task(
                    job_id=job.job_id,
                    component=task.component,
                    attempt=task.attempt,
                    party_id=task.party_id,
                )
                self.session.add(task_row)
            _copy(task_row, task, _TASK_FIELDS)

    def row(self, job_id: str) -> models.Job:
        """The ORM row of a job this repository loaded or added (for the read models)."""
        return self._rows[job_id].job

    def open_job_ids(self) -> list[str]:
        return store.jobs_in_states(self.session, OPEN)


def _to_domain(rows: _Rows) -> Job:
    row = rows.job
    return Job(
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
        parties={
            p.party_id: Party(
                party_id=p.party_id,
                roles=tuple(r for r in p.roles.split(",") if r),
                state=p.state,
                last_seen=p.last_seen,
                reason=p.reason,
            )
            for p in rows.parties.values()
        },
        tasks={
            key: Task(
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
            for key, t in rows.tasks.items()
        },
    )
