"""A job's outputs at this party, read back for the party's own users (`fedmq job model|data`,
GET /api/v1/jobs/{job}/outputs): the data service's `job_outputs` and `job_output_rows` ops.

The workers keep every component's outputs in the party's database (fedflow.artifacts); only
this party's outputs are there, and only this party's users reach the data service (the
gateway's token-checked routes on the local topic), so nothing here crosses a site.

- `job_outputs` {job_id, component?}: each output of the job (of one component) with its role,
  kind and shape; a model (ModelArtifact) with its document and arrays, a weights table
  (hetero_lr / hetero_linr: one `weight` column) as {name: weight}. A data table's rows are not
  in it: they come a page at a time from
- `job_output_rows` {job_id, component, output, role?, offset, limit}: ids, columns, features
  and labels of rows [offset, offset + limit), so a table of any size travels in bounded
  answers (a bus frame holds one page); for text labels also `label_classes` (class k's name
  at index k), so that an export can write the labels as the data did.

Unknown jobs and components are refused as not_found, naming what this party has.
"""

from __future__ import annotations

import json
import math
from typing import Any, cast

import sqlalchemy as sa
from fedflow.artifacts import ArtifactStore, ModelArtifact, artifacts_table
from fedflow.tables import Table
from fedschemas.payloads import NAME_PATTERN
from pydantic import BaseModel, ConfigDict, Field, JsonValue

# fedworker.data registers these ops (importing this module when one is first asked for).
from fedworker.data import DataCommandError, PartyTables

MAX_ROWS_PER_PAGE = 5000
MAX_ANSWER_BYTES = 4 << 20
"""A model answer larger than this is refused (it would not fit a bus frame)."""
OUTPUT_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class JobOutputsArgs(_Args):
    job_id: str = Field(pattern=NAME_PATTERN)
    component: str | None = Field(default=None, pattern=NAME_PATTERN)


class JobOutputRowsArgs(_Args):
    job_id: str = Field(pattern=NAME_PATTERN)
    component: str = Field(pattern=NAME_PATTERN)
    output: str = Field(default="data", pattern=OUTPUT_PATTERN)
    role: str | None = Field(default=None, pattern=r"^(guest|host|arbiter)$")
    """Needed only where this party ran the component in more than one role."""
    offset: int = Field(default=0, ge=0, le=2**31 - 1)
    limit: int = Field(default=1000, ge=1, le=MAX_ROWS_PER_PAGE)


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _finite(value: Any) -> JsonValue:
    """JSON has no NaN or infinity: a model's padded arrays (a binning model pads its split
    points with NaN) and any non-finite number come back as null."""
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    return cast(JsonValue, value)


def _is_weights(table: Table) -> bool:
    return table.feature_names == ["weight"] and table.labels is None


def _rows_of(store: ArtifactStore, job_id: str, component: str | None) -> list[Any]:
    if not sa.inspect(store.engine).has_table(artifacts_table.name):
        return []  # no task has run at this party yet (a data service without a task runner)
    c = artifacts_table.c
    query = sa.select(c.component, c.party_id, c.role, c.name, c.kind, c.attempt).where(
        c.job_id == job_id
    )
    if component is not None:
        query = query.where(c.component == component)
    with store.engine.connect() as conn:
        return list(conn.execute(query.order_by(c.component, c.role, c.name)).all())


def _components_of(store: ArtifactStore, job_id: str) -> list[str]:
    if not sa.inspect(store.engine).has_table(artifacts_table.name):
        return []
    c = artifacts_table.c
    query = sa.select(c.component).where(c.job_id == job_id).distinct()
    with store.engine.connect() as conn:
        return sorted(row.component for row in conn.execute(query))


def _refuse_unknown(store: ArtifactStore, job_id: str, component: str | None) -> None:
    known = _components_of(store, job_id)
    if not known:
        raise DataCommandError(
            "not_found", f"job {job_id} has no outputs at this party (unknown job, or none ran)"
        )
    raise DataCommandError(
        "not_found",
        f"job {job_id} has no outputs of component {component!r} at this party "
        f"(components with outputs: {', '.join(known)})",
    )


