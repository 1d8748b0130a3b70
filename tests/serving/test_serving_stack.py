"""Online serving on the local two-party stack over RabbitMQ (gateways, schedulers, workers and
each party's serving service as processes): a hetero_lr model trained by a job is published at
both parties, bound to a service id, and answers through the guest's REST API with the host's
partial scores fetched through both gateways; the scores equal the job's offline
hetero_lr_predict; versions switch under load without a failed request; a killed host gives 503
naming it; bad requests are refused with the right status."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from fedmq.cli import app
from tests.local_stack import DATA, GUEST, HOST, Stack, stack_fixture, upload_breast
from tests.polling import wait_for
from tests.serving.stack import LaunchedServing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

GUEST_RATE_LIMIT = 5000
# `fedmq local up` with the serving service (both gateways expose svc.serving); the host
# accepts the guest's model publications at once.
stack = stack_fixture(
    "serving",
    serving=True,
    env={
        "FEDMQ_SERVING_ACCEPT_MODELS_FROM": '["*"]',
        "FEDMQ_SERVING_RATE_LIMIT_ROWS_PER_S": str(GUEST_RATE_LIMIT),
        # A re-uploaded feature table is picked up within a second (the last test)
        "FEDMQ_SERVING_FEATURE_REFRESH_S": "1",
    },
)
PIPELINE = f"""
name: serving-hetero-lr
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: hetero_lr_0
    type: hetero_lr
    inputs: {{data: psi_0.data}}
    params:
      common: {{epochs: 1, batch_size: 1024, learning_rate: 0.5, seed: 1}}
  - name: predict_0
    type: hetero_lr_predict
    inputs: {{model: hetero_lr_0.model, data: psi_0.data}}
