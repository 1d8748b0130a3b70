"""Alembic migrations of the serving registry (fedcommon.migrations; version table
`serving_alembic_version`). New revision:
`alembic -c services/serving/alembic.ini revision -m ...`."""

from __future__ import annotations

from fedcommon.migrations import Migrations

MIGRATIONS = Migrations(__file__, "serving")