def _describe(store: ArtifactStore, row: Any, job_id: str) -> dict[str, JsonValue]:
    found = store.get_artifact(job_id, row.party_id, row.role, f"{row.component}.{row.name}")
    entry: dict[str, JsonValue] = {
        "component": row.component,
        "party_id": row.party_id,
        "role": row.role,
        "output": row.name,
        "attempt": row.attempt,
    }
    if isinstance(found, ModelArtifact):
        entry["kind"] = "model"
        entry["document"] = _finite(json.loads(json.dumps(dict(found.document))))
        entry["arrays"] = {name: _finite(array.tolist()) for name, array in found.arrays.items()}
    elif _is_weights(found):
        entry["kind"] = "weights"
        names = [str(i) for i in found.ids.tolist()]
        weights = [_number(float(w)) for w in found.features[:, 0]]
        entry["weights"] = dict(zip(names, weights, strict=True))
    else:
        entry["kind"] = "table"
        entry["rows"] = found.rows
        entry["columns"] = list(found.feature_names)
        entry["label_name"] = found.label_name
        entry["label_classes"] = cast(JsonValue, found.label_classes)
    return entry


def job_outputs(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    args = JobOutputsArgs.model_validate(raw)
    store = ArtifactStore(data.tables.engine)
    rows = _rows_of(store, args.job_id, args.component)
    if not rows:
        _refuse_unknown(store, args.job_id, args.component)
    outputs: list[JsonValue] = [_describe(store, row, args.job_id) for row in rows]
    answer: dict[str, JsonValue] = {
        "job_id": args.job_id,
        "component": args.component,
        "data": outputs,
        "count": len(outputs),
    }
    size = len(json.dumps(answer, allow_nan=False))
    if size > MAX_ANSWER_BYTES:
        raise DataCommandError(
            "invalid",
            f"the outputs of job {args.job_id} are {size:,} bytes as JSON (more than one "
            f"answer holds, {MAX_ANSWER_BYTES:,}): ask for one component",
        )
    return answer


def job_output_rows(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    args = JobOutputRowsArgs.model_validate(raw)
    store = ArtifactStore(data.tables.engine)
    rows = [r for r in _rows_of(store, args.job_id, args.component) if r.name == args.output]
    if args.role is not None:
        rows = [r for r in rows if r.role == args.role]
    if not rows:
        if _rows_of(store, args.job_id, args.component):
            names = sorted({r.name for r in _rows_of(store, args.job_id, args.component)})
            raise DataCommandError(
                "not_found",
                f"component {args.component} of job {args.job_id} has no output "
                f"{args.output!r} at this party (outputs: {', '.join(names)})",
            )
        _refuse_unknown(store, args.job_id, args.component)
    if len(rows) > 1:
        roles = ", ".join(r.role for r in rows)
        raise DataCommandError(
            "invalid", f"this party ran {args.component} as {roles}: name the role"
        )
    (row,) = rows
    found = store.get_artifact(args.job_id, row.party_id, row.role, f"{row.component}.{row.name}")
    if isinstance(found, ModelArtifact):
        raise DataCommandError(
            "invalid",
            f"output {args.output} of {args.component} is a model, not a table "
            "(`fedmq job model` shows it)",
        )
    end = min(found.rows, args.offset + args.limit)
    page = slice(args.offset, end)
    labels = found.labels
    return {
        "job_id": args.job_id,
        "component": args.component,
        "output": args.output,
        "role": row.role,
        "rows": found.rows,
        "offset": args.offset,
        "ids": [str(i) for i in found.ids[page].tolist()],
        "columns": list(found.feature_names),
        "features": [[_number(float(v)) for v in r] for r in found.features[page]],
        "label_name": found.label_name,
        "labels": None if labels is None else [_number(float(v)) for v in labels[page]],
        "label_classes": found.label_classes,
    }