"""


class Parties:
    def __init__(self, stack: Stack, guest: LaunchedServing, host: LaunchedServing) -> None:
        self.stack, self.guest, self.host = stack, guest, host
        self.job_id = ""
        self.offline: dict[str, float] = {}
        self.rows: dict[str, dict[str, float]] = {}

    def api(self, party: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        client = self.stack.guest if party == GUEST else self.stack.host
        headers = kwargs.pop("headers", client._headers)
        return httpx.request(
            method,
            f"{client.base_url}/api/v1/serving{path}",
            headers=headers,
            timeout=30,
            **kwargs,
        )

    def ok(self, party: str, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api(party, method, path, **kwargs)
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json()


def guest_rows() -> dict[str, dict[str, float]]:
    with open(DATA / "breast_hetero_guest.csv") as f:
        return {
            row["id"]: {k: float(v) for k, v in row.items() if k not in ("id", "y")}
            for row in csv.DictReader(f)
        }


@pytest.fixture(scope="module")
def parties(stack: Stack) -> Parties:
    guest, host = LaunchedServing(stack.state, GUEST), LaunchedServing(stack.state, HOST)
    ready = Parties(stack, guest, host)
    upload_breast(stack)
    stack.host.grant("breast_hetero_host", GUEST, ["psi", "hetero_lr", "hetero_lr_predict"])
    job = stack.guest.submit(PIPELINE, job_id="serving-train")
    ended = stack.guest.wait(job.job_id, timeout=400)
    assert ended.state == "success", ended.reason
    ready.job_id = job.job_id
    # The job's own offline scores, at the guest (its predict_0 output)
    engine = make_engine(stack.state.parties[GUEST].database_url)
    try:
        table = ArtifactStore(engine).get(job.job_id, GUEST, "guest", "predict_0.data")
    finally:
        engine.dispose()
    score = table.feature_names.index("score")
    ready.offline = {
        str(i): float(s) for i, s in zip(table.ids.tolist(), table.features[:, score], strict=True)
    }
    ready.rows = guest_rows()
    loaded = ready.ok(HOST, "POST", "/features", json={"table": "breast_hetero_host"})
    assert loaded["rows"] == 569
    return ready


@pytest.fixture(scope="module")
def service(parties: Parties) -> str:
    """Model `credit` published twice (versions 1 and 2, the same job) and bound as `risk`."""
    for version in (1, 2):
        model = parties.ok(
            GUEST, "POST", "/models", json={"job_id": parties.job_id, "name": "credit"}
        )
        assert (model["version"], model["state"], model["hosts"]) == (
            version,
            "ready",
            {HOST: "ready"},
        )
    parties.ok(
        GUEST, "POST", "/services", json={"service_id": "risk", "name": "credit", "version": 1}
    )
    return "risk"


def predict(parties: Parties, service: str, row_id: str, **extra: Any) -> httpx.Response:
    body = {"id": row_id, "features": parties.rows[row_id], **extra}
    return parties.api(GUEST, "POST", f"/{service}/predict", json=body)


def test_each_party_holds_its_own_part_of_the_published_model(
    parties: Parties, service: str
) -> None:
    guest_model = parties.ok(GUEST, "GET", "/models/credit/1")
    host_model = parties.ok(HOST, "GET", "/models/credit/1", params={"owner_party": GUEST})
    assert guest_model["role"] == "guest" and "intercept" in guest_model["feature_names"]
    assert host_model["role"] == "host" and host_model["state"] == "ready"
    # Each holds only its own weights: 10 + intercept at the guest, 20 at the host
    assert len(guest_model["feature_names"]) == 11 and len(host_model["feature_names"]) == 20
    assert "weights" not in guest_model and "weights" not in host_model
    # The CLI shows the same registry
    token = parties.stack.guest._headers["Authorization"].split()[1]
    listed = CliRunner().invoke(
        app,
        ["model", "list", "--url", parties.stack.guest.base_url, "--token", token, "--json"],
    )
    assert listed.exit_code == 0, listed.output
    assert [(m["name"], m["version"]) for m in json.loads(listed.output)["data"]] == [
        ("credit", 1),
        ("credit", 2),
    ]
    schema = parties.ok(GUEST, "GET", f"/{service}/schema")
    assert schema["feature_names"] == [f"x{i}" for i in range(10)]


def test_online_scores_equal_the_jobs_offline_prediction(parties: Parties, service: str) -> None:
    ids = sorted(parties.offline)
    # One row per request for a few rows...
    for row_id in ids[:15]:
        response = predict(parties, service, row_id)
        assert response.status_code == 200, response.text
        assert abs(response.json()["score"] - parties.offline[row_id]) <= 1e-9
    # ...and every row in one batch
    rows = [{"id": i, "features": parties.rows[i]} for i in ids]
    batch = parties.ok(GUEST, "POST", f"/{service}/predict/batch", json={"rows": rows})
    got = np.array([r["score"] for r in batch["results"]])
    want = np.array([parties.offline[i] for i in ids])
    assert batch["count"] == len(ids) == 569
    assert np.max(np.abs(got - want)) <= 1e-9


def test_bad_requests_are_refused_with_their_reason(parties: Parties, service: str) -> None:
    row_id = sorted(parties.offline)[0]
    wrong = parties.api(
        GUEST,
        "POST",
        f"/{service}/predict",
        headers={"Authorization": "Bearer nope"},
        json={"id": row_id, "features": parties.rows[row_id]},
    )
    assert wrong.status_code == 401
    unknown = predict(parties, "no-such-service", row_id)
    assert unknown.status_code == 404 and "no-such-service" in unknown.text
    short = dict(parties.rows[row_id])
    del short["x3"]
    missing = parties.api(
        GUEST, "POST", f"/{service}/predict", json={"id": row_id, "features": short}
    )
    assert missing.status_code == 422 and "x3" in missing.text
    extra = parties.api(
        GUEST,
        "POST",
        f"/{service}/predict",
        json={"id": row_id, "features": {**parties.rows[row_id], "x99": 1.0}},
    )
    assert extra.status_code == 422 and "x99" in extra.text
    text = parties.api(
        GUEST,
        "POST",
        f"/{service}/predict",
        json={"id": row_id, "features": {**parties.rows[row_id], "x0": "a"}},
    )
    assert text.status_code == 422
    absent = parties.api(
        GUEST,
        "POST",
        f"/{service}/predict",
        json={"id": "no-such-id", "features": parties.rows[row_id]},
    )
    assert absent.status_code == 404
    assert f"party {HOST}" in absent.text and "no-such-id" in absent.text
    too_many = [{"id": row_id, "features": parties.rows[row_id]}] * (GUEST_RATE_LIMIT + 1)
    limited = parties.api(GUEST, "POST", f"/{service}/predict/batch", json={"rows": too_many})
    assert limited.status_code == 429


def test_canary_is_sticky_and_switch_and_rollback_fail_no_request(
    parties: Parties, service: str
) -> None:
    ids = sorted(parties.offline)[:8]
    failures: list[str] = []
    served: list[int] = []
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            response = predict(parties, service, ids[n % len(ids)])
            n += 1
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text}")
            else:
                served.append(response.json()["version"])
            time.sleep(0.01)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        # A canary at 50%: each key keeps its version from one request to the next
        parties.ok(GUEST, "POST", f"/services/{service}/canary", json={"version": 2, "percent": 50})
        first = {i: predict(parties, service, i).json()["version"] for i in ids}
        again = {i: predict(parties, service, i).json()["version"] for i in ids}
        assert first == again and set(first.values()) == {1, 2}
        parties.ok(GUEST, "POST", f"/services/{service}/switch", json={"version": 2})
        time.sleep(0.5)
        parties.ok(GUEST, "POST", f"/services/{service}/rollback")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert len(served) > 10 and {1, 2} <= set(served)
    assert parties.ok(GUEST, "GET", f"/services/{service}")["version"] == 1
    actions = [
        e["action"]
        for e in parties.ok(GUEST, "GET", "/events", params={"service_id": service})["data"]
    ]
    assert actions == ["bind", "canary", "switch", "rollback"]


def serving_events_in_audit(parties: Parties, party: str) -> list[str]:
    """The serving.event actions in `party`'s audit log, in log order (its export)."""
    client = parties.stack.guest if party == GUEST else parties.stack.host
    response = httpx.get(
        f"{client.base_url}/api/v1/audit/export", headers=client._headers, timeout=30
    )
    assert response.status_code == 200, response.text
    records = [json.loads(line).get("record") for line in response.text.splitlines()[1:]]
    return [r["facts"]["serving_action"] for r in records if r and r["type"] == "serving.event"]


