"""Tree models are served too: `serving_models.artifact` holds a party's part of a
hetero_secureboost model (fedflow ModelArtifact bytes); NULL for hetero_lr, whose part is
`weights`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from fedcommon.migrations import has_column

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if has_column("serving_models", "artifact"):  # a create_all of this version made it
        return
    with op.batch_alter_table("serving_models") as batch:
        batch.add_column(sa.Column("artifact", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("serving_models") as batch:
        batch.drop_column("artifact")
