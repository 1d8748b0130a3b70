"""Sends the metrics and curves components log to this party's scheduler, as task.metrics.

Components write their metrics into the worker's own database (fedflow.metrics); the
scheduler keeps a read model of them (fedscheduler.job_metrics) from these messages and never
reads the worker's tables. Two moments send:

- while a task runs, the runner's lease keeper sends what was logged since its last send
  (`send_new`, a watermark on `logged_at` per running task), so a user sees a loss per
  iteration while the job is still running;
- just before a task's final task.status, in the transaction that records it, everything the
  task logged (`send_all`). Published before the status on the same topic, it is handled
  first: once the scheduler sees the task end, its metrics are there.

Message ids: the final messages are deterministic (tag "task.metrics.final", seq = the part's
index), so a final report repeated after a crash is dropped as a duplicate; a running send's
seq is its newest `logged_at` in microseconds. The scheduler keeps the newest value per key by
`logged_at`, so a repeated, late or overlapping message never goes backwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Final, TypeVar

import structlog
from fedbus.runtime import EnvelopePublisher
from fedflow.metrics import Curve, Metric, read_curves, read_metrics
from fedflow.task import TaskKey
from fedschemas.base import datetime_to_micros
from fedschemas.payloads import CurveValue, MetricValue, TaskMetrics
from sqlalchemy.engine import Connection, Engine

from fedworker.tasks import own_envelope

log = structlog.get_logger("fedworker.job_metrics")

METRICS_PER_MESSAGE: Final = 5000
"""Metric values per task.metrics (a few hundred KiB): long series go as several messages."""
CURVES_PER_MESSAGE: Final = 10
"""Curves per task.metrics (each up to ~1000 points, as components thin them)."""
TAG: Final = "task.metrics"
FINAL_TAG: Final = "task.metrics.final"
HEARTBEAT_TAG: Final = "task.heartbeat"
"""A task.metrics with no values: the worker's heartbeat for a task it runs, each lease-keeper
round that had no metrics to send (the audit's control.worker_silent watches it; the
scheduler records nothing). seq: the time in microseconds, so a restarted worker's beats
never repeat an earlier id."""
_T = TypeVar("_T")


def _number(value: float) -> float | None:
    # The store keeps an undefined value as NULL (read back as NaN): it travels as None.
    return value if math.isfinite(value) else None


def _metric(metric: Metric) -> MetricValue:
    return MetricValue(
        name=metric.name,
        step=metric.step,
        value=_number(metric.value),
        logged_at=metric.logged_at or datetime.now(UTC),
    )


def _curve(curve: Curve) -> CurveValue:
    return CurveValue(
        name=curve.name,
        x_label=curve.x_label,
        y_label=curve.y_label,
        x=[_number(v) for v in curve.x],
        y=[_number(v) for v in curve.y],
        logged_at=curve.logged_at or datetime.now(UTC),
    )


def _pieces(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MetricsForwarder:
    """Publishes a task's metrics to `topic` (the party's scheduler)."""

    def __init__(
        self, engine: Engine, publisher: EnvelopePublisher, party_id: str, topic: str
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.party_id = party_id
        self.topic = topic

    def send_new(self, key: TaskKey, since: datetime | None) -> datetime | None:
        """Send what `key` logged after `since`; the new watermark (`since` if nothing new)."""
        with self.engine.connect() as conn:
            metrics, curves = self._read(conn, key, since)
        if not metrics and not curves:
            return since
        stamps = [m.logged_at for m in metrics] + [c.logged_at for c in curves]
        newest = max(t or datetime.now(UTC) for t in stamps)
        self._publish(key, metrics, curves, TAG, datetime_to_micros(newest))
        return newest

    def beat(self, key: TaskKey) -> None:
        """The heartbeat of `key`'s task (HEARTBEAT_TAG)."""
        payload = TaskMetrics(
            job_id=key.job_id, component=key.component, attempt=key.attempt, party_id=self.party_id
        )
        seq = datetime_to_micros(datetime.now(UTC))
        self.publisher.send(
            self.topic,
            own_envelope(payload, key, self.party_id, tag=HEARTBEAT_TAG, iteration=0, seq=seq),
        )

    def send_all(self, conn: Connection, key: TaskKey) -> None:
        """Send everything `key` logged, read on `conn` (the final report's transaction)."""
        metrics, curves = self._read(conn, key, None)
        if metrics or curves:
            self._publish(key, metrics, curves, FINAL_TAG, 0)

    def _read(
        self, conn: Connection, key: TaskKey, since: datetime | None
    ) -> tuple[list[Metric], list[Curve]]:
        return (
            read_metrics(conn, key.job_id, key.component, self.party_id, since=since),
            read_curves(conn, key.job_id, key.component, self.party_id, since=since),
        )

    def _publish(
        self, key: TaskKey, metrics: list[Metric], curves: list[Curve], tag: str, seq: int
    ) -> None:
        # Usually one message; a long series or many curves are spread over several, the
        # i-th carrying the i-th slice of each.
        metric_slices = list(_pieces(metrics, METRICS_PER_MESSAGE))
        curve_slices = list(_pieces(curves, CURVES_PER_MESSAGE))
        count = max(len(metric_slices), len(curve_slices))
        for index in range(count):
            some_metrics = metric_slices[index] if index < len(metric_slices) else ()
            some_curves = curve_slices[index] if index < len(curve_slices) else ()
            payload = TaskMetrics(
                job_id=key.job_id,
                component=key.component,
                attempt=key.attempt,
                party_id=self.party_id,
                metrics=[_metric(m) for m in some_metrics],
                curves=[_curve(c) for c in some_curves],
            )
            # iteration: the part's index (the parts of one send have ids of their own).
            envelope = own_envelope(payload, key, self.party_id, tag=tag, iteration=index, seq=seq)
            self.publisher.send(self.topic, envelope)
        log.debug(
            "task_metrics_sent",
            job_id=key.job_id,
            component=key.component,
            metrics=len(metrics),
            curves=len(curves),
            final=tag == FINAL_TAG,
        )
