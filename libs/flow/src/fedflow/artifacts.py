"""ArtifactStore: the outputs of a party's tasks, where downstream tasks at that party read them.

An output is a `Table` or a `ModelArtifact` (a model that is not a table: a JSON document plus
named arrays), stored as npz bytes (no pickle) under (job, component, party, role, output
name), its `kind` ("table" or "model") in the row. Only the party that produced it reads it:
outputs never cross to other parties (what crosses is only what a component's protocol
declares). A rerun overwrites the earlier attempt's output; `attempt` records which attempt
wrote it. The reference a task reports in task.status is "<component>.<output>", the form
pipeline inputs use.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from sqlalchemy.engine import Engine

from fedflow.db import flow_metadata, task_columns
from fedflow.tables import Table

artifacts_table = sa.Table(
    "flow_artifacts",
    flow_metadata,
    *task_columns("job_id", "component", "party_id", "role", primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


class ArtifactMissing(LookupError):
    """An input refers to an output this party does not have."""


MODEL_FORMAT: Final = "fedflow.model.v1"
_DOCUMENT: Final = "__document__"
_ARRAY_PREFIX: Final = "array/"


@dataclass(frozen=True)
class ModelArtifact:
    """A model that is not a table: a JSON document (structure, names, hyper-parameters, e.g. a
    tree's splits) and named numeric arrays (weights, thresholds). Stored as one npz: the
    arrays (object arrays refused: no pickle) and the document as UTF-8 JSON bytes."""

    document: Mapping[str, Any]
    arrays: Mapping[str, NDArray[Any]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        text = json.dumps(
            {"format": MODEL_FORMAT, "document": self.document}, sort_keys=True, allow_nan=False
        )
        parts: dict[str, NDArray[Any]] = {_DOCUMENT: np.frombuffer(text.encode(), dtype=np.uint8)}
        for name, array in self.arrays.items():
            value = np.asarray(array)
            if value.dtype.hasobject:
                raise TypeError(f"model array {name!r} holds Python objects")
            parts[_ARRAY_PREFIX + name] = value
        out = io.BytesIO()
        np.savez(out, **parts)  # type: ignore[arg-type]
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelArtifact:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            head = json.loads(npz[_DOCUMENT].tobytes().decode())
            if head.get("format") != MODEL_FORMAT:
                raise ValueError(f"not a {MODEL_FORMAT} model")
            arrays = {
                key[len(_ARRAY_PREFIX) :]: npz[key]
                for key in npz.files
                if key.startswith(_ARRAY_PREFIX)
            }
        return cls(document=head["document"], arrays=arrays)


Artifact = Table | ModelArtifact
"""What a component outputs by name."""


def _encode(artifact: Artifact) -> tuple[str, bytes]:
    if isinstance(artifact, ModelArtifact):
        return "model", artifact.to_bytes()
    return "table", artifact.to_bytes()


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
        table: Artifact,
        attempt: int,
    ) -> str:
        """Store an output (a Table or a ModelArtifact); returns its reference
        "<component>.<name>"."""
        kind, data = _encode(table)
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
                    "kind": kind,
                    "data": data,
                    "created_at": datetime.now(UTC),
                },
            )
        return f"{component}.{name}"

    def get(self, job_id: str, party_id: str, role: str, ref: str) -> Table:
        """The table output `ref` ("<component>.<output>") of job `job_id` at `party_id` as
        `role` (TypeError for a model: `get_artifact`)."""
        found = self.get_artifact(job_id, party_id, role, ref)
        if not isinstance(found, Table):
            raise TypeError(f"job {job_id}: output {ref} is a model, not a table")
        return found

    def get_artifact(self, job_id: str, party_id: str, role: str, ref: str) -> Artifact:
        """The output `ref`, a Table or a ModelArtifact as it was stored."""
        component, _, name = ref.partition(".")
        query = sa.select(artifacts_table.c.kind, artifacts_table.c.data).where(
            self._where(job_id, component, party_id, role, name)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise ArtifactMissing(
                f"job {job_id}: party {party_id} has no output {ref} (did {component} succeed?)"
            )
        if row.kind == "model":
            return ModelArtifact.from_bytes(row.data)
        return Table.from_bytes(row.data)

    def exists(self, job_id: str, party_id: str, role: str, ref: str) -> bool:
        component, _, name = ref.partition(".")
        query = sa.select(artifacts_table.c.attempt).where(
            self._where(job_id, component, party_id, role, name)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None
