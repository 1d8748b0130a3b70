"""A job's results in a standalone workdir as JSON: every party's metrics and curves, and each
party's outputs of a component (a model's weights, a fitted scaling, a profile).

`fedmq standalone run` leaves one SQLite database per party in its --workdir
(`party-<id>.db`, fedflow.standalone); these functions read them back, so the results of a
run can be printed and exported without decoding rows by hand:

    fedmq standalone metrics JOB [--component eval_0] [--workdir DIR] [--output FILE]
    fedmq standalone model JOB COMPONENT [--workdir DIR] [--output FILE]
    fedmq standalone data JOB COMPONENT --party P [--name data] [--output FILE]   # as CSV

Each party's outputs stay in that party's own database; in standalone mode every party is on
this machine, so the export shows them side by side.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore, ModelArtifact, artifacts_table
from fedflow.metrics import MetricsReader
from fedflow.tables import Table

DATABASE_PREFIX = "party-"


class NoResults(LookupError):
    """The workdir has no database, or the job / component left nothing in it."""


def party_databases(workdir: Path) -> dict[str, Path]:
    """Party id -> its SQLite database in a standalone workdir."""
    found = {
        path.stem[len(DATABASE_PREFIX) :]: path
        for path in sorted(Path(workdir).glob(f"{DATABASE_PREFIX}*.db"))
    }
    if not found:
        raise NoResults(f"no party databases ({DATABASE_PREFIX}*.db) in {workdir}")
    return found


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def metrics_json(workdir: Path, job_id: str, component: str | None = None) -> dict[str, Any]:
    """Every party's metrics and curves of the job (of one component when given)."""
    metrics: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for path in party_databases(workdir).values():
        engine = make_engine(f"sqlite:///{path}")
        try:
            reader = MetricsReader(engine)
            for m in reader.metrics(job_id):
                if component is None or m.component == component:
                    metrics.append(
                        {
                            "component": m.component,
                            "party_id": m.party_id,
                            "name": m.name,
                            "step": m.step,
                            "value": _number(m.value),
                        }
                    )
            for c in reader.curves(job_id):
                if component is None or c.component == component:
                    curves.append(
                        {
                            "component": c.component,
                            "party_id": c.party_id,
                            "name": c.name,
                            "x_label": c.x_label,
                            "y_label": c.y_label,
                            "x": [_number(v) for v in c.x],
                            "y": [_number(v) for v in c.y],
                        }
                    )
        finally:
            engine.dispose()
    if not metrics and not curves:
        what = f"component {component} of job {job_id}" if component else f"job {job_id}"
        raise NoResults(f"no metrics of {what} in {workdir}")
    return {"job_id": job_id, "metrics": metrics, "curves": curves}


def artifact_json(artifact: Table | ModelArtifact) -> dict[str, Any]:
    """An output as JSON: a weights table (hetero_lr, hetero_linr: one row per feature, one
    `weight` column) as {name: weight}; another table as its columns and rows; a
    ModelArtifact as its document and arrays."""
    if isinstance(artifact, ModelArtifact):
        return {
            "kind": "model",
            "document": dict(artifact.document),
            "arrays": {name: array.tolist() for name, array in artifact.arrays.items()},
        }
    # A model trained on text labels: class k's name at index k (weight_<k> columns).
    named = {} if artifact.trained_classes is None else {"classes": artifact.trained_classes}
    if artifact.feature_names == ["weight"]:
        names = [str(i) for i in artifact.ids.tolist()]
        weights = [_number(float(w)) for w in artifact.features[:, 0]]
        return {"kind": "weights", "weights": dict(zip(names, weights, strict=True)), **named}
    return {
        **named,
        "kind": "table",
        "rows": artifact.rows,
        "ids": [str(i) for i in artifact.ids.tolist()],
        "columns": list(artifact.feature_names),
        "features": [[_number(float(v)) for v in row] for row in artifact.features],
        "label_name": artifact.label_name,
        "labels": None if artifact.labels is None else [_number(float(v)) for v in artifact.labels],
    }


def model_json(workdir: Path, job_id: str, component: str) -> dict[str, Any]:
    """Each party's outputs of `component` in the job: {party: {role: {output: JSON}}}."""
    parties: dict[str, dict[str, dict[str, Any]]] = {}
    for party, path in party_databases(workdir).items():
        engine = make_engine(f"sqlite:///{path}")
        try:
            c = artifacts_table.c
            query = sa.select(c.role, c.name).where(
                c.job_id == job_id, c.component == component, c.party_id == party
            )
            with engine.connect() as conn:
                outputs = conn.execute(query.order_by(c.role, c.name)).all()
            store = ArtifactStore(engine)
            for role, name in outputs:
                found = store.get_artifact(job_id, party, role, f"{component}.{name}")
                parties.setdefault(party, {}).setdefault(role, {})[name] = artifact_json(found)
        finally:
            engine.dispose()
    if not parties:
        raise NoResults(f"no outputs of {component} in job {job_id} in {workdir}")
    return {"job_id": job_id, "component": component, "parties": parties}


def write_rows(out: IO[str], page: dict[str, Any], header: bool) -> None:
    """Rows of an output table as CSV (id, the columns, the label if any), from a page as the
    data service answers it (`ids`, `columns`, `features`, `label_name`, `labels`,
    `label_classes`): a text label is written as its class name, as the data was uploaded."""
    writer = csv.writer(out, lineterminator="\n")
    label = page.get("label_name")
    if header:
        writer.writerow(["id", *page["columns"], *([label] if label else [])])
    labels = page.get("labels")
    classes = page.get("label_classes") or []
    for i, (row_id, values) in enumerate(zip(page["ids"], page["features"], strict=True)):
        cells = ["" if v is None else repr(float(v)) for v in values]
        if label:
            y = labels[i] if labels is not None else None
            cells.append("" if y is None else _label_cell(float(y), classes))
        writer.writerow([row_id, *cells])


def _label_cell(value: float, classes: list[str]) -> str:
    if classes and value.is_integer() and 0 <= value < len(classes):
        return str(classes[int(value)])
    return repr(value)


def data_csv(
    workdir: Path, job_id: str, component: str, party: str, name: str = "data",
    role: str | None = None,
) -> str:  # fmt: skip
    """A party's output table `name` of `component` as CSV (write_rows)."""
    path = party_databases(workdir).get(party)
    if path is None:
        raise NoResults(f"no database of party {party} in {workdir}")
    engine = make_engine(f"sqlite:///{path}")
    try:
        c = artifacts_table.c
        query = sa.select(c.role).where(
            c.job_id == job_id, c.component == component, c.party_id == party, c.name == name
        )
        with engine.connect() as conn:
            roles = [r for (r,) in conn.execute(query) if role is None or r == role]
        if not roles:
            raise NoResults(f"no output {name!r} of {component} in job {job_id} at {party}")
        if len(roles) > 1:
            raise NoResults(f"{party} ran {component} as {', '.join(roles)}: name the role")
        found = ArtifactStore(engine).get_artifact(job_id, party, roles[0], f"{component}.{name}")
    finally:
        engine.dispose()
    if isinstance(found, ModelArtifact):
        raise NoResults(f"output {name!r} of {component} is a model (`fedmq standalone model`)")
    page = artifact_json(found)
    if page["kind"] == "weights":
        page = {
            "ids": [str(i) for i in found.ids.tolist()],
            "columns": ["weight"],
            "features": [[_number(float(w))] for w in found.features[:, 0]],
        }
    page["label_classes"] = found.label_classes
    out = io.StringIO()
    write_rows(out, page, header=True)
    return out.getvalue()
