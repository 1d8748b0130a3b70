"""A hetero_secureboost model served on the local two-party stack over RabbitMQ: trained by a
job, published at both parties, bound, and scored through the guest's REST API with the host's
split directions fetched through both gateways; every row's online score equals the job's
offline hetero_secureboost_predict output within 1e-9, and what the host answers the guest holds
one bit per (row, host split node), never a threshold.

It runs on the session's shared plain stack (tests/local_stack.py: shared_stack_fixture), which
runs without serving services: the module starts both parties' with `fedmq local`'s own function
(the host accepting the guest's publications) and stops them at the end, leaving the stack as
it found it. The shared stack's policy is the default one (keys of at least 2,048 bits, so no
1,024-bit test keys here), so the job's keys are 2,048 bits; what keeps the default test cheap
is the model and the data: 120 rows, 2 guest and 6 host features, 2 trees of depth 3 over 8
bins, which still puts split nodes of both parties in each tree (asserted). On a warm shared
stack the module took 38 s at load 15-22, most of it the job (a 2,048-bit key's fixed-base
table costs the same whatever the rows).

FEDMQ_SERVING_FULL=1 adds the big variant: every row and feature of the breast data, a 1-tree
model (max_bin 16), on the same stack and serving services (61 s more at load 24-30)."""

from __future__ import annotations

import base64
import csv
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from fedbus import connect
from fedbus.remote import RemoteCaller
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import ArtifactStore, ModelArtifact
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.guest import model_from_artifact

from fedmq import local
from tests.local_stack import DATA, GUEST, HOST, Stack, shared_stack_fixture
from tests.serving.stack import LaunchedServing
from tests.serving.test_serving_stack import Parties

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

stack = shared_stack_fixture()

FULL = os.environ.get("FEDMQ_SERVING_FULL") == "1"
SERVICE_TOPIC = "svc.serving"
"""The serving service's topic for other parties' calls (fedserving.handlers.SERVICE_TOPIC)."""


@dataclass(frozen=True)
class Spec:
    """The data and the model of one job."""

    label: str
    rows: int | None  # the first rows of the breast data; None: all 569
    guest_features: int | None  # the first features of each party's half; None: all
    host_features: int | None
    trees: int
    depth: int
    max_bin: int

    def pipeline(self, guest_table: str, host_table: str) -> str:
        return f"""
name: serving-secureboost-{self.label}
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: {guest_table}}}
      host: {{table: {host_table}}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: boost_0
    type: hetero_secureboost
    inputs: {{data: psi_0.data}}
    params:
      common: {{num_trees: {self.trees}, max_depth: {self.depth}, max_bin: {self.max_bin},
                seed: 3}}
  - name: predict_0
    type: hetero_secureboost_predict
    inputs: {{model: boost_0.model, data: psi_0.data}}
"""


SMALL = Spec("small", rows=120, guest_features=2, host_features=6, trees=2, depth=3, max_bin=8)
BIG = Spec("full", rows=None, guest_features=None, host_features=None, trees=1, depth=3, max_bin=16)


@dataclass
class Trained:
    spec: Spec
    job_id: str
    host_table: str
    offline: dict[str, float]
    rows: dict[str, dict[str, float]]
    guest_part: ModelArtifact
    host_part: ModelArtifact
    host_rows: dict[str, dict[str, float]] = field(default_factory=dict)


def cut_table(source: Path, target: Path, spec: Spec, features: int | None, label: bool) -> None:
    """The first `spec.rows` rows and first `features` features of a breast half (id, [y])."""
    with open(source) as f:
        lines = list(csv.reader(f))
    keep = 1 + int(label) + (len(lines[0]) - 1 - int(label) if features is None else features)
    rows = lines[1:] if spec.rows is None else lines[1 : 1 + spec.rows]
    with open(target, "w", newline="") as f:
        csv.writer(f).writerows(line[:keep] for line in [lines[0], *rows])


def read_features(path: Path) -> dict[str, dict[str, float]]:
    with open(path) as f:
        return {
            row["id"]: {k: float(v) for k, v in row.items() if k not in ("id", "y")}
            for row in csv.DictReader(f)
        }


