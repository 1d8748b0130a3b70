"""Alembic migrations of the gateway's table (fedmq_gateway_finished: the replay guard).

Applied at the start of every service that uses these tables (fedcommon.migrations);
a new revision goes in versions/ (`MIGRATIONS.new_revision("...")` writes the file, then
upgrade and downgrade are written by hand; the tables' definitions must match the result,
which tests/deploy/test_migrations.py checks).
"""

from fedcommon.migrations import Migrations

MIGRATIONS = Migrations(__file__, "gateway")
