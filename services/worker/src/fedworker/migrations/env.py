"""Alembic environment of the worker tables (run through MIGRATIONS.upgrade_head).

No target metadata: revisions are written by hand, and tests/deploy/test_migrations.py
compares the migrated schema with the tables' definitions.
"""

from fedcommon.migrations import run_env

run_env(None)
