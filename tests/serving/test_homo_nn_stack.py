"""A homo_nn model served at the party that trained it, on the local two-party stack over
RabbitMQ: a real job (reader, homo_nn's built-in network over secure aggregation through both
gateways, homo_nn_predict) on the session's shared stack, the guest's serving service started
beside it, the model published guest-only, bound, and scored through the guest's REST API equal
to the job's own offline prediction within 1e-9.

The shared stack runs without serving services (`fedmq local up --without serving`); the
launcher made the serving service's broker user all the same, so the module starts the guest's
with `fedmq local`'s own function and stops it at the end, leaving the stack as it found it.
A homo_nn model needs no host at serving time, so the host's serving service is not started.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore

from fedmq import local
from tests.local_stack import DATA, GUEST, HOST, Stack, shared_stack_fixture
from tests.serving.stack import LaunchedServing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

stack = shared_stack_fixture()

TABLES = {GUEST: "breast_homo_guest", HOST: "breast_homo_host"}
# Two rounds of a small network: what is tested is the served arithmetic, not the training.
PIPELINE = f"""
name: serving-homo-nn
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: {TABLES[GUEST]}}}
      host: {{table: {TABLES[HOST]}}}
  - name: homo_nn_0
    type: homo_nn
    inputs: {{data: reader_0.data}}
    params:
      common: {{hidden_units: 4, rounds: 2, local_epochs: 1, batch_size: 64,
                learning_rate: 0.1, alpha: 0.01, seed: 3}}
  - name: predict_0
    type: homo_nn_predict
    inputs: {{model: homo_nn_0.model, data: reader_0.data}}
"""


@dataclass
class Trained:
    stack: Stack
    job_id: str
    offline: dict[str, float] = field(default_factory=dict)
    rows: dict[str, dict[str, float]] = field(default_factory=dict)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        client = self.stack.guest
        headers = kwargs.pop("headers", client._headers)
        return httpx.request(
            method, f"{client.base_url}/api/v1/serving{path}", headers=headers, timeout=30, **kwargs
        )

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api(method, path, **kwargs)
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json()


def guest_rows() -> dict[str, dict[str, float]]:
    with open(DATA / f"{TABLES[GUEST]}.csv") as f:
        return {
            row["id"]: {k: float(v) for k, v in row.items() if k not in ("id", "y")}
            for row in csv.DictReader(f)
        }


@pytest.fixture(scope="module")
def trained(stack: Stack) -> Iterator[Trained]:
    """The homo_nn job done, its offline scores at the guest, the guest's serving service up."""
    stack.guest.upload_table(
        TABLES[GUEST], DATA / f"{TABLES[GUEST]}.csv", label_column="y", replace=True
    )
    stack.host.upload_table(
        TABLES[HOST], DATA / f"{TABLES[HOST]}.csv", label_column="y", replace=True
    )
    stack.host.grant(TABLES[HOST], GUEST, ["homo_nn", "homo_nn_predict"])
    serving = LaunchedServing(stack.state, GUEST)
    local.start_service(stack.state, GUEST, "serving")  # comes up while the job runs
    try:
        job = stack.guest.submit(PIPELINE, job_id=f"serving-nn-{uuid.uuid4().hex[:6]}")
        ended = stack.guest.wait(job.job_id, timeout=300)
        assert ended.state == "success", ended.reason
        engine = make_engine(stack.state.parties[GUEST].database_url)
        try:
            table = ArtifactStore(engine).get(job.job_id, GUEST, "guest", "predict_0.data")
        finally:
            engine.dispose()
        score = table.feature_names.index("score")
        ready = Trained(stack, job.job_id, rows=guest_rows())
        ready.offline = {
            str(i): float(s)
            for i, s in zip(table.ids.tolist(), table.features[:, score], strict=True)
        }
        local.wait_healthy(stack.state, GUEST, 90, service="serving")
        yield ready
    finally:
        serving.stop()  # the shared stack as it was: no serving service


def test_a_homo_nn_job_served_guest_only_scores_as_its_offline_prediction(trained: Trained) -> None:
    # Prepare: the job's model published at the guest alone (no host holds a part of it:
    # proposed to the host it is refused, 422), bound as a service
    proposed = trained.api(
        "POST", "/models", json={"job_id": trained.job_id, "name": "nn", "component": "homo_nn_0"}
    )
    assert proposed.status_code == 422 and "guest_only" in proposed.text
    published = trained.ok(
        "POST",
        "/models",
        json={
            "job_id": trained.job_id,
            "name": "nn",
            "component": "homo_nn_0",
            "guest_only": True,
        },
    )
    assert (published["version"], published["state"], published["hosts"]) == (1, "ready", {})
    assert published["algorithm"] == "homo_nn"
    trained.ok("POST", "/services", json={"service_id": "nn-risk", "name": "nn", "version": 1})
    ids = sorted(trained.offline)

    # Execute: one row per request for a few rows, then every row in one batch
    single = {
        i: trained.api("POST", "/nn-risk/predict", json={"id": i, "features": trained.rows[i]})
        for i in ids[:10]
    }
    batch = trained.ok(
        "POST",
        "/nn-risk/predict/batch",
        json={"rows": [{"id": i, "features": trained.rows[i]} for i in ids]},
    )

    # Assert: homo_nn_predict's scores of the same rows within 1e-9, from version 1
    for row_id, response in single.items():
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["version"], answer["fallback"]) == (1, False)
        assert abs(answer["score"] - trained.offline[row_id]) <= 1e-9
    got = np.array([r["score"] for r in batch["results"]])
    want = np.array([trained.offline[i] for i in ids])
    assert batch["count"] == len(ids) == 227
    assert np.max(np.abs(got - want)) <= 1e-9
    # The service's schema names the network's 30 input features; a feature it lacks is 422
    schema = trained.ok("GET", "/nn-risk/schema")
    assert schema["feature_names"] == [f"x{j}" for j in range(30)]
    short = {k: v for k, v in trained.rows[ids[0]].items() if k != "x29"}
    refused = trained.api("POST", "/nn-risk/predict", json={"id": ids[0], "features": short})
    assert refused.status_code == 422 and "x29" in refused.text
