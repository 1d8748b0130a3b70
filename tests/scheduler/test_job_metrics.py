"""The scheduler's read model of job metrics: what its worker sends as task.metrics is what
the `metrics` command answers (the scheduler reads no table of the worker's); the newest value
by logged_at wins whatever the order of arrival; a peer's task.metrics is dead-lettered; what
workers wrote to a shared database before the read model existed is copied once at upgrade."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fedbus import HEADER_DEAD_REASON
from fedbus.runtime import EnvelopePublisher
from fedbus.sql_inbox import make_engine
from fedflow.db import create_flow_tables
from fedflow.metrics import MetricsWriter
from fedflow.task import TaskKey
from fedscheduler.job_metrics import metrics_view
from fedscheduler.migrations import upgrade_head
from fedschemas import PartyRef, new_envelope
from fedschemas.payloads import CurveValue, MetricValue, TaskMetrics
from sqlalchemy.orm import Session

from .conftest import GUEST, HOST, Federation, submit_held_psi, wait_for

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def report(
    party: str,
    *values: tuple[str, int, float | None, datetime],
    curves: tuple[CurveValue, ...] = (),
) -> TaskMetrics:
    return TaskMetrics(
        job_id="job-m",
        component="psi_0",
        attempt=0,
        party_id=party,
        metrics=[MetricValue(name=n, step=s, value=v, logged_at=t) for n, s, v, t in values],
        curves=list(curves),
    )


def send(fed: Federation, party: str, source: str, payload: TaskMetrics, seq: int) -> None:
    """Publish `payload` on `party`'s svc.scheduler as if party `source`'s worker sent it."""
    me = PartyRef(party_id=source, role="guest")
    envelope = new_envelope(
        payload,
        job_id=payload.job_id,
        component=payload.component,
        task_id="",
        attempt=0,
        source=me,
        destination=PartyRef(party_id=party, role="guest"),
        tag="task.metrics",
        iteration=-1,
        seq=seq,
        created_at=datetime.now(UTC),
    )
    EnvelopePublisher(fed.buses[party], me).send("svc.scheduler", envelope)


def served(fed: Federation, party: str) -> dict[tuple[str, int], float | None]:
    result = fed.client(party).metrics("job-m")
    return {(m["name"], m["step"]): m["value"] for m in result["data"]}


def test_reported_metrics_are_served_and_the_newest_value_wins_whatever_the_order(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: a running job (its tasks held)
    fed = submit_held_psi(federation_factory, "job-m")
    fed.wait_state(GUEST, "job-m", "running", timeout=30)
    roc = CurveValue(
        name="roc",
        x_label="fpr",
        y_label="tpr",
        x=[0.0, 0.5, 1.0],
        y=[0.0, None, 1.0],
        logged_at=T0,
    )

    # Execute: a loss series and a value, then a newer value, then a late older one
    send(
        fed,
        GUEST,
        GUEST,
        report(
            GUEST, ("loss", 0, 0.7, T0), ("loss", 1, 0.5, T0), ("auc", -1, None, T0), curves=(roc,)
        ),
        seq=1,
    )
    send(fed, GUEST, GUEST, report(GUEST, ("auc", -1, 0.91, T0 + timedelta(seconds=2))), seq=2)
    send(fed, GUEST, GUEST, report(GUEST, ("auc", -1, 0.10, T0 + timedelta(seconds=1))), seq=3)
    wait_for(
        lambda: served(fed, GUEST).get(("auc", -1)) == 0.91,
        timeout=30,
        what="the newest auc to be served",
    )
    send(fed, GUEST, GUEST, report(GUEST, ("loss", 2, 0.4, T0)), seq=4)
    wait_for(lambda: ("loss", 2) in served(fed, GUEST), 30, "the third loss step")

    # Assert
    result = fed.client(GUEST).metrics("job-m")
    assert served(fed, GUEST) == {
        ("auc", -1): 0.91,
        ("loss", 0): 0.7,
        ("loss", 1): 0.5,
        ("loss", 2): 0.4,
    }
    assert [m["name"] for m in result["data"]] == ["auc", "loss", "loss", "loss"]
    assert result["count"] == 4
    assert result["curves"] == [
        {
            "component": "psi_0",
            "party_id": GUEST,
            "name": "roc",
            "x_label": "fpr",
            "y_label": "tpr",
            "x": [0.0, 0.5, 1.0],
            "y": [0.0, None, 1.0],
        }
    ]
    assert fed.client(GUEST).metrics("job-m", component="other")["count"] == 0


def test_task_metrics_from_another_party_are_dead_lettered_not_recorded(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare
    fed = submit_held_psi(federation_factory, "job-m")
    fed.wait_state(GUEST, "job-m", "running", timeout=30)

    # Execute: the host claims metrics at the guest's scheduler
    send(fed, GUEST, HOST, report(HOST, ("auc", -1, 1.0, T0)), seq=1)

    # Assert
    dead = wait_for(lambda: fed.buses[GUEST].dead_letters("svc.scheduler"), 30, "dead letter")
    assert "must come from this party's worker (9999)" in dead[0].headers[HEADER_DEAD_REASON]
    assert served(fed, GUEST) == {}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'party.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_metrics_workers_wrote_to_a_shared_database_before_the_upgrade_are_still_served(
    database_url: str,
) -> None:
    # Prepare: a party database where the worker logged a job's metrics before the read model
    engine = make_engine(database_url)
    try:
        create_flow_tables(engine)
        writer = MetricsWriter(engine, TaskKey("job-old", "eval_0", 0, GUEST, "guest"))
        writer.log("auc", 0.93)
        writer.log("loss", 0.4, 3)
        writer.curve("roc", [0.0, 1.0], [0.0, 1.0], x_label="fpr", y_label="tpr")

        # Execute: the scheduler of this version opens (migrates) the database
        upgrade_head(engine)
        with Session(engine) as session:
            view = metrics_view(session, "job-old")
    finally:
        engine.dispose()

    # Assert
    assert [(m["name"], m["step"], m["value"]) for m in view["data"]] == [
        ("auc", -1, 0.93),
        ("loss", 3, 0.4),
    ]
    assert [(c["name"], c["x"], c["y"]) for c in view["curves"]] == [
        ("roc", [0.0, 1.0], [0.0, 1.0])
    ]