def train(stack: Stack, spec: Spec, tmp: Path) -> Trained:
    """The job done on `spec`'s tables; its offline scores and each party's model part."""
    tables = {GUEST: f"boost_{spec.label}_guest", HOST: f"boost_{spec.label}_host"}
    paths = {party: tmp / f"{name}.csv" for party, name in tables.items()}
    cut_table(DATA / "breast_hetero_guest.csv", paths[GUEST], spec, spec.guest_features, True)
    cut_table(DATA / "breast_hetero_host.csv", paths[HOST], spec, spec.host_features, False)
    stack.guest.upload_table(tables[GUEST], paths[GUEST], label_column="y", replace=True)
    stack.host.upload_table(tables[HOST], paths[HOST], replace=True)
    stack.host.grant(
        tables[HOST], GUEST, ["psi", "hetero_secureboost", "hetero_secureboost_predict"]
    )
    job = stack.guest.submit(
        spec.pipeline(tables[GUEST], tables[HOST]),
        job_id=f"serving-boost-{spec.label}-{uuid.uuid4().hex[:6]}",
    )
    ended = stack.guest.wait(job.job_id, timeout=500, poll=0.2)
    assert ended.state == "success", ended.reason
    engines = {party: make_engine(stack.state.parties[party].database_url) for party in paths}
    try:
        table = ArtifactStore(engines[GUEST]).get(job.job_id, GUEST, "guest", "predict_0.data")
        parts = {
            party: ArtifactStore(engines[party]).get_artifact(
                job.job_id, party, role, "boost_0.model"
            )
            for party, role in ((GUEST, "guest"), (HOST, "host"))
        }
    finally:
        for engine in engines.values():
            engine.dispose()
    guest_part, host_part = parts[GUEST], parts[HOST]
    assert isinstance(guest_part, ModelArtifact) and isinstance(host_part, ModelArtifact)
    score = table.feature_names.index("score")
    offline = {
        str(i): float(s) for i, s in zip(table.ids.tolist(), table.features[:, score], strict=True)
    }
    host_rows = read_features(paths[HOST])
    return Trained(
        spec,
        job.job_id,
        tables[HOST],
        offline,
        read_features(paths[GUEST]),
        guest_part,
        host_part,
        host_rows,
    )


@pytest.fixture(scope="module")
def parties(stack: Stack) -> Iterator[Parties]:
    """Both parties' serving services started beside the shared stack (the host accepting the
    guest's publications), stopped at the end."""
    accept = "FEDMQ_SERVING_ACCEPT_MODELS_FROM"
    before = os.environ.get(accept)
    os.environ[accept] = '["*"]'
    try:
        for party in (GUEST, HOST):
            local.start_service(stack.state, party, "serving")
    finally:
        if before is None:
            del os.environ[accept]
        else:
            os.environ[accept] = before
    guest, host = LaunchedServing(stack.state, GUEST), LaunchedServing(stack.state, HOST)
    try:
        yield Parties(stack, guest, host)
    finally:
        guest.stop()
        host.stop()


def serve(parties: Parties, trained: Trained, name: str) -> None:
    """The model published at both parties (the host's table loaded) and bound as `name`."""
    for party in (GUEST, HOST):
        local.wait_healthy(parties.stack.state, party, 90, service="serving")
    loaded = parties.ok(HOST, "POST", "/features", json={"table": trained.host_table})
    assert loaded["rows"] == len(trained.host_rows)
    model = parties.ok(
        GUEST,
        "POST",
        "/models",
        json={"job_id": trained.job_id, "name": name, "component": "boost_0"},
    )
    assert (model["algorithm"], model["state"], model["hosts"]) == (
        "hetero_secureboost",
        "ready",
        {HOST: "ready"},
    )
    parties.ok(GUEST, "POST", "/services", json={"service_id": name, "name": name, "version": 1})


def host_nodes(trained: Trained) -> list[tuple[int, int]]:
    """The host's split nodes (tree, node) in the guest's part, in the host's answer's order."""
    model, _ = model_from_artifact(trained.guest_part)
    return [
        (t, node)
        for t, tree in enumerate(model.trees)
        for node in np.flatnonzero((tree.kind == sbmath.SPLIT) & (tree.party == 1)).tolist()
    ]


