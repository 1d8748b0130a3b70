"""Online serving of a hetero_secureboost model: a model trained by a standalone job (each party's
part in its own database) is published at the guest, proposed to the host, bound and scored
online; every row's online score equals the job's offline hetero_secureboost_predict output
within 1e-9, and what the host answers holds split directions only, never a threshold. Two
parties' Serving objects in one process wired by a function (test_serving_units' Wire), with
the real Redis for the host's features."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fedflow.artifacts import ArtifactStore
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneResult, run_pipeline
from fedflow.tables import Table
from fedserving.features import FeatureStore, RateLimiter
from fedserving.handlers import Serving
from fedserving.metrics import ServingMetrics
from fedserving.registry import Registry, open_engine

from tests.secureboost.data import EXAMPLE_DATA, GUEST, HOST
from tests.serving.test_serving_units import Wire, ok, refused

PIPELINE = f"""
name: serving-secureboost
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
  - name: boost_0
    type: hetero_secureboost
    inputs: {{data: psi_0.data}}
    params:
      common: {{num_trees: 2, max_depth: 3, max_bin: 16, seed: 3, key_bits: 512,
                insecure_short_keys: true}}
  - name: predict_0
    type: hetero_secureboost_predict
    inputs: {{model: boost_0.model, data: psi_0.data}}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> StandaloneResult:
    tmp = tmp_path_factory.mktemp("boost")
    return run_pipeline(
        Pipeline.from_yaml(PIPELINE), {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp
    )


class Served:
    def __init__(self, guest: Serving, host: Serving, result: StandaloneResult) -> None:
        self.guest, self.host, self.result = guest, host, result
        self.host_answers: list[dict[str, Any]] = []


@pytest.fixture
def served(trained: StandaloneResult, redis_url: str) -> Iterator[Served]:
    client = redis.Redis.from_url(redis_url)
    wire = Wire()
    parties: dict[str, Serving] = {}
    for party_id in (GUEST, HOST):
        engine = open_engine(trained._engines[party_id])
        prefix = f"fedmq-test-boost-{party_id}-{id(wire)}:"
        parties[party_id] = Serving(
            party_id,
            Registry(engine, party_id),
            features=FeatureStore(client, prefix),
            limiter=RateLimiter(client, prefix),
            call=wire.caller(party_id),
            artifacts=ArtifactStore(engine),
            tables=None,
            job_parties=lambda job: {GUEST: ["guest"], HOST: ["host"]},
            metrics=ServingMetrics(),
            binding_refresh_s=0,
            accept_models_from=("*",),
        )
        wire.parties[party_id] = parties[party_id]
    ready = Served(parties[GUEST], parties[HOST], trained)
    # Record what the host answers the guest (the wire carries it as JSON)
    host_remote = parties[HOST].remote

    def recording(caller: str, body: bytes) -> bytes:
        reply = host_remote(caller, body)
        ready.host_answers.append(json.loads(reply))
        return reply

    parties[HOST].remote = recording  # type: ignore[method-assign]
    host_rows = trained.output(HOST, "host", "psi_0", "data")
    parties[HOST].features.load("online", host_rows, "sha-1")
    yield ready
    for serving in parties.values():
        serving.close()
    client.close()


def guest_requests(table: Table) -> list[dict[str, Any]]:
    names = list(table.feature_names)
    return [
        {
            "id": str(row_id),
            "features": {
                n: (None if math.isnan(v) else float(v)) for n, v in zip(names, row, strict=True)
            },
        }
        for row_id, row in zip(table.ids.tolist(), table.features.tolist(), strict=True)
    ]


def test_online_secureboost_scores_equal_the_jobs_offline_prediction(served: Served) -> None:
    # Prepare: the model published at both parties and bound
    result = served.result
    model = ok(
        served.guest, "model_publish", job_id=result.job_id, name="boost", component="boost_0"
    )
    assert (model["algorithm"], model["state"], model["hosts"]) == (
        "hetero_secureboost",
        "ready",
        {HOST: "ready"},
    )
    ok(served.guest, "service_bind", service_id="b", name="boost", version=1)
    rows = guest_requests(result.output(GUEST, "guest", "psi_0", "data"))
    offline = result.output(GUEST, "guest", "predict_0", "data")
    want = dict(
        zip(
            [str(i) for i in offline.ids.tolist()],
            offline.features[:, offline.feature_names.index("score")].tolist(),
            strict=True,
        )
    )

    # Execute: one batch of every row, and one row alone
    batch = ok(served.guest, "predict", service_id="b", rows=rows)["results"]
    one = ok(served.guest, "predict", service_id="b", rows=rows[7:8])["results"][0]

    # Assert: equal to the offline scores; the host answered split directions only
    assert len(batch) == len(want) == 569
    assert max(abs(r["score"] - want[r["id"]]) for r in batch) <= 1e-9
    assert abs(one["score"] - want[one["id"]]) <= 1e-9
    partials = [a["data"] for a in served.host_answers if a.get("ok") and "shape" in a["data"]]
    assert len(partials) == 2 and all(set(p) == {"directions", "shape"} for p in partials)
    assert partials[0]["shape"][0] == 569 and partials[0]["shape"][1] >= 1  # host nodes exist
    host_part = served.host.registry.model("boost", 1, GUEST)
    assert host_part.algorithm == "hetero_secureboost" and host_part.artifact is not None
    assert served.guest.registry.model("boost", 1).hosts == {HOST: "ready"}


def test_a_secureboost_model_refuses_guest_only_and_answers_a_missing_id_with_404(
    served: Served,
) -> None:
    result = served.result
    status, error = refused(
        served.guest,
        "model_publish",
        job_id=result.job_id,
        name="boost",
        component="boost_0",
        guest_only=True,
    )
    assert status == 422 and "guest_only" in error
    ok(served.guest, "model_publish", job_id=result.job_id, name="boost2", component="boost_0")
    ok(served.guest, "service_bind", service_id="b2", name="boost2", version=1)
    row = guest_requests(result.output(GUEST, "guest", "psi_0", "data"))[0]
    status, error = refused(
        served.guest, "predict", service_id="b2", rows=[{**row, "id": "not-an-id"}]
    )
    assert status == 404 and f"party {HOST}" in error and "'not-an-id'" in error
    # The trees do not fit a hetero_lr request shape: a feature missing is 422 as for LR
    del row["features"][next(iter(row["features"]))]
    assert refused(served.guest, "predict", service_id="b2", rows=[row])[0] == 422


def test_secureboost_requests_sent_as_one_message_share_the_host_call(served: Served) -> None:
    # Prepare: a bound model; six rows and an id the host lacks, as the gateway coalesces them
    result = served.result
    ok(served.guest, "model_publish", job_id=result.job_id, name="boost3", component="boost_0")
    ok(served.guest, "service_bind", service_id="b3", name="boost3", version=1)
    rows = guest_requests(result.output(GUEST, "guest", "psi_0", "data"))[:6]
    offline = result.output(GUEST, "guest", "predict_0", "data")
    want = dict(
        zip(
            [str(i) for i in offline.ids.tolist()],
            offline.features[:, offline.feature_names.index("score")].tolist(),
            strict=True,
        )
    )
    asked = [*rows, {**rows[0], "id": "not-an-id"}]
    served.host_answers.clear()

    # Execute
    answers = ok(
        served.guest,
        "predict_many",
        service_id="b3",
        requests=[{"rows": [row], "caller": "c"} for row in asked],
    )["answers"]

    # Assert: each its own offline score; the missing id refused alone; two host calls (all
    # seven, refused naming the id; the six others) instead of seven
    for row, answer in zip(rows, answers, strict=False):
        assert abs(answer["data"]["results"][0]["score"] - want[row["id"]]) <= 1e-9
    assert answers[6]["status"] == 404 and "'not-an-id'" in answers[6]["error"]
    assert [a.get("status") for a in served.host_answers] == [404, None]
