"""Alembic environment: runs the serving registry's revisions on the connection `upgrade_head`
passes."""

from __future__ import annotations

from fedcommon.migrations import run_env

from fedserving.models import metadata

run_env(metadata)
