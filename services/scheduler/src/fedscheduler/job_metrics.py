"""The scheduler's read model of job metrics, kept from the task.metrics its workers send.

A component logs metrics (a float per name and step; step -1 is a single value, 0, 1, ... a
series) and curves at its party; the party's worker keeps them in its own database and sends
them to this party's scheduler as `task.metrics` messages (fedworker.job_metrics): what is new
while the task runs, and everything once more just before the task's final task.status. The
scheduler never reads the workers' tables; the `metrics` command (rpc.py) answers from the two
tables here.

One row per (job, component, party, name[, step]), the latest value by the worker's
`logged_at`: a message that arrives late or twice (a redelivery, the final resend) never
replaces a newer value, so the model converges on what the worker holds whatever the order.
A value None is an undefined metric (NaN, e.g. the AUC of a single class).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from fedbus import Reject
from fedbus.inbox import InboxTransaction
from fedschemas import Envelope, Payload
from fedschemas.payloads import TaskMetrics
from pydantic import JsonValue
from sqlalchemy.orm import Mapped, Session, mapped_column

from fedscheduler.models import Base, UtcDateTime

if TYPE_CHECKING:
    from fedscheduler.handlers import SchedulerContext

SINGLE = -1
"""The step of a single-value metric."""


class JobMetric(Base):
    """One metric value of a task at a party, as its worker last reported it."""

    __tablename__ = "scheduler_job_metrics"

    job_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    component: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    party_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    step: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    value: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    logged_at: Mapped[datetime] = mapped_column(UtcDateTime)


class JobCurve(Base):
    """One curve of a task at a party (x and y as JSON lists, None where undefined)."""

    __tablename__ = "scheduler_job_curves"

    job_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    component: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    party_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    x_label: Mapped[str] = mapped_column(sa.String(64))
    y_label: Mapped[str] = mapped_column(sa.String(64))
    points: Mapped[dict[str, list[float | None]]] = mapped_column(sa.JSON)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    logged_at: Mapped[datetime] = mapped_column(UtcDateTime)


def _finite(values: list[float | None]) -> list[float | None]:
    # JSON has no NaN or infinity: an undefined point is None.
    return [v if v is None or math.isfinite(v) else None for v in values]


def record(session: Session, report: TaskMetrics) -> int:
    """Merge one task.metrics into the model (newest `logged_at` wins); rows changed."""
    key = (report.job_id, report.component, report.party_id)
    changed = 0
    if report.metrics:
        m = JobMetric
        known = {
            (row.name, row.step): row
            for row in session.scalars(
                sa.select(m).where(m.job_id == key[0], m.component == key[1], m.party_id == key[2])
            )
        }
        for value in report.metrics:
            row = known.get((value.name, value.step))
            if row is None:
                row = JobMetric(
                    job_id=key[0],
                    component=key[1],
                    party_id=key[2],
                    name=value.name,
                    step=value.step,
                )
                session.add(row)
                known[(value.name, value.step)] = row
            elif row.logged_at > value.logged_at:
                continue
            number = value.value if value.value is None or math.isfinite(value.value) else None
            row.value, row.attempt, row.logged_at = number, report.attempt, value.logged_at
            changed += 1
    for curve in report.curves:
        stored = session.get(JobCurve, (*key, curve.name))
        if stored is None:
            stored = JobCurve(job_id=key[0], component=key[1], party_id=key[2], name=curve.name)
            session.add(stored)
        elif stored.logged_at > curve.logged_at:
            continue
        stored.x_label, stored.y_label = curve.x_label, curve.y_label
        stored.points = {"x": _finite(curve.x), "y": _finite(curve.y)}
        stored.attempt, stored.logged_at = report.attempt, curve.logged_at
        changed += 1
    return changed


def handle_task_metrics(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: SchedulerContext
) -> None:
    """task.metrics (from this party's worker): merge it into the read model."""
    if not isinstance(payload, TaskMetrics):  # the consumer dispatches by type
        raise Reject(f"task.metrics handler got {type(payload).__name__}")
    if envelope.source.party_id != ctx.party_id or payload.party_id != ctx.party_id:
        # Only this party's workers know its metrics; a peer has no business sending them.
        raise Reject(
            f"task.metrics must come from this party's worker ({ctx.party_id}), not from "
            f"party {envelope.source.party_id} about party {payload.party_id}"
        )
    record(tx.require_session(), payload)


def metrics_view(
    session: Session, job_id: str, component: str | None = None, party_id: str | None = None
) -> dict[str, Any]:
    """{data: [metric], count, curves: [curve]} of a job (docs/scheduler.md, `metrics`)."""
    m, c = JobMetric, JobCurve
    metric_query = sa.select(m).where(m.job_id == job_id)
    curve_query = sa.select(c).where(c.job_id == job_id)
    if component is not None:
        metric_query = metric_query.where(m.component == component)
        curve_query = curve_query.where(c.component == component)
    if party_id is not None:
        metric_query = metric_query.where(m.party_id == party_id)
        curve_query = curve_query.where(c.party_id == party_id)
    metrics: list[JsonValue] = [
        {
            "component": row.component,
            "party_id": row.party_id,
            "name": row.name,
            "step": int(row.step),
            "value": row.value,
        }
        for row in session.scalars(metric_query.order_by(m.component, m.party_id, m.name, m.step))
    ]
    curves: list[JsonValue] = [
        {
            "component": row.component,
            "party_id": row.party_id,
            "name": row.name,
            "x_label": row.x_label,
            "y_label": row.y_label,
            "x": list(row.points["x"]),
            "y": list(row.points["y"]),
        }
        for row in session.scalars(curve_query.order_by(c.component, c.party_id, c.name))
    ]
    return {"data": metrics, "count": len(metrics), "curves": curves}
