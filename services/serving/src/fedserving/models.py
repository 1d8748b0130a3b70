"""The serving registry's tables (PostgreSQL; SQLite standalone). Migrations: fedserving.migrations.

- `serving_models`: one row per published model version at this party: its own part of the
  model (feature names and weights, float64 bytes; a tree model's part as its fedflow
  ModelArtifact bytes in `artifact`), who published it (`owner_party`, the
  guest), the job and component it came from, and its state here.
- `serving_services`: a service id bound to a model's version, with an optional canary version
  and percentage, the version a rollback returns to, and the fallback when a host is silent.
- `serving_events`: every lifecycle action (publish, accept, delete, bind, canary, switch,
  rollback, unbind), append-only; `audited` says the party's audit service has it (the
  serving service forwards each event as a serving.event, fedserving.audit_events).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

models_table = sa.Table(
    "serving_models",
    metadata,
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
    sa.Column("artifact", sa.LargeBinary, nullable=True),
    sa.UniqueConstraint("owner_party", "name", "version", name="uq_serving_models_version"),
)

services_table = sa.Table(
    "serving_services",
    metadata,
    sa.Column("service_id", sa.String(128), primary_key=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("canary_version", sa.Integer, nullable=True),
    sa.Column("canary_percent", sa.Float, nullable=False),
    sa.Column("previous_version", sa.Integer, nullable=True),
    sa.Column("fallback", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
)

events_table = sa.Table(
    "serving_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("service_id", sa.String(128), nullable=False),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("audited", sa.Boolean, nullable=False, server_default=sa.false()),
)
