"""Data access for the scheduler: the engine, sessions, rows by key, grants (the read models
are in queries.py, jobs as the domain sees them in sql_job_repository.py).

Handlers get a Session (the inbox's transaction, or one the RPC server or timer opens) and use
these functions; nothing here commits. `lock_job` takes the job's row lock on PostgreSQL
(SELECT ... FOR UPDATE) so the consumer thread and the timer thread never interleave their
changes to one job; on SQLite every write transaction already holds the database's write lock
from its first statement (BEGIN IMMEDIATE, fedbus.sql_inbox.make_engine).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fedbus.sql_inbox import make_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from fedscheduler.migrations import upgrade_head
from fedscheduler.models import SUCCESS, Grant, Job, JobParty, Task

ANY_COMPONENT = "*"


def open_database(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """The engine for `url` (SQLite file, in-memory, or PostgreSQL), migrated to head."""
    engine = make_engine(url)
    upgrade_head(engine)
    return engine, sessionmaker(bind=engine, expire_on_commit=False)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- jobs -----------------------------------------------------------------------------------


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


# Namespace of the scheduler's advisory locks (pg_advisory_xact_lock(namespace, key)).
_CREATE_LOCK_NAMESPACE = 0x6A6F62  # "job"


def hold_job_creation(session: Session, job_id: str) -> None:
    """Serialize with any other transaction creating `job_id` (PostgreSQL: a transaction-scoped
    advisory lock on the id; released at commit or rollback). A submit takes it before it
    publishes its proposal, and a message about a job not found here takes it before looking
    again: an answer that comes back before the submit committed (the proposal is published
    inside the submit's transaction) waits for that commit instead of finding no job and being
    dead-lettered. SQLite needs none: a write transaction holds the database's write lock from
    its first statement, so the message's transaction cannot start before the submit ends."""
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(
        sa.text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:job_id))"),
        {"namespace": _CREATE_LOCK_NAMESPACE, "job_id": job_id},
    )


def lock_job(session: Session, job_id: str) -> Job | None:
    """The job row, locked for this transaction (PostgreSQL); None if there is no such job."""
    return session.scalars(
        sa.select(Job)
        .where(Job.job_id == job_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def job_parties(session: Session, job_id: str) -> list[JobParty]:
    return list(
        session.scalars(
            sa.select(JobParty).where(JobParty.job_id == job_id).order_by(JobParty.party_id)
        )
    )


def job_party(session: Session, job_id: str, party_id: str) -> JobParty | None:
    return session.get(JobParty, (job_id, party_id))


def jobs_in_states(session: Session, states: Iterable[str]) -> list[str]:
    return list(
        session.scalars(
            sa.select(Job.job_id).where(Job.state.in_(list(states))).order_by(Job.created_at)
        )
    )


# --- tasks ----------------------------------------------------------------------------------


def get_task(
    session: Session, job_id: str, component: str, attempt: int, party_id: str
) -> Task | None:
    return session.get(Task, (job_id, component, attempt, party_id))


def tasks_of(
    session: Session,
    job_id: str,
    *,
    attempt: int | None = None,
    party_id: str | None = None,
) -> list[Task]:
    query = sa.select(Task).where(Task.job_id == job_id)
    if attempt is not None:
        query = query.where(Task.attempt == attempt)
    if party_id is not None:
        query = query.where(Task.party_id == party_id)
    query = query.order_by(Task.attempt, Task.party_id, Task.component)
    return list(session.scalars(query))


def effective_tasks(session: Session, job_id: str) -> dict[tuple[str, str], Task]:
    """(component, party) -> its row of the highest attempt: the state that counts now."""
    latest: dict[tuple[str, str], Task] = {}
    for task in tasks_of(session, job_id):
        key = (task.component, task.party_id)
        if key not in latest or task.attempt > latest[key].attempt:
            latest[key] = task
    return latest


def all_succeeded(session: Session, job_id: str) -> bool:
    tasks = effective_tasks(session, job_id)
    return bool(tasks) and all(t.state == SUCCESS for t in tasks.values())


# --- grants ---------------------------------------------------------------------------------


def add_grant(
    session: Session,
    table: str,
    grantee: str,
    component_types: list[str],
    now: datetime,
    params: dict[str, Any] | None = None,
) -> Grant:
    """Grant `table` to `grantee` for `component_types`, adding to an existing grant.

    `params` ({component type: {may_set, bounds}}) replace the grant's params of the types
    they name; the grant's other types keep theirs."""
    grant = session.scalars(
        sa.select(Grant).where(Grant.table_name == table, Grant.grantee == grantee)
    ).first()
    if grant is None:
        grant = Grant(
            table_name=table,
            grantee=grantee,
            component_types=sorted(set(component_types)),
            params=params or None,
            granted_at=now,
        )
        session.add(grant)
    else:
        grant.component_types = sorted(set(grant.component_types) | set(component_types))
        if params:
            grant.params = {**(grant.params or {}), **params}
        grant.granted_at = now
    session.flush()
    return grant


def grants(
    session: Session, *, table: str | None = None, grantee: str | None = None
) -> list[Grant]:
    query = sa.select(Grant)
    if table is not None:
        query = query.where(Grant.table_name == table)
    if grantee is not None:
        query = query.where(Grant.grantee == grantee)
    return list(session.scalars(query.order_by(Grant.table_name, Grant.grantee)))


def granted_types(session: Session, table: str, grantee: str) -> set[str]:
    return {t for g in grants(session, table=table, grantee=grantee) for t in g.component_types}


def granted_params(session: Session, table: str, grantee: str) -> dict[str, Any] | None:
    """The params of the grant of `table` to `grantee` (None: it names none, or no grant)."""
    merged: dict[str, Any] = {}
    for grant in grants(session, table=table, grantee=grantee):
        merged.update(grant.params or {})
    return merged or None
