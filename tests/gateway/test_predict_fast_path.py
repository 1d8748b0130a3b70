"""`POST /api/v1/serving/{service_id}/predict` answered by the fast path
(fedgateway.api.serving_fast) is the same answer FastAPI's route gives: body, status, headers
and the fedmq_http_* series, for good requests and for each refusal; and a good request does
not run FastAPI's dependencies.

The serving service is a responder on the API's bus (memory://, the in-memory adapter that
runs the bus contract suite; what is under test is the REST layer in front of the bus), and
the app is driven through its ASGI interface by Starlette's TestClient."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fedbus import Bus, Delivery, connect
from fedgateway.api import serving
from fedgateway.api.app import create_app
from fedgateway.api.deps import ApiContext
from fedgateway.metrics import GatewayMetrics
from pydantic import SecretStr

TOKEN = "fast-path-token"
ROW = {"id": "r1", "features": {"x0": 0.5, "x1": None, "x2": -1.25}}


class _Gateway:
    def __init__(self) -> None:
        self.metrics = GatewayMetrics()

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "peers": []}

    def finish_attempt(self, job_id: str, attempt: int | None) -> None:
        pass


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    """The serving service's answers: service "gone" is unknown, id "r404" unknown at a host,
    "slow" never answers."""
    args = request["args"]
    if args["service_id"] == "gone":
        return {"ok": False, "status": 404, "error": "no service gone"}
    row = args["rows"][0]
    if row["id"] == "r404":
        return {"ok": False, "status": 404, "error": "party 10000 has no features for id r404"}
    score = 0.25 + sum(v or 0.0 for v in row["features"].values()) / 100
    return {
        "ok": True,
        "data": {
            "results": [{"id": row["id"], "score": score, "version": 3}],
            "model": "credit",
            "fallback": False,
        },
    }


@pytest.fixture
def bus() -> Iterator[Bus]:
    bus = connect(f"memory://fastpath-{uuid.uuid4().hex[:8]}")
    bus.declare(serving.SERVING_RPC_TOPIC)

    def respond(delivery: Delivery) -> None:
        request = json.loads(delivery.body)
        if request["args"]["service_id"] == "slow":
            return
        bus.reply(delivery, json.dumps(_answer(request)).encode())

    bus.subscribe(serving.SERVING_RPC_TOPIC, respond)
    yield bus
    bus.close()


def _client(bus: Bus, fast: bool) -> tuple[TestClient, list[str]]:
    """The gateway's app on `bus`, and the list FastAPI's API dependency appends to."""
    app = create_app(_Gateway(), predict_fast_path=fast)
    app.state.api = ApiContext("9999", [SecretStr(TOKEN)], lambda: bus)
    through_fastapi: list[str] = []

    async def counted_api() -> ApiContext:
        through_fastapi.append("api")
        return app.state.api  # type: ignore[no-any-return]

    app.dependency_overrides[serving.get_api_here] = counted_api
    return TestClient(app), through_fastapi


CASES: list[tuple[str, str, dict[str, str], bytes]] = [
    ("good", "/api/v1/serving/risk/predict", {"Authorization": f"Bearer {TOKEN}"}, b""),
    ("no token", "/api/v1/serving/risk/predict", {}, b""),
    ("wrong token", "/api/v1/serving/risk/predict", {"Authorization": "Bearer nope"}, b""),
    ("basic auth", "/api/v1/serving/risk/predict", {"Authorization": f"Basic {TOKEN}"}, b""),
    (
        "bad features",
        "/api/v1/serving/risk/predict",
        {"Authorization": f"Bearer {TOKEN}"},
        b'{"id": "r1", "features": {"x0": "high"}}',
    ),
    (
        "extra field",
        "/api/v1/serving/risk/predict",
        {"Authorization": f"Bearer {TOKEN}"},
        b'{"id": "r1", "features": {}, "colour": 1}',
    ),
    ("not json", "/api/v1/serving/risk/predict", {"Authorization": f"Bearer {TOKEN}"}, b"{"),
    ("bad service id", "/api/v1/serving/Risk!/predict", {"Authorization": f"Bearer {TOKEN}"}, b""),
    ("unknown service", "/api/v1/serving/gone/predict", {"Authorization": f"Bearer {TOKEN}"}, b""),
    (
        "unknown id",
        "/api/v1/serving/risk/predict",
        {"Authorization": f"Bearer {TOKEN}"},
        b'{"id": "r404", "features": {"x0": 1.0}}',
    ),
    (
        "silent serving",
        "/api/v1/serving/slow/predict",
        {"Authorization": f"Bearer {TOKEN}"},
        b'{"id": "r1", "features": {}, "timeout_s": 0.01}',
    ),
]


def _ask(client: TestClient, path: str, headers: dict[str, str], body: bytes) -> Any:
    content = body or json.dumps(ROW).encode()
    return client.post(
        path, content=content, headers={"Content-Type": "application/json", **headers}
    )


def _series(client: TestClient) -> list[str]:
    text = client.get("/metrics").text
    return sorted(
        line.rsplit(" ", 1)[0]
        for line in text.splitlines()
        if line.startswith("fedmq_http_requests_total{") and "predict" in line
    )


def test_the_fast_path_answers_every_case_as_fastapis_route_does(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the same app with and without the fast path, on the same serving responder
    fast, fast_deps = _client(bus, fast=True)
    slow, slow_deps = _client(bus, fast=False)

    skipped_fastapi: set[str] = set()
    fastapi_ran_without_fast_path: set[str] = set()
    with fast, slow:
        for name, path, headers, body in CASES:
            if name == "silent serving":  # waits its timeout + the margin: a short margin
                monkeypatch.setattr(serving, "PREDICT_MARGIN_S", 0.3)
            # Execute
            seen = len(fast_deps), len(slow_deps)
            got = _ask(fast, path, headers, body)
            want = _ask(slow, path, headers, body)
            if len(fast_deps) == seen[0]:
                skipped_fastapi.add(name)
            if len(slow_deps) > seen[1]:
                fastapi_ran_without_fast_path.add(name)

            # Assert: what a client sees is the same
            assert got.status_code == want.status_code, (name, got.content, want.content)
            assert got.content == want.content, name
            assert got.headers.get("content-type") == want.headers.get("content-type"), name
            assert got.headers.get("www-authenticate") == want.headers.get("www-authenticate"), name
        good = json.loads(_ask(fast, *CASES[0][1:]).content)
        assert good == {
            "id": "r1",
            "score": pytest.approx(0.2425),
            "version": 3,
            "model": "credit",
            "fallback": False,
        }
        # and the same fedmq_http_* series (by route template and status) were counted
        assert _series(fast) == _series(slow)
        assert any(
            'route="/api/v1/serving/{service_id}/predict",status="200"' in s for s in _series(fast)
        )

    # Of the requests whose dependencies FastAPI's route solves, the fast path took exactly
    # those with a good token and a good body (a body that is not JSON never reaches them)
    assert skipped_fastapi & fastapi_ran_without_fast_path == {
        "good",
        "unknown service",
        "unknown id",
        "silent serving",
    }
