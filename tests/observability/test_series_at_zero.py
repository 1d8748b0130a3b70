"""Issue #22: every counter an alert or a panel reads exists at 0 from start-up, so that the
first event is an increase (a series born at 1 is invisible to increase() and rate()), and the
scheduler's job-age gauges name the job furthest past its pipeline's expected duration.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fedbus import connect
from fedbus.in_memory_inbox import InMemoryInbox
from fedbus.metrics import DEAD_LETTER_REASONS, BusMetrics
from fedbus.runtime import EnvelopeConsumer
from fedflow.components import COMPONENT_NAMES
from fedgateway.metrics import GatewayMetrics
from fedscheduler.main import Scheduler
from fedscheduler.metrics import SchedulerMetrics
from fedscheduler.models import Job
from fedscheduler.settings import SchedulerSettings
from fedscheduler.store import open_database
from fedscheduler.timeouts import HISTORY_FACTOR, HISTORY_FLOOR_S, job_age
from fedworker.metrics import WorkerMetrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value, as Prometheus would scrape the registry."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return samples(registry).get((name, frozenset(labels.items())))


def test_the_scheduler_exports_every_final_state_and_timeout_phase_at_zero() -> None:
    registry = SchedulerMetrics().registry
    for state in ("success", "failed", "canceled"):
        assert value(registry, "fedmq_scheduler_jobs_ended_total", state=state) == 0
        assert value(registry, "fedmq_scheduler_job_duration_seconds_count", state=state) == 0
    for phase in ("proposal", "running", "initiator"):
        assert value(registry, "fedmq_scheduler_party_timeouts_total", phase=phase) == 0
    for answer in ("accept", "refuse"):
        assert value(registry, "fedmq_scheduler_proposals_total", answer=answer) == 0


def test_the_worker_exports_every_component_of_the_catalogue_at_zero() -> None:
    # One scrape of the registry (a scrape per lookup took half a minute on a loaded host).
    scraped = samples(WorkerMetrics(process=False).registry)

    def value(name: str, **labels: str) -> float | None:
        return scraped.get((name, frozenset(labels.items())))

    assert {"hetero_lr", "hetero_lr_predict", "psi"} <= COMPONENT_NAMES
    for component in COMPONENT_NAMES:
        assert value("fedmq_worker_tasks_started_total", component=component) == 0
        assert value("fedmq_worker_task_duration_seconds_count", component=component) == 0
        for state in ("success", "failed", "canceled"):
            assert value("fedmq_worker_tasks_ended_total", component=component, state=state) == 0


def test_a_consumer_creates_its_topics_dead_letter_and_duplicate_series_at_zero() -> None:
    metrics = BusMetrics(CollectorRegistry())
    with connect("memory://zero-series") as bus:
        EnvelopeConsumer(bus, "svc.worker", {}, InMemoryInbox(), metrics=metrics)
        for reason in DEAD_LETTER_REASONS:
            assert (
                value(
                    metrics.registry,
                    "fedmq_bus_messages_dead_lettered_total",
                    topic="svc.worker",
                    reason=reason,
                )
                == 0
            )
        assert (
            value(metrics.registry, "fedmq_bus_duplicates_dropped_total", topic="svc.worker") == 0
        )


def test_the_gateway_exports_signature_refusals_and_its_peers_relays_at_zero() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    metrics.known_peers(["10000"])
    registry = metrics.registry
    for reason in ("missing_signature", "bad_signature", "unknown_key", "source_mismatch"):
        assert value(registry, "fedmq_gateway_refused_total", reason=reason) == 0
    for direction in ("in", "out"):
        assert (
            value(registry, "fedmq_gateway_relayed_total", direction=direction, peer="10000") == 0
        )


def _job(job_id: str, pipeline: str, state: str, created: datetime, ended: datetime | None) -> Job:
    return Job(
        job_id=job_id,
        initiator="9999",
        pipeline_yaml=pipeline,
        state=state,
        attempt=0,
        created_at=created,
        updated_at=ended or created,
        ended_at=ended,
    )


@pytest.fixture
def sessions(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine, sessions = open_database(f"sqlite:///{tmp_path / 'scheduler.db'}")
    yield sessions
    engine.dispose()


def test_job_age_names_the_open_job_furthest_past_its_pipelines_expected_duration(
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    # Prepare: pipeline A succeeded twice (longest 100 s), so it is expected within 300 s;
    # pipeline B never succeeded here (the default, 1000 s). A's open job is 200 s old (2/3 of
    # its time), B's 900 s (9/10): B's is the one furthest past.
    with sessions.begin() as session:
        session.add_all(
            [
                _job("a1", "A", "success", NOW - timedelta(hours=2), NOW - timedelta(seconds=7100)),
                _job("a2", "A", "success", NOW - timedelta(hours=1), NOW - timedelta(seconds=3590)),
                _job("a3", "A", "running", NOW - timedelta(seconds=200), None),
                _job("b1", "B", "waiting", NOW - timedelta(seconds=900), None),
                _job("c1", "C", "failed", NOW - timedelta(days=1), NOW - timedelta(hours=20)),
            ]
        )
    # Execute / Assert
    assert job_age(sessions, lambda: NOW, 1000.0) == (900.0, 1000.0)

    # B's job ends: A's is left, against HISTORY_FACTOR times its longest run.
    with sessions.begin() as session:
        b1 = session.get(Job, "b1")
        assert b1 is not None
        b1.state = "failed"
    assert job_age(sessions, lambda: NOW, 1000.0) == (200.0, HISTORY_FACTOR * 100.0)


def test_job_age_is_zero_without_open_jobs_and_a_fast_pipeline_gets_the_floor(
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    assert job_age(sessions, lambda: NOW, 1000.0) == (0.0, 0.0)
    with sessions.begin() as session:
        session.add_all(
            [
                _job(
                    "f1", "F", "success", NOW - timedelta(seconds=50), NOW - timedelta(seconds=48)
                ),
                _job("f2", "F", "running", NOW - timedelta(seconds=5), None),
            ]
        )
    assert job_age(sessions, lambda: NOW, 1000.0) == (5.0, HISTORY_FLOOR_S)


def test_a_scheduler_serves_the_job_age_gauges_at_its_metrics(tmp_path: Path) -> None:
    settings = SchedulerSettings(
        database_url=f"sqlite:///{tmp_path / 'scheduler.db'}",
        bus_url="memory://job-age",
        http_port=-1,
        job_expected_s=42.0,
    )
    scheduler = Scheduler(settings)
    try:
        assert value(scheduler.metrics.registry, "fedmq_scheduler_job_age_seconds") == 0
        with scheduler.sessions.begin() as session:
            session.add(_job("j1", "P", "running", scheduler.ctx.clock(), None))
        assert value(scheduler.metrics.registry, "fedmq_scheduler_job_expected_seconds") == 42.0
    finally:
        scheduler.stop()


def test_the_default_task_timeout_is_not_none() -> None:
    assert SchedulerSettings().task_timeout_s > 0
