"""MetricsWriter: a task's metrics (name, step, value) and curves, as SQL rows at its party.

A metric is a float per (job, component, party, name, step); step -1 is a single value (e.g.
"auc"), steps 0, 1, ... a series (a loss per iteration). Writing the same key again replaces
the value, so a component that resumes and logs its last step again does not duplicate it. A
curve is two float lists (x, y) with axis labels, stored as JSON; components keep them short
(evaluation thins to ~1000 points). `MetricsReader` (or `read_metrics` / `read_curves` on an
open connection) reads them back: standalone runs and tests, and the worker, which sends them
to its party's scheduler as task.metrics messages (the scheduler never reads these tables).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import sqlalchemy as sa
import structlog
from numpy.typing import ArrayLike
from sqlalchemy.engine import Connection, Engine

from fedflow.db import flow_metadata, task_columns
from fedflow.task import TaskKey

SINGLE = -1
MAX_METRIC_NAME = 128
"""The longest metric or curve name the tables keep (PostgreSQL enforces it; SQLite does not):
a longer one, a per-column metric of a very long column name (binning's iv.<column>), is
skipped with a warning rather than failing the task (the value is in the component's model)."""

log = structlog.get_logger("fedflow.metrics")

metrics_table = sa.Table(
    "flow_metrics",
    flow_metadata,
    *task_columns("job_id", "component", "party_id", primary_key=True),
    sa.Column("name", sa.String(MAX_METRIC_NAME), primary_key=True),
    sa.Column("step", sa.BigInteger, primary_key=True),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
)

curves_table = sa.Table(
    "flow_curves",
    flow_metadata,
    *task_columns("job_id", "component", "party_id", primary_key=True),
    sa.Column("name", sa.String(MAX_METRIC_NAME), primary_key=True),
    sa.Column("x_label", sa.String(64), nullable=False),
    sa.Column("y_label", sa.String(64), nullable=False),
    sa.Column("points", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Metric:
    job_id: str
    component: str
    party_id: str
    name: str
    step: int
    value: float
    logged_at: datetime | None = None
    """When the value was written (None: not read from the store)."""


@dataclass(frozen=True)
class Curve:
    job_id: str
    component: str
    party_id: str
    name: str
    x_label: str
    y_label: str
    x: list[float]
    y: list[float]
    logged_at: datetime | None = None


def _finite_or_none(value: float) -> float | None:
    # NaN (e.g. AUC of a single-class set) is stored as NULL: not every database keeps NaN.
    return value if math.isfinite(value) else None


class MetricsWriter:
    """Writes one task's metrics (what a component's context holds)."""

    def __init__(self, engine: Engine, key: TaskKey) -> None:
        self.engine = engine
        self.key = key

    def _key(self, table: sa.Table, name: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            table.c.job_id == self.key.job_id,
            table.c.component == self.key.component,
            table.c.party_id == self.key.party_id,
            table.c.name == name,
        )

    def _too_long(self, name: str) -> bool:
        if len(name) <= MAX_METRIC_NAME:
            return False
        log.warning(
            "metric_name_too_long",
            job_id=self.key.job_id,
            component=self.key.component,
            name=name[:MAX_METRIC_NAME] + "...",
            limit=MAX_METRIC_NAME,
        )
        return True

    def log(self, name: str, value: float, step: int = SINGLE) -> None:
        """Record `value` for `name` (at `step` of a series; SINGLE for one value)."""
        self.log_many([(name, value, step)])

    def log_many(self, rows: Iterable[tuple[str, float, int]]) -> None:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            for name, value, step in rows:
                if self._too_long(name):
                    continue
                conn.execute(
                    sa.delete(metrics_table).where(
                        self._key(metrics_table, name), metrics_table.c.step == step
                    )
                )
                conn.execute(
                    sa.insert(metrics_table),
                    {
                        "job_id": self.key.job_id,
                        "component": self.key.component,
                        "party_id": self.key.party_id,
                        "name": name,
                        "step": step,
                        "value": _finite_or_none(float(value)),
                        "attempt": self.key.attempt,
                        "logged_at": now,
                    },
                )

    def curve(
        self, name: str, x: ArrayLike, y: ArrayLike, *, x_label: str = "x", y_label: str = "y"
    ) -> None:
        if self._too_long(name):
            return
        xs = np.asarray(x, dtype=np.float64).ravel()
        ys = np.asarray(y, dtype=np.float64).ravel()
        if xs.shape != ys.shape:
            raise ValueError(f"curve {name!r}: {len(xs)} x values for {len(ys)} y values")
        points = json.dumps(
            {
                "x": [_finite_or_none(v) for v in xs.tolist()],
                "y": [_finite_or_none(v) for v in ys.tolist()],
            }
        )
        with self.engine.begin() as conn:
            conn.execute(sa.delete(curves_table).where(self._key(curves_table, name)))
            conn.execute(
                sa.insert(curves_table),
                {
                    "job_id": self.key.job_id,
                    "component": self.key.component,
                    "party_id": self.key.party_id,
                    "name": name,
                    "x_label": x_label,
                    "y_label": y_label,
                    "points": points,
                    "attempt": self.key.attempt,
                    "logged_at": datetime.now(UTC),
                },
            )


def _aware(value: datetime) -> datetime:
    # SQLite keeps no time zone: the values were written as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _where(
    table: sa.Table,
    job_id: str,
    component: str | None,
    party_id: str | None,
    since: datetime | None,
) -> sa.ColumnElement[bool]:
    c = table.c
    conditions = [c.job_id == job_id]
    if component is not None:
        conditions.append(c.component == component)
    if party_id is not None:
        conditions.append(c.party_id == party_id)
    if since is not None:
        conditions.append(c.logged_at > since)
    return sa.and_(*conditions)


def read_metrics(
    conn: Connection,
    job_id: str,
    component: str | None = None,
    party_id: str | None = None,
    *,
    since: datetime | None = None,
) -> list[Metric]:
    """The metrics of a job (logged after `since` when given), on `conn` -- which may be the
    caller's open transaction (the worker reads what it reports inside the report's)."""
    c = metrics_table.c
    query = (
        sa.select(metrics_table)
        .where(_where(metrics_table, job_id, component, party_id, since))
        .order_by(c.component, c.party_id, c.name, c.step)
    )
    return [
        Metric(
            r.job_id,
            r.component,
            r.party_id,
            r.name,
            int(r.step),
            float("nan") if r.value is None else float(r.value),
            _aware(r.logged_at),
        )
        for r in conn.execute(query).all()
    ]


def read_curves(
    conn: Connection,
    job_id: str,
    component: str | None = None,
    party_id: str | None = None,
    *,
    since: datetime | None = None,
) -> list[Curve]:
    """The curves of a job (logged after `since` when given), on `conn`."""
    c = curves_table.c
    query = (
        sa.select(curves_table)
        .where(_where(curves_table, job_id, component, party_id, since))
        .order_by(c.component, c.party_id, c.name)
    )
    out = []
    for r in conn.execute(query).all():
        points = json.loads(r.points)
        out.append(
            Curve(
                r.job_id,
                r.component,
                r.party_id,
                r.name,
                r.x_label,
                r.y_label,
                [float("nan") if v is None else float(v) for v in points["x"]],
                [float("nan") if v is None else float(v) for v in points["y"]],
                _aware(r.logged_at),
            )
        )
    return out


class MetricsReader:
    """Reads the metrics and curves of jobs at this party."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def metrics(
        self, job_id: str, component: str | None = None, party_id: str | None = None
    ) -> list[Metric]:
        with self.engine.connect() as conn:
            return read_metrics(conn, job_id, component, party_id)

    def values(self, job_id: str, component: str, party_id: str | None = None) -> dict[str, float]:
        """The single-value metrics of a component ({name: value})."""
        return {
            m.name: m.value for m in self.metrics(job_id, component, party_id) if m.step == SINGLE
        }

    def curves(
        self, job_id: str, component: str | None = None, party_id: str | None = None
    ) -> list[Curve]:
        with self.engine.connect() as conn:
            return read_curves(conn, job_id, component, party_id)