def scored_online_as_offline(parties: Parties, trained: Trained, service: str) -> None:
    ids = sorted(trained.offline)
    batch = [{"id": i, "features": trained.rows[i]} for i in ids]
    got = parties.ok(GUEST, "POST", f"/{service}/predict/batch", json={"rows": batch})["results"]
    assert len(got) == len(trained.offline) == (trained.spec.rows or 569)
    assert max(abs(r["score"] - trained.offline[r["id"]]) for r in got) <= 1e-9
    for row_id in ids[:3]:  # one row per request too
        one = parties.ok(
            GUEST,
            "POST",
            f"/{service}/predict",
            json={"id": row_id, "features": trained.rows[row_id]},
        )
        assert one["fallback"] is False
        assert abs(one["score"] - trained.offline[row_id]) <= 1e-9


@pytest.fixture(scope="module")
def small(stack: Stack, parties: Parties, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    trained = train(stack, SMALL, tmp_path_factory.mktemp("boost-small"))
    serve(parties, trained, "boost-small")
    return trained


def test_a_small_secureboost_model_scores_online_as_offline_through_both_gateways(
    parties: Parties, small: Trained
) -> None:
    # Prepare: the model has split nodes of both parties in each tree (else the host's
    # directions, or the guest's bins, would not be exercised)
    model, _ = model_from_artifact(small.guest_part)
    for tree in model.trees:
        owners = set(tree.party[tree.kind == sbmath.SPLIT].tolist())
        assert owners == {0, 1}, f"a tree without split nodes of both parties: {owners}"

    # Execute, Assert: every row in one batch, and a few alone
    scored_online_as_offline(parties, small, "boost-small")


def test_the_hosts_answer_holds_one_direction_bit_per_split_node_and_no_threshold(
    parties: Parties, small: Trained
) -> None:
    # Prepare: the call the guest's serving service makes, sent the same way (its broker
    # user, its gateway, the host's gateway, the host's serving service)
    ids = sorted(small.offline)
    nodes = host_nodes(small)
    body = {"op": "partial", "name": "boost-small", "version": 1, "ids": ids}
    bus = connect(local.service_bus_url(parties.stack.state, GUEST, "serving"))
    try:
        # Execute
        reply = RemoteCaller(bus, GUEST).call(
            HOST, SERVICE_TOPIC, json.dumps(body).encode(), timeout=10
        )
    finally:
        bus.close()

    # Assert: the answer is the packed bits and their shape, nothing more (no byte beyond the
    # bits: no threshold, no feature); each bit the side the host's threshold sends the row to
    answer = json.loads(reply)
    assert set(answer) == {"ok", "data"} and set(answer["data"]) == {"directions", "shape"}
    assert answer["data"]["shape"] == [len(ids), len(nodes)]
    packed = np.frombuffer(base64.b64decode(answer["data"]["directions"], validate=True), np.uint8)
    assert len(packed) == (len(ids) * len(nodes) + 7) // 8
    left = np.unpackbits(packed, count=len(ids) * len(nodes)).reshape(len(ids), len(nodes))
    arrays = small.host_part.arrays
    names = [str(n) for n in small.host_part.document["feature_names"]]
    x = np.array([[small.host_rows[i][n] for n in names] for i in ids])
    splits = zip(
        arrays["split_feature"].tolist(),
        arrays["split_threshold"].tolist(),
        arrays["split_missing_left"].tolist(),
        strict=True,
    )
    for s, (feature, threshold, missing_left) in enumerate(splits):
        want = sbmath.threshold_left(x[:, feature], threshold, missing_left)
        assert (left[:, s] == 1).tolist() == want.tolist(), f"host node {nodes[s]}"
    assert {0, 1} <= set(left.ravel().tolist())  # the rows go both ways


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="FEDMQ_SERVING_FULL=1 runs it")
def test_a_secureboost_model_of_the_whole_breast_data_scores_online_as_offline(
    stack: Stack, parties: Parties, tmp_path: Path
) -> None:
    trained = train(stack, BIG, tmp_path)
    serve(parties, trained, "boost-full")
    scored_online_as_offline(parties, trained, "boost-full")