def test_lifecycle_events_reach_each_partys_audit_and_openapi_names_the_features(
    parties: Parties, service: str
) -> None:
    # The guest's publishes, bind, canary, switch and rollback; the host's two proposals
    guest_actions = ["publish", "publish", "bind", "canary", "switch", "rollback"]
    wait_for(
        lambda: serving_events_in_audit(parties, GUEST)[:6] == guest_actions or None,
        timeout=20,
        what="the guest's serving events in its audit log",
        describe=lambda: serving_events_in_audit(parties, GUEST),
    )
    assert serving_events_in_audit(parties, HOST)[:2] == ["propose", "propose"]
    # The per-service OpenAPI document requires exactly the guest's features
    doc = parties.ok(GUEST, "GET", "/openapi.json")
    features = doc["components"]["schemas"][f"{service}.Features"]
    assert sorted(features["required"]) == sorted(next(iter(parties.rows.values())))
    assert f"/api/v1/serving/{service}/predict/batch" in doc["paths"]


def guest_only_score(parties: Parties, row_id: str) -> float:
    """sigma([x_g, 1] . w_g): the guest's part of the job's model alone (its model output)."""
    engine = make_engine(parties.stack.state.parties[GUEST].database_url)
    try:
        model = ArtifactStore(engine).get(parties.job_id, GUEST, "guest", "hetero_lr_0.model")
    finally:
        engine.dispose()
    weights = dict(zip(model.ids.tolist(), model.features[:, 0].tolist(), strict=True))
    z = weights.pop("intercept") + sum(w * parties.rows[row_id][f] for f, w in weights.items())
    return float(1 / (1 + np.exp(-z)))


def requests_counted(metrics: str, service: str, party: str, outcome: str) -> float:
    """fedmq_serving_requests_total of `service` (version 1) at `party` with `outcome`."""
    want = {"service": service, "version": "1", "party": party, "outcome": outcome}
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "fedmq_serving_requests_total" and sample.labels == want
    )


