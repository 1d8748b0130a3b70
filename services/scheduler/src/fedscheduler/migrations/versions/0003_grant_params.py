"""Grants name the parameters they allow: `scheduler_grants.params`, {component type:
{may_set, bounds}} (fedflow.policy.ParamGrant); NULL for a grant that names none, which the
policy alone limits (every grant made before this revision).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scheduler_grants") as batch:
        batch.add_column(sa.Column("params", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scheduler_grants") as batch:
        batch.drop_column("params")
