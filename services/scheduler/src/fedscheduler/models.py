"""The scheduler's tables (SQLAlchemy 2): jobs, the parties of each job, tasks, grants.

Created and changed only by the Alembic migrations in `migrations/` (`upgrade head` at start-up);
these models must match the latest revision (tests/scheduler checks that they do). Table names
start with `scheduler_` because a party's services may share one database.

States (`JobState` / `TaskState` in fedschemas.payloads): waiting, running, success, failed,
canceled. A task row is one component at one party in one attempt; the initiator also keeps
the rows of the other parties' tasks, from their job.status reports, to decide when the job is
done. The effective state of a component at a party is that of its row with the highest
attempt: a rerun adds rows only for the components it runs again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The states are the domain's (one place); re-exported for the read side.
from fedscheduler.domain import CANCELED, FAILED, RUNNING, SUCCESS, TERMINAL, WAITING

__all__ = [
    "CANCELED",
    "FAILED",
    "RUNNING",
    "SUCCESS",
    "TERMINAL",
    "WAITING",
    "Base",
    "Grant",
    "Job",
    "JobParty",
    "Task",
    "UtcDateTime",
]


class UtcDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime in and out, on PostgreSQL (timestamptz) and SQLite (which keeps
    no time zone: values are stored as UTC and read back as UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: the scheduler stores UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData()


class Job(Base):
    """One job as this party sees it (the initiator and every participant keep one row)."""

    __tablename__ = "scheduler_jobs"

    job_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    initiator: Mapped[str] = mapped_column(sa.String(64))
    pipeline_yaml: Mapped[str] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    attempt: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    """When this party last sent a heartbeat for the job (participants)."""
    heartbeat_seq: Mapped[int] = mapped_column(sa.Integer, default=0)
    """Heartbeats sent so far; numbers them so each has its own message id."""


class JobParty(Base):
    """A party of a job: its roles, its answer to the proposal, when it was last heard of."""

    __tablename__ = "scheduler_job_parties"

    job_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("scheduler_jobs.job_id", ondelete="CASCADE"), primary_key=True
    )
    party_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    roles: Mapped[str] = mapped_column(sa.String(64))
    """Comma-separated roles, e.g. "guest" or "guest,arbiter"."""
    state: Mapped[str] = mapped_column(sa.String(16))
    """waiting: proposed, no answer yet; running: accepted; failed: refused or went silent."""
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class Task(Base):
    """One component of a job at one party in one attempt."""

    __tablename__ = "scheduler_tasks"

    job_id: Mapped[str] = mapped_column(
        sa.String(128), sa.ForeignKey("scheduler_jobs.job_id", ondelete="CASCADE"), primary_key=True
    )
    component: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    attempt: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    party_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    component_type: Mapped[str] = mapped_column(sa.String(128))
    state: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    progress: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    outputs: Mapped[dict[str, str] | None] = mapped_column(sa.JSON, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status_seq: Mapped[int] = mapped_column(sa.Integer, default=0)
    """Status reports forwarded to the initiator so far; numbers their message ids."""


class Grant(Base):
    """This party lets jobs initiated by `grantee` read `table_name` into these component types."""

    __tablename__ = "scheduler_grants"
    __table_args__ = (sa.UniqueConstraint("table_name", "grantee", name="uq_scheduler_grant"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(sa.String(256))
    grantee: Mapped[str] = mapped_column(sa.String(64))
    component_types: Mapped[list[str]] = mapped_column(sa.JSON)
    """Component types the table's data may flow into; ["*"] for any."""
    params: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    """{component type: {may_set, bounds}} the grantee's pipelines may set for this party
    (fedflow.policy.ParamGrant); None: the grant names no params, the policy alone limits."""
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime)
