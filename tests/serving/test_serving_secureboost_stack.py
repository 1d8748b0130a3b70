"""A hetero_secureboost model served on the local two-party stack over RabbitMQ: trained by a job
(2048-bit keys), published at both parties, bound, and scored through the guest's REST API with
the host's split directions fetched through both gateways; every row's online score equals the
job's offline hetero_secureboost_predict output within 1e-9.

Training SecureBoost with 2048-bit keys on the stack takes minutes on this machine, past the
suite's time budget, so it runs only with FEDMQ_SERVING_FULL=1 (as FEDMQ_FAULTS_FULL and
FEDMQ_WAN_FULL do); tests/serving/test_serving_secureboost.py covers the same scoring in one
process by default."""

from __future__ import annotations

import os

import pytest
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore

from tests.local_stack import GUEST, HOST, Stack, stack_fixture, upload_breast
from tests.serving.stack import LaunchedServing
from tests.serving.test_serving_secureboost import PIPELINE as UNIT_PIPELINE
from tests.serving.test_serving_stack import Parties, guest_rows

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        os.environ.get("FEDMQ_SERVING_FULL") != "1", reason="FEDMQ_SERVING_FULL=1 runs it"
    ),
]

stack = stack_fixture("servingsb", serving=True, env={"FEDMQ_SERVING_ACCEPT_MODELS_FROM": '["*"]'})
# The unit test's pipeline, with one tree and the production key length: 2,048 bits cross
# both gateways here
PIPELINE = UNIT_PIPELINE.replace(
    "common: {num_trees: 2, max_depth: 3, max_bin: 16, seed: 3, key_bits: 512,\n"
    "                insecure_short_keys: true}",
    "common: {num_trees: 1, max_depth: 3, max_bin: 16, seed: 3}",
)
assert PIPELINE != UNIT_PIPELINE, "the unit test's boost_0 params changed: update this one"


def test_a_secureboost_model_scores_online_as_offline_through_both_gateways(
    stack: Stack,
) -> None:
    # Prepare: a job trains the model; each party holds its part
    parties = Parties(
        stack, LaunchedServing(stack.state, GUEST), LaunchedServing(stack.state, HOST)
    )
    upload_breast(stack)
    stack.host.grant(
        "breast_hetero_host", GUEST, ["psi", "hetero_secureboost", "hetero_secureboost_predict"]
    )
    job = stack.guest.submit(PIPELINE, job_id="serving-boost")
    ended = stack.guest.wait(job.job_id, timeout=800)
    assert ended.state == "success", ended.reason
    engine = make_engine(stack.state.parties[GUEST].database_url)
    try:
        table = ArtifactStore(engine).get(job.job_id, GUEST, "guest", "predict_0.data")
    finally:
        engine.dispose()
    score = table.feature_names.index("score")
    offline = {
        str(i): float(s) for i, s in zip(table.ids.tolist(), table.features[:, score], strict=True)
    }
    parties.ok(HOST, "POST", "/features", json={"table": "breast_hetero_host"})

    # Execute: published, bound, every row scored in one batch through the REST API
    model = parties.ok(
        GUEST,
        "POST",
        "/models",
        json={"job_id": job.job_id, "name": "boost", "component": "boost_0"},
    )
    assert (model["algorithm"], model["state"]) == ("hetero_secureboost", "ready")
    bind = {"service_id": "boost", "name": "boost", "version": 1}
    parties.ok(GUEST, "POST", "/services", json=bind)
    rows = guest_rows()
    batch = [{"id": i, "features": rows[i]} for i in sorted(offline)]
    got = parties.ok(GUEST, "POST", "/boost/predict/batch", json={"rows": batch})["results"]

    # Assert
    assert len(got) == len(offline) == 569
    assert max(abs(r["score"] - offline[r["id"]]) for r in got) <= 1e-9
