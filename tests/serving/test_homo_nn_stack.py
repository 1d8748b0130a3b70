"""A homo_nn model served at the party that trained it, on the local two-party stack over
RabbitMQ: a real job (reader, homo_nn's built-in network over secure aggregation through both
gateways, homo_nn_predict) on the session's shared stack, the guest's serving service started
beside it, the model published guest-only, bound, and scored through the guest's REST API equal
to the job's own offline prediction within 1e-9. The same served model, needing no host call,
also checks what is the same for every model: a batch of 10,000 rows is taken and one of
10,001 refused, and `fedmq model publish` / `fedmq serving bind|switch|status|predict|events`
against the guest's gateway.

The shared stack runs without serving services (`fedmq local up --without serving`); the
launcher made the serving service's broker user all the same, so the module starts the guest's
with `fedmq local`'s own function and stops it at the end, leaving the stack as it found it.
A homo_nn model needs no host at serving time, so the host's serving service is not started.
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore
from typer.testing import CliRunner

from fedmq import local
from fedmq.cli import app
from tests.local_stack import DATA, GUEST, HOST, Stack, shared_stack_fixture
from tests.serving.stack import LaunchedServing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

stack = shared_stack_fixture()

MAX_BATCH_ROWS = 10_000
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
    # Comes up while the job runs; its per-caller limit lets one 10,000-row batch through
    limit = "FEDMQ_SERVING_RATE_LIMIT_ROWS_PER_S"
    before = os.environ.get(limit)
    os.environ[limit] = str(2 * MAX_BATCH_ROWS)
    try:
        local.start_service(stack.state, GUEST, "serving")
    finally:
        if before is None:
            del os.environ[limit]
        else:
            os.environ[limit] = before
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


def test_a_batch_takes_up_to_10000_rows_and_refuses_one_more(trained: Trained) -> None:
    # Prepare: the model bound on its own service; the guest's rows repeated to 10,000
    published = trained.ok(
        "POST",
        "/models",
        json={
            "job_id": trained.job_id,
            "name": "nn-batch",
            "component": "homo_nn_0",
            "guest_only": True,
        },
    )
    bind = {"service_id": "nn-batch", "name": "nn-batch", "version": published["version"]}
    trained.ok("POST", "/services", json=bind)
    ids = sorted(trained.offline)
    rows = [
        {"id": ids[i % len(ids)], "features": trained.rows[ids[i % len(ids)]]}
        for i in range(MAX_BATCH_ROWS)
    ]
    # One row more, each without features: the count alone is refused
    too_many = [{"id": str(i), "features": {}} for i in range(MAX_BATCH_ROWS + 1)]

    # Execute
    full = trained.api("POST", "/nn-batch/predict/batch", json={"rows": rows})
    over = trained.api("POST", "/nn-batch/predict/batch", json={"rows": too_many})

    # Assert: every one of 10,000 rows scored as offline; 10,001 refused (422) naming the limit
    assert full.status_code == 200, full.text[:500]
    got = np.array([r["score"] for r in full.json()["results"]])
    want = np.array([trained.offline[r["id"]] for r in rows])
    assert got.shape == (MAX_BATCH_ROWS,) and np.max(np.abs(got - want)) <= 1e-9
    assert over.status_code == 422 and "10000" in over.text


def fedmq(trained: Trained) -> Callable[..., str]:
    """`fedmq ARGS --url --token` against the guest's gateway: its output, its exit status
    checked (`code`)."""
    gateway = trained.stack.guest
    login = ["--url", gateway.base_url, "--token", gateway._headers["Authorization"].split()[1]]
    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, *login])
        assert result.exit_code == code, result.output
        return result.output

    return cli


def test_the_serving_cli_publishes_binds_switches_and_shows_status(trained: Trained) -> None:
    # Prepare: `fedmq ... --url --token` against the guest's gateway
    cli = fedmq(trained)

    # Execute: publish two versions, bind the first, switch to the second, read the status
    for _ in range(2):
        cli(
            "model",
            "publish",
            trained.job_id,
            "--name",
            "nn-cli",
            "--component",
            "homo_nn_0",
            "--guest-only",
            "--json",
        )
    bound = cli("serving", "bind", "nn-cli", "nn-cli", "1")
    switched = cli("serving", "switch", "nn-cli", "2")
    status = json.loads(cli("serving", "status", "nn-cli", "--json"))["data"][0]
    row_id = sorted(trained.offline)[0]
    features = [f"--feature={k}={v!r}" for k, v in trained.rows[row_id].items()]
    answer = json.loads(cli("serving", "predict", "nn-cli", row_id, *features))
    events = json.loads(cli("serving", "events", "nn-cli", "--json"))["data"]

    # Assert: what each command said is what the registry holds, and the service answers on
    # version 2 with the offline score
    assert "service nn-cli: nn-cli v1" in bound and "service nn-cli: nn-cli v2" in switched
    assert (status["version"], status["previous_version"], status["state"]) == (2, 1, "serving")
    assert answer["version"] == 2 and abs(answer["score"] - trained.offline[row_id]) <= 1e-9
    assert [e["action"] for e in events] == ["bind", "switch"]


def test_an_exported_version_deleted_and_imported_again_serves_as_before(
    trained: Trained, tmp_path: Path
) -> None:
    # Prepare: a version bound, then switched away from, exported as a signed file
    cli = fedmq(trained)
    body = {"job_id": trained.job_id, "name": "nn-io", "component": "homo_nn_0", "guest_only": True}
    for _ in range(2):
        trained.ok("POST", "/models", json=body)
    trained.ok("POST", "/services", json={"service_id": "nn-io", "name": "nn-io", "version": 1})
    trained.ok("POST", "/services/nn-io/switch", json={"version": 2})
    exported = tmp_path / "nn-io-1.json"
    cli("model", "export", "nn-io", "1", "-o", str(exported))
    document = json.loads(exported.read_text())
    tampered = tmp_path / "tampered.json"
    document["model"]["weights"][0] += 1e-6
    tampered.write_text(json.dumps(document))

    # Execute: version 1 deleted (a rollback to it is now refused), the tampered file and the
    # signed one imported, then the rollback
    cli("model", "delete", "nn-io", "1")
    no_return = cli("serving", "rollback", "nn-io", code=2)
    refused = cli("model", "import", str(tampered), code=2)
    imported = cli("model", "import", str(exported))
    cli("serving", "rollback", "nn-io")
    row_id = sorted(trained.offline)[1]
    answer = trained.ok(
        "POST", "/nn-io/predict", json={"id": row_id, "features": trained.rows[row_id]}
    )

    # Assert: the tampered file is refused (422), the signed one restores version 1, which
    # scores as the job's offline prediction
    assert "409" in no_return and "version 1" in no_return
    assert "422" in refused
    assert "nn-io" in imported and "version 1" in imported
    assert answer["version"] == 1 and abs(answer["score"] - trained.offline[row_id]) <= 1e-9