def test_a_killed_host_gives_503_naming_it_or_the_guest_only_fallback_and_serving_resumes(
    parties: Parties, service: str
) -> None:
    # Prepare: the same version bound a second time, with the guest-only fallback
    fallback = "risk-guest-only"
    bind = {"service_id": fallback, "name": "credit", "version": 1, "fallback": "guest_only"}
    parties.ok(GUEST, "POST", "/services", json=bind)
    row_id = sorted(parties.offline)[0]
    guest_only = guest_only_score(parties, row_id)
    assert abs(guest_only - parties.offline[row_id]) > 1e-3  # the host's part counts
    counted = [
        (fallback, GUEST, "fallback"),
        (fallback, GUEST, "ok"),
        (service, GUEST, "unavailable"),
        *((s, HOST, o) for s in (service, fallback) for o in ("timeout", "failed", "refused")),
    ]
    before = parties.guest.metrics()

    # Execute: the host's serving service SIGKILLed; each service asked once, then the host back
    parties.host.kill()
    try:
        started = time.monotonic()
        response = predict(parties, service, row_id, timeout_s=0.5)
        elapsed = time.monotonic() - started
        started = time.monotonic()
        fell_back = predict(parties, fallback, row_id, timeout_s=0.5)
        elapsed_fallback = time.monotonic() - started
    finally:
        parties.host.start()
    recovered = predict(parties, service, row_id)
    both_again = predict(parties, fallback, row_id)

    # Assert: refuse is a 503 naming the host; guest_only answers from the guest's part alone,
    # marked and counted as a fallback; both answer two-party scores once the host is back
    assert response.status_code == 503, response.text
    assert f"host party {HOST}" in response.text
    assert elapsed < 5
    assert fell_back.status_code == 200, fell_back.text
    assert fell_back.json()["fallback"] is True and elapsed_fallback < 5
    assert abs(fell_back.json()["score"] - guest_only) <= 1e-9
    for answer in (recovered, both_again):
        assert answer.status_code == 200, answer.text
        assert answer.json()["fallback"] is False
        assert abs(answer.json()["score"] - parties.offline[row_id]) <= 1e-9
    after = parties.guest.metrics()
    added = {key: requests_counted(after, *key) - requests_counted(before, *key) for key in counted}
    assert added[(fallback, GUEST, "fallback")] == 1
    assert added[(fallback, GUEST, "ok")] == 1  # the answer once the host was back
    assert added[(service, GUEST, "unavailable")] == 1
    assert sum(n for (_, party, _), n in added.items() if party == HOST) == 2  # silent twice


def test_unbind_waits_for_requests_in_flight_then_refuses_new_ones(
    parties: Parties, service: str
) -> None:
    ids = sorted(parties.offline)
    # A batch large enough to be seen in flight (the ids repeated), under the caller's limit
    rows = [
        {"id": ids[i % len(ids)], "features": parties.rows[ids[i % len(ids)]]} for i in range(4000)
    ]
    results: list[int] = []
    batch = threading.Thread(
        target=lambda: results.append(
            parties.api(GUEST, "POST", f"/{service}/predict/batch", json={"rows": rows}).status_code
        )
    )
    batch.start()
    deadline = time.monotonic() + 20
    while parties.ok(GUEST, "GET", f"/services/{service}")["in_flight"] == 0:
        assert batch.is_alive() and time.monotonic() < deadline, "the batch was never in flight"
        time.sleep(0.005)
    unbound = parties.ok(GUEST, "DELETE", f"/services/{service}")
    batch.join()
    assert unbound["drained"] is True and results == [200]
    assert predict(parties, service, ids[0]).status_code == 404
    actions = [
        e["action"]
        for e in parties.ok(GUEST, "GET", "/events", params={"service_id": service})["data"]
    ]
    assert actions[-2:] == ["unbind_started", "unbind"]


def test_a_reuploaded_host_table_is_served_without_reloading_it_by_hand(
    parties: Parties, service: str, tmp_path: Path
) -> None:
    # Prepare: the host's table uploaded again without its first row
    source = (DATA / "breast_hetero_host.csv").read_text().splitlines()
    dropped = source[1].split(",")[0]
    kept = source[2].split(",")[0]
    smaller = tmp_path / "breast_hetero_host.csv"
    smaller.write_text("\n".join([source[0], *source[2:]]) + "\n")
    bind = {"service_id": "risk-again", "name": "credit", "version": 1}
    parties.ok(GUEST, "POST", "/services", json=bind)

    # Execute
    parties.stack.host.upload_table("breast_hetero_host", smaller, replace=True)

    # Assert: the host's serving reloads it by itself; the dropped id is now unknown there
    missing = wait_for(
        lambda: ((r := predict(parties, "risk-again", dropped)).status_code == 404 and r) or None,
        timeout=20,
        what="the host serves the re-uploaded table",
    )
    assert f"party {HOST}" in missing.text and repr(dropped) in missing.text
    again = predict(parties, "risk-again", kept)
    assert again.status_code == 200 and abs(again.json()["score"] - parties.offline[kept]) <= 1e-9
