"""Jobs, job parties, tasks and grants.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _job_key() -> sa.Column[object]:
    """The job a party or task row belongs to (goes with the job)."""
    return sa.Column(
        "job_id",
        sa.String(128),
        sa.ForeignKey("scheduler_jobs.job_id", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
    op.create_table(
        "scheduler_jobs",
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("initiator", sa.String(64), nullable=False),
        sa.Column("pipeline_yaml", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _time("ended_at", nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        _time("heartbeat_at", nullable=True),
        sa.Column("heartbeat_seq", sa.Integer, nullable=False),
    )
    op.create_index("ix_scheduler_jobs_state", "scheduler_jobs", ["state"])
    op.create_table(
        "scheduler_job_parties",
        _job_key(),
        sa.Column("party_id", sa.String(64), primary_key=True),
        sa.Column("roles", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _time("last_seen", nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_table(
        "scheduler_tasks",
        _job_key(),
        sa.Column("component", sa.String(128), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("party_id", sa.String(64), primary_key=True),
        sa.Column("component_type", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("progress", sa.Float, nullable=True),
        sa.Column("outputs", sa.JSON, nullable=True),
        _time("started_at", nullable=True),
        _time("ended_at", nullable=True),
        _time("updated_at"),
        sa.Column("status_seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "scheduler_grants",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("table_name", sa.String(256), nullable=False),
        sa.Column("grantee", sa.String(64), nullable=False),
        sa.Column("component_types", sa.JSON, nullable=False),
        _time("granted_at"),
        sa.UniqueConstraint("table_name", "grantee", name="uq_scheduler_grant"),
    )


def downgrade() -> None:
    op.drop_table("scheduler_grants")
    op.drop_table("scheduler_tasks")
    op.drop_table("scheduler_job_parties")
    op.drop_index("ix_scheduler_jobs_state", table_name="scheduler_jobs")
    op.drop_table("scheduler_jobs")
