"""Alembic migrations of the audit's tables (fedcommon.migrations; version table
`audit_alembic_version`). New revision: `alembic -c services/audit/alembic.ini revision -m ...`."""

from __future__ import annotations

from fedcommon.migrations import Migrations

MIGRATIONS = Migrations(__file__, "audit")
