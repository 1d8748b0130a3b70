"""fedserving in one process: two parties' Serving objects wired by a function instead of the
gateways (the stack test covers the real path), each on its own SQLite registry, with the real
Redis for features and rate limits. Checks the canary split, the hosts' accept policy, the
lifecycle rules and the failure answers that the stack test does not reach."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from fedbus.remote import RemoteTimeout
from fedflow.artifacts import ArtifactStore
from fedflow.components.hetero_lr.session import INTERCEPT, model_table
from fedflow.db import create_flow_tables
from fedflow.tables import Table
from fedserving.features import FeatureStore, RateLimiter
from fedserving.handlers import SERVICE_TOPIC, Serving, bucket, route
from fedserving.metrics import ServingMetrics
from fedserving.registry import Binding, Registry, open_engine

GUEST, HOST = "9999", "10000"
JOB = "job-1"
W_GUEST = np.array([0.5, -1.25, 0.125])  # x0, x1, intercept
W_HOST = np.array([2.0, -0.75])  # h0, h1
HOST_ROWS = {"a": [1.0, 2.0], "b": [-1.0, 0.5], "c": [0.25, np.nan]}


class Wire:
    """Delivers one party's calls to the other's `remote`, or fails them like a dead link."""

    def __init__(self) -> None:
        self.parties: dict[str, Serving] = {}
        self.down: set[str] = set()

    def caller(self, source: str) -> Callable[[str, str, bytes, float], bytes]:
        def call(party: str, service: str, body: bytes, timeout: float) -> bytes:
            assert service == SERVICE_TOPIC
            if party in self.down:
                raise RemoteTimeout(f"no reply from party {party}")
            return self.parties[party].remote(source, body)

        return call


def party(
    wire: Wire, party_id: str, tmp: Path, client: redis.Redis[bytes], **options: Any
) -> Serving:
    tmp.mkdir(parents=True, exist_ok=True)
    engine = open_engine(f"sqlite:///{tmp / f'{party_id}.db'}")
    create_flow_tables(engine)
    store = ArtifactStore(engine)
    if party_id == GUEST:
        store.put(
            JOB,
            "hetero_lr_0",
            GUEST,
            "guest",
            "model",
            model_table(["x0", "x1", INTERCEPT], W_GUEST),
            0,
        )
    else:
        store.put(JOB, "hetero_lr_0", HOST, "host", "model", model_table(["h0", "h1"], W_HOST), 0)
    prefix = f"fedmq-test-{uuid.uuid4().hex[:8]}:{party_id}:"
    serving = Serving(
        party_id,
        Registry(engine, party_id),
        features=FeatureStore(client, prefix),
        limiter=RateLimiter(client, prefix),
        call=wire.caller(party_id),
        artifacts=store,
        tables=None,
        job_parties=lambda job: {GUEST: ["guest"], HOST: ["host"]},
        metrics=ServingMetrics(),
        binding_refresh_s=0,
        **options,
    )
    wire.parties[party_id] = serving
    return serving


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def ok(serving: Serving, op: str, **args: Any) -> Any:
    answer = serving.local({"op": op, "args": args})
    assert answer["ok"], answer
    return answer["data"]


def refused(serving: Serving, op: str, **args: Any) -> tuple[int, str]:
    answer = serving.local({"op": op, "args": args})
    assert not answer["ok"], answer
    return answer["status"], answer["error"]


@pytest.fixture
def two(tmp_path: Path, client: redis.Redis[bytes]) -> Iterator[tuple[Wire, Serving, Serving]]:
    wire = Wire()
    guest = party(wire, GUEST, tmp_path, client, rate_limit_rows_per_s=50)
    host = party(wire, HOST, tmp_path, client, host_rate_limit_rows_per_s=40)
    ids = np.array(list(HOST_ROWS), dtype=np.str_)
    host.features.load(
        "online",
        Table(
            ids=ids,
            features=np.array(list(HOST_ROWS.values())),
            feature_names=["h0", "h1"],
            labels=None,
        ),
    )
    return wire, guest, host


def rows(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "features": {"x0": 1.0, "x1": 0.5}} for i in ids]


def test_a_canary_share_is_sticky_per_key_and_close_to_its_percentage() -> None:
    binding = Binding("svc", "m", 1, 2, 10.0, None, "refuse", "serving")
    keys = [f"id-{i}" for i in range(20_000)]
    versions = [route(binding, k) for k in keys]
    assert versions == [route(binding, k) for k in keys]
    assert 0.09 < versions.count(2) / len(keys) < 0.11
    assert bucket("svc", "x") != bucket("other", "x")  # each service splits on its own


def test_a_host_without_the_policy_keeps_a_model_pending_until_its_operator_accepts(
    two: tuple[Wire, Serving, Serving],
) -> None:
    _, guest, host = two
    model = ok(guest, "model_publish", job_id=JOB, name="credit")
    assert (model["state"], model["hosts"]) == ("partial", {HOST: "pending"})
    assert refused(guest, "service_bind", service_id="s", name="credit", version=1)[0] == 409
    ok(host, "model_accept", name="credit", version=1, owner_party=GUEST)
    assert ok(guest, "model_show", name="credit", version=1)["state"] == "ready"
    ok(guest, "service_bind", service_id="s", name="credit", version=1)
    # A bound version cannot be deleted
    assert refused(guest, "model_delete", name="credit", version=1)[0] == 409


def test_scores_join_both_parts_and_failures_name_the_host(
    two: tuple[Wire, Serving, Serving],
) -> None:
    wire, guest, host = two
    host.accept_models_from = ("*",)
    ok(guest, "model_publish", job_id=JOB, name="credit")
    ok(guest, "service_bind", service_id="s", name="credit", version=1, fallback="refuse")
    got = ok(guest, "predict", service_id="s", rows=rows("a", "c"))["results"]
    u_g = 1.0 * 0.5 + 0.5 * -1.25 + 0.125
    want = [
        1 / (1 + np.exp(-(u_g + 1.0 * 2.0 + 2.0 * -0.75))),
        1 / (1 + np.exp(-(u_g + 0.25 * 2.0))),
    ]  # a NaN feature counts as 0
    assert np.allclose([r["score"] for r in got], want, atol=1e-12)

    status, error = refused(guest, "predict", service_id="s", rows=rows("a", "zz"))
    assert status == 404 and f"party {HOST}" in error and "'zz'" in error

    wire.down.add(HOST)
    status, error = refused(guest, "predict", service_id="s", rows=rows("a"))
    assert status == 503 and f"host party {HOST}" in error


def test_a_guest_only_fallback_answers_while_the_host_is_silent(
    two: tuple[Wire, Serving, Serving],
) -> None:
    wire, guest, host = two
    host.accept_models_from = (GUEST,)
    ok(guest, "model_publish", job_id=JOB, name="credit")
    ok(guest, "service_bind", service_id="s", name="credit", version=1, fallback="guest_only")
    wire.down.add(HOST)
    answer = ok(guest, "predict", service_id="s", rows=rows("a"))
    assert answer["fallback"] is True
    assert answer["results"][0]["score"] == pytest.approx(1 / (1 + np.exp(-0.0)))


def test_rate_limits_refuse_a_caller_and_a_guest_over_their_share(
    two: tuple[Wire, Serving, Serving],
) -> None:
    _, guest, host = two
    host.accept_models_from = ("*",)
    ok(guest, "model_publish", job_id=JOB, name="credit")
    ok(guest, "service_bind", service_id="s", name="credit", version=1)
    # The guest's per-caller limit is 50 rows/s...
    assert refused(guest, "predict", service_id="s", rows=rows(*["a"] * 51), caller="c1")[0] == 429
    # ...the host's per-guest limit 40 rows/s: answered 429 naming the host
    status, error = refused(guest, "predict", service_id="s", rows=rows(*["a"] * 45), caller="c2")
    assert status == 429 and f"party {HOST}" in error
    host_metrics = host.metrics.registry.get_sample_value(
        "fedmq_serving_rate_limited_total", {"kind": "party"}
    )
    assert host_metrics == 1.0


def test_switch_and_rollback_move_between_versions_and_every_action_is_recorded(
    two: tuple[Wire, Serving, Serving],
) -> None:
    _, guest, host = two
    host.accept_models_from = ("*",)
    for _ in range(2):
        ok(guest, "model_publish", job_id=JOB, name="credit")
    ok(guest, "service_bind", service_id="s", name="credit", version=1)
    assert ok(guest, "service_switch", service_id="s", version=2)["version"] == 2
    assert ok(guest, "service_rollback", service_id="s")["version"] == 1
    assert refused(guest, "service_switch", service_id="s", version=9)[0] == 404
    assert ok(guest, "service_unbind", service_id="s")["drained"] is True
    assert refused(guest, "predict", service_id="s", rows=rows("a"))[0] == 404
    events = ok(guest, "events", service_id="s")["data"]
    assert [e["action"] for e in events] == [
        "bind",
        "switch",
        "rollback",
        "unbind_started",
        "unbind",
    ]
    published = [e for e in ok(guest, "events")["data"] if e["action"] == "publish"]
    assert [e["version"] for e in published] == [1, 2]
    # every event of a model version names the job that trained it
    assert [e["detail"]["job_id"] for e in events + published] == [JOB] * 7
    assert json.dumps(events)  # plain JSON for the API


def test_an_exported_model_imports_where_its_key_is_trusted_and_nowhere_else(
    two: tuple[Wire, Serving, Serving], tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    _, guest, host = two
    host.accept_models_from = ("*",)
    ok(guest, "model_publish", job_id=JOB, name="credit")
    document = ok(guest, "model_export", name="credit", version=1)
    # Prepare: a new deployment of the guest that trusts the old one's key, and one that does not
    key = document["public_key"]
    trusting = party(Wire(), GUEST, tmp_path / "new", client, import_trusted_keys=(key,))
    stranger = party(Wire(), GUEST, tmp_path / "other", client)

    imported = ok(trusting, "model_import", document=document)
    assert imported["name"] == "credit" and "weights" not in imported
    copy = trusting.registry.model("credit", 1)
    assert copy.weights.tobytes() == W_GUEST.tobytes()  # bit for bit
    assert copy.state == "ready" and copy.hosts == {HOST: "ready"}
    assert refused(trusting, "model_import", document=document)[0] == 409
    status, error = refused(stranger, "model_import", document=document)
    assert status == 422 and "does not trust" in error
    tampered = json.loads(json.dumps(document))
    tampered["model"]["weights"][0] = 0.75
    status, error = refused(trusting, "model_import", document=tampered)
    assert status == 422 and "does not verify" in error


class CountingRegistry:
    """A registry that counts the reads a request path makes (the database behind it)."""

    def __init__(self, inner: Registry) -> None:
        self.inner = inner
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if name in ("binding", "model"):
            self.reads += 1
        return found


def test_a_replica_answers_from_its_cache_and_sees_another_replica_s_switch(
    two: tuple[Wire, Serving, Serving],
) -> None:
    wire, guest, host = two
    host.accept_models_from = ("*",)
    for _ in range(2):
        ok(guest, "model_publish", job_id=JOB, name="credit")
    ok(guest, "service_bind", service_id="s", name="credit", version=1)
    counting = CountingRegistry(guest.registry)
    replica = Serving(
        GUEST,
        counting,  # type: ignore[arg-type]
        features=guest.features,
        limiter=guest.limiter,
        call=wire.caller(GUEST),
        artifacts=guest.artifacts,
        tables=None,
        job_parties=guest.job_parties,
        metrics=ServingMetrics(),
        rate_limit_rows_per_s=10_000,
        binding_refresh_s=3600,
    )

    def served() -> int:
        return int(ok(replica, "predict", service_id="s", rows=rows("a"))["results"][0]["version"])

    # Known binding and model: requests read no database
    assert [served() for _ in range(20)] == [1] * 20
    assert counting.reads == 2  # the binding and the model, once each

    # Another replica switches: this one answers its known version until it refreshes...
    ok(guest, "service_switch", service_id="s", version=2)
    assert served() == 1
    # ...then one background read brings the switch, requests meanwhile still answered
    replica.refresh_s = 0.01
    deadline = time.monotonic() + 10
    versions = []
    while time.monotonic() < deadline and (not versions or versions[-1] != 2):
        versions.append(served())
        time.sleep(0.02)
    assert versions[-1] == 2

    # Its own switch is seen by its next request, not after a refresh
    replica.refresh_s = 3600
    ok(replica, "service_switch", service_id="s", version=1)
    assert served() == 1
    replica.close()


def test_rate_limit_leases_never_grant_more_than_the_limit_over_replicas(
    client: redis.Redis[bytes],
) -> None:
    prefix = f"fedmq-test-{uuid.uuid4().hex[:8]}:"
    replicas = [RateLimiter(client, prefix), RateLimiter(client, prefix)]
    for _ in range(5):
        # one second's window (retried when the loop crossed into the next second)
        time.sleep(1 - time.time() % 1 + 0.01)
        window = int(time.time())
        granted = sum(
            n for i in range(150) for n in [1 + i % 3] if replicas[i % 2].allow("k", n, 200)
        )
        if int(time.time()) == window:
            break
    else:
        pytest.fail("could not stay inside one second's window")
    # each replica spends its leases; together at most the limit, and close to it (a few
    # rows of each unspent lease are lost)
    assert 200 - 8 <= granted <= 200
    # the rows counted in Redis never pass the limit either (refusals gave theirs back)
    assert int(client.get(f"{prefix}rl:k:{window}") or 0) <= 200
    # a request larger than the limit is refused, and a small one still fits next second
    time.sleep(1 - time.time() % 1 + 0.01)
    assert not replicas[0].allow("k", 201, 200)
    assert replicas[0].allow("k", 200, 200)


def test_a_homo_lr_model_is_served_guest_only_equal_to_its_offline_prediction(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    # Prepare: a homo_lr job's model at the guest (every party holds the whole model), as
    # homo_lr writes it
    from fedflow.components.homo_lr import predict as homo_predict
    from fedflow.components.homo_lr.client import model_table as homo_model_table

    wire = Wire()
    guest = party(wire, GUEST, tmp_path, client)
    names, weights = ["x0", "x1"], np.array([0.3, -0.7, 0.05])
    guest.artifacts.put(
        "homo-job", "homo_lr_0", GUEST, "guest", "model", homo_model_table(names, weights), 0
    )
    published = ok(
        guest,
        "model_publish",
        job_id="homo-job",
        name="homo",
        component="homo_lr_0",
        guest_only=True,
    )
    ok(guest, "service_bind", service_id="h", name="homo", version=1)
    features = [[1.5, -2.0], [np.nan, 0.25]]
    asked = [{"x0": 1.5, "x1": -2.0}, {"x0": None, "x1": 0.25}]  # null: a missing value

    # Execute
    got = ok(
        guest,
        "predict",
        service_id="h",
        rows=[{"id": str(i), "features": row} for i, row in enumerate(asked)],
    )["results"]

    # Assert: homo_lr_predict's scores of the same rows; no host asked
    offline = homo_predict.scores(
        homo_model_table(names, weights),
        Table(
            ids=np.array(["0", "1"]),
            features=np.array(features),
            feature_names=names,
            labels=None,
        ),
    )
    assert max(abs(r["score"] - s) for r, s in zip(got, offline.tolist(), strict=True)) <= 1e-12
    assert published["hosts"] == {} and published["state"] == "ready"


def test_a_homo_nn_model_is_served_guest_only_equal_to_its_offline_prediction(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    # Prepare: a homo_nn job's model at the guest (the built-in network, 3 hidden units), as
    # homo_nn writes it; its parameters drawn at random
    from fedflow.components.homo_nn import math as nmath
    from fedflow.components.homo_nn import predict as nn_predict

    wire = Wire()
    guest = party(wire, GUEST, tmp_path, client)
    names, hidden = ["x0", "x1"], 3
    weights = np.random.default_rng(7).normal(size=hidden * (len(names) + 2) + 1)
    table = Table(
        ids=np.array(nmath.parameter_names(names, hidden), dtype=np.str_),
        features=weights.reshape(-1, 1),
        feature_names=["weight"],
        labels=None,
    )
    guest.artifacts.put("nn-job", "homo_nn_0", GUEST, "guest", "model", table, 0)
    status, error = refused(
        guest, "model_publish", job_id="nn-job", name="nn", component="homo_nn_0"
    )
    assert status == 422 and "guest_only" in error  # no host holds a part of it
    published = ok(
        guest, "model_publish", job_id="nn-job", name="nn", component="homo_nn_0", guest_only=True
    )
    ok(guest, "service_bind", service_id="n", name="nn", version=1)
    features = [[1.5, -2.0], [np.nan, 0.25], [0.0, 3.0]]
    asked = [{"x0": 1.5, "x1": -2.0}, {"x0": None, "x1": 0.25}, {"x0": 0.0, "x1": 3.0}]

    # Execute
    got = ok(
        guest,
        "predict",
        service_id="n",
        rows=[{"id": str(i), "features": row} for i, row in enumerate(asked)],
    )["results"]

    # Assert: homo_nn_predict's scores of the same rows; no host asked; bad features 422
    offline = nn_predict.scores(
        table,
        Table(
            ids=np.array(["0", "1", "2"]),
            features=np.array(features),
            feature_names=names,
            labels=None,
        ),
    )
    assert max(abs(r["score"] - s) for r, s in zip(got, offline.tolist(), strict=True)) <= 1e-12
    assert published["algorithm"] == "homo_nn" and published["hosts"] == {}
    status, _ = refused(guest, "predict", service_id="n", rows=[{"id": "a", "features": {}}])
    assert status == 422
