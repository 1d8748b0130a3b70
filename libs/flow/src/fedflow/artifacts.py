"""ArtifactStore: the outputs of a party's tasks, where downstream tasks at that party read them.

An output is a `Table` (npz bytes, no pickle) stored under (job, component, party, role,
output name). Only the party that produced it reads it: outputs never cross to other parties (what
crosses is only what a component's protocol declares). A rerun overwrites the earlier attempt's
output; `attempt` records which attempt wrote it. The reference a task reports in task.status
is "<component>.<output>", the form pipeline inputs use.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fedflow.db import flow_metadata
from fedflow.tables import Table

artifacts_table = sa.Table(
    "flow_artifacts",
    flow_metadata,
    sa.Column("job_id", sa.String(256), primary_key=True),
    sa.Column("component", sa.String(128), primary_key=True),
    sa.Column("party_id", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


class ArtifactMissing(LookupError):
    """An input refers to an output this party does not have."""


class ArtifactStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _where(
        self, job_id: str, component: str, party_id: str, role: str, name: str
    ) -> sa.ColumnElement[bool]:
        c = artifacts_table.c
        return sa.and_(
            c.job_id == job_id,
            c.component == component,
            c.party_id == party_id,
            c.role == role,
            c.name == name,
        )

    def put(
        self,
        job_id: str,
        component: str,
        party_id: str,
        role: str,
        name: str,
        table: Table,
        attempt: int,
    ) -> str:
        """Store an output; returns its reference "<component>.<name>"."""
        data = table.to_bytes()
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(artifacts_table).where(
                    self._where(job_id, component, party_id, role, name)
                )
            )
            conn.execute(
                sa.insert(artifacts_table),
                {
                    "job_id": job_id,
                    "component": component,
                    "party_id": party_id,
                    "role": role,
                    "name": name,
                    "attempt": attempt,
                    "kind": "table",
                    "data": data,
                    "created_at": datetime.now(UTC),
                },
            )
        return f"{component}.{name}"

    def get(self, job_id: str, party_id: str, role: str, ref: str) -> Table:
        """The output `ref` ("<component>.<output>") of job `job_id` at `party_id` as `role`."""
        component, _, name = ref.partition(".")
        query = sa.select(artifacts_table.c.data).where(
            self._where(job_id, component, party_id, role, name)
        )
        with self.engine.connect() as conn:
            data = conn.execute(query).scalar_one_or_none()
        if data is None:
            raise ArtifactMissing(
                f"job {job_id}: party {party_id} has no output {ref} (did {component} succeed?)"
            )
        return Table.from_bytes(data)

    def exists(self, job_id: str, party_id: str, role: str, ref: str) -> bool:
        component, _, name = ref.partition(".")
        query = sa.select(artifacts_table.c.attempt).where(
            self._where(job_id, component, party_id, role, name)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None
