"""The serving registry: models, services, lifecycle events.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from fedcommon.migrations import create_missing, drop_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The tables as this revision creates them (written out, not imported from fedserving.models,
# so later changes to the models do not rewrite history).
_meta = sa.MetaData()
_TABLES = (
    sa.Table(
        "serving_models",
        _meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner_party", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("algorithm", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(256), nullable=False),
        sa.Column("component", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("feature_names", sa.Text, nullable=False),
        sa.Column("weights", sa.LargeBinary, nullable=False),
        sa.Column("hosts", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("owner_party", "name", "version", name="uq_serving_models_version"),
    ),
    sa.Table(
        "serving_services",
        _meta,
        sa.Column("service_id", sa.String(128), primary_key=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("canary_version", sa.Integer, nullable=True),
        sa.Column("canary_percent", sa.Float, nullable=False),
        sa.Column("previous_version", sa.Integer, nullable=True),
        sa.Column("fallback", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
    ),
    sa.Table(
        "serving_events",
        _meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
    ),
)


def upgrade() -> None:
    create_missing(*_TABLES)


def downgrade() -> None:
    drop_tables(*_TABLES)
