"""Alembic environment: runs the scheduler's revisions on the connection `upgrade_head` passes."""

from __future__ import annotations

from fedcommon.migrations import run_env

from fedscheduler.models import Base

run_env(Base.metadata)
