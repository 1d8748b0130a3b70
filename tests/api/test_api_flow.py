"""The REST API end to end inside one party: upload, grant, submit, follow, stop, rerun, tasks,
metrics and logs, against a real scheduler and worker (SQLite, in-memory broker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline

from tests.polling import wait_for

from .conftest import DATA, GUEST_ONLY, PARTY, Party

GUEST_CSV = DATA / "breast_hetero_guest.csv"


def upload(party: Party, name: str, path: Path, **fields: str) -> dict:
    response = party.api.post(
        "/api/v1/tables",
        headers=party.headers,
        data={"name": name, **fields},
        files={"file": (path.name, path.read_bytes(), "text/csv")},
    )
    assert response.status_code == 201, response.text
    return response.json()


def job_state(party: Party, job_id: str) -> dict:
    response = party.api.get(f"/api/v1/jobs/{job_id}", headers=party.headers)
    assert response.status_code == 200, response.text
    return response.json()


def submit(party: Party, job_id: str, pipeline_yaml: str = GUEST_ONLY) -> httpx.Response:
    """POST the pipeline as YAML under `job_id`; the raw response."""
    return party.api.post(
        f"/api/v1/jobs?job_id={job_id}",
        headers={**party.headers, "Content-Type": "application/yaml"},
        content=pipeline_yaml.encode(),
    )


def job_end(party: Party, job_id: str) -> dict[str, Any]:
    """The job once it ended (success or failed), within a minute."""
    return wait_for(
        lambda: j if (j := job_state(party, job_id))["state"] in ("success", "failed") else None,
        timeout=60,
        what=f"{job_id} to end",
    )


def final_values(metrics: dict[str, Any], component: str) -> dict[str, float]:
    """A component's final (step -1) metric values from GET .../metrics."""
    return {
        m["name"]: m["value"]
        for m in metrics["data"]
        if m["component"] == component and m["step"] == -1
    }


def test_an_uploaded_table_is_described_and_listed_with_zero_reads(
    party_factory: Callable[..., Party],
) -> None:
    party = party_factory(worker=False)

    created = upload(party, "breast_hetero_guest", GUEST_CSV, label_column="y")
    listed = party.api.get("/api/v1/tables", headers=party.headers).json()
    one = party.api.get("/api/v1/tables/breast_hetero_guest", headers=party.headers).json()

    assert created["rows"] == 569
    assert created["label_column"] == "y"
    assert created["features"] == 10
    assert created["reads"] == 0
    assert listed["count"] == 1
    assert [t["name"] for t in listed["data"]] == ["breast_hetero_guest"]
    assert one == created


def test_a_job_runs_to_success_and_its_metrics_equal_a_standalone_run(
    party_factory: Callable[..., Party], tmp_path: Path
) -> None:
    party = party_factory()
    upload(party, "breast_hetero_guest", GUEST_CSV, label_column="y")

    submitted = submit(party, "job-api-1")
    done = job_end(party, "job-api-1")
    tasks = party.api.get("/api/v1/jobs/job-api-1/tasks", headers=party.headers).json()
    metrics = party.api.get("/api/v1/jobs/job-api-1/metrics", headers=party.headers).json()
    logs = party.api.get("/api/v1/jobs/job-api-1/logs", headers=party.headers).json()
    table = party.api.get("/api/v1/tables/breast_hetero_guest", headers=party.headers).json()
    reference = run_pipeline(Pipeline.from_yaml(GUEST_ONLY), {PARTY: DATA}, tmp_path / "standalone")

    assert submitted.status_code == 201, submitted.text
    assert done["state"] == "success", done
    assert done["tasks_succeeded"] == done["tasks_total"] == 2
    assert {(t["component"], t["state"]) for t in tasks["data"]} == {
        ("reader_0", "success"),
        ("eval_0", "success"),
    }
    served = final_values(metrics, "eval_0")
    for name in ("auc", "ks", "accuracy", "precision", "recall", "rows"):
        assert served[name] == pytest.approx(reference.metric("eval_0", name), abs=1e-12), name
    assert {c["name"] for c in metrics["curves"]} >= {"roc", "ks", "pr"}
    events = [e["event"] for e in logs["data"]]
    assert events[0] == "job_created"
    assert events[-1] == "job_success"
    assert events.count("task_success") == 2
    assert table["reads"] == 1


def test_a_job_is_stopped_then_rerun_as_a_new_attempt(
    party_factory: Callable[..., Party],
) -> None:
    party = party_factory(worker=False)  # nobody runs the tasks: the job stays running
    submit(party, "job-stop")
    wait_for(lambda: job_state(party, "job-stop")["state"] == "running", timeout=20, what="running")

    stopped = party.api.post(
        "/api/v1/jobs/job-stop/stop", headers=party.headers, json={"reason": "enough"}
    )
    again = party.api.post("/api/v1/jobs/job-stop/stop", headers=party.headers)
    rerun = party.api.post("/api/v1/jobs/job-stop/rerun", headers=party.headers)
    tasks = party.api.get("/api/v1/jobs/job-stop/tasks?attempt=1", headers=party.headers).json()
    logs = party.api.get("/api/v1/jobs/job-stop/logs", headers=party.headers).json()

    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["state"] == "canceled"
    assert stopped.json()["reason"] == "enough"
    assert again.status_code == 409
    assert "already ended" in again.json()["detail"]
    assert rerun.status_code == 200, rerun.text
    assert rerun.json()["attempt"] == 1
    assert rerun.json()["state"] == "running"
    assert {t["component"] for t in tasks["data"]} == {"reader_0", "eval_0"}
    assert any(e["event"] == "task_canceled" and e["attempt"] == 0 for e in logs["data"]), logs


def test_a_grant_is_recorded_and_listed(party_factory: Callable[..., Party]) -> None:
    party = party_factory(worker=False)

    first = party.api.post(
        "/api/v1/grants",
        headers=party.headers,
        json={"table": "breast_hetero_guest", "grantee": "10000", "component_types": ["psi"]},
    )
    party.api.post(
        "/api/v1/grants",
        headers=party.headers,
        json={
            "table": "breast_hetero_guest",
            "grantee": "10000",
            "component_types": ["evaluation"],
        },
    )
    listed = party.api.get("/api/v1/grants?grantee=10000", headers=party.headers).json()

    assert first.status_code == 201, first.text
    assert listed["count"] == 1
    assert listed["data"][0]["component_types"] == ["evaluation", "psi"]
