"""Concurrent requests' calls to a host share one call (fedserving.coalesce), in one process:
the guest's and the host's Serving objects (test_serving_units' wiring, real Redis) joined by
a link that takes `delay` seconds per call, like the round trip through both gateways."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from fedbus.remote import RemoteTimeout
from fedflow.tables import Table
from fedserving.handlers import Serving

from tests.serving.test_serving_units import GUEST, HOST, JOB, Wire, ok, party

ROWS = {f"r{i}": [0.1 * i, -0.05 * i * i] for i in range(8)}
"""The host's features: every row's partial score differs."""


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


class SlowWire(Wire):
    """The units' wire, each call `delay` seconds long, counting the calls and their ids."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def caller(self, source: str) -> Callable[[str, str, bytes, float], bytes]:
        inner = super().caller(source)

        def call(party_id: str, service: str, body: bytes, timeout: float) -> bytes:
            with self._lock:
                request = json.loads(body)
                if request["op"] == "partial":
                    self.calls.append(len(request["ids"]))
            time.sleep(min(self.delay, timeout))
            if self.delay > timeout:
                raise RemoteTimeout(f"no reply from party {party_id}")
            return inner(party_id, service, body, timeout)

        return call


def stack(
    tmp: Path, client: redis.Redis[bytes], delay: float, concurrency: int
) -> tuple[SlowWire, Serving]:
    wire = SlowWire(delay)
    guest = party(wire, GUEST, tmp, client, host_call_concurrency=concurrency)
    host = party(wire, HOST, tmp, client)
    host.accept_models_from = ("*",)
    host.features.load(
        "online",
        Table(
            ids=np.array(list(ROWS), dtype=np.str_),
            features=np.array(list(ROWS.values())),
            feature_names=["h0", "h1"],
            labels=None,
        ),
    )
    ok(guest, "model_publish", job_id=JOB, name="credit")
    ok(guest, "service_bind", service_id="s", name="credit", version=1)
    return wire, guest


def predict(guest: Serving, row_id: str, timeout: float = 5.0) -> dict[str, Any]:
    return guest.local(
        {
            "op": "predict",
            "args": {
                "service_id": "s",
                "rows": [{"id": row_id, "features": {"x0": 1.0, "x1": 0.5}}],
                "timeout_s": timeout,
            },
        }
    )


def together(guest: Serving, ids: list[str], timeout: float = 5.0) -> list[dict[str, Any]]:
    """`ids` predicted at once, one thread each, started together."""
    start = threading.Barrier(len(ids))

    def one(row_id: str) -> dict[str, Any]:
        start.wait()
        return predict(guest, row_id, timeout)

    with ThreadPoolExecutor(len(ids)) as pool:
        return list(pool.map(one, ids))


def test_concurrent_requests_share_calls_and_each_gets_its_own_score(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    wire, guest = stack(tmp_path, client, delay=0.0, concurrency=1)
    alone = {i: predict(guest, i)["data"]["results"][0]["score"] for i in ROWS}
    wire.delay = 0.2
    assert len(set(alone.values())) == len(ROWS)  # the host's part tells them apart
    wire.calls.clear()
    ids = [list(ROWS)[n % len(ROWS)] for n in range(24)]
    answers = together(guest, ids)
    assert [a["data"]["results"][0]["score"] for a in answers] == [alone[i] for i in ids]
    # One call goes at once; the others queue behind it and go as one or two more calls.
    assert len(wire.calls) <= 3 and sum(wire.calls) == len(ids), wire.calls
    metric = guest.metrics.host_calls.labels(HOST)._value.get()
    assert metric == len(wire.calls) + len(ROWS)


def test_without_coalescing_every_request_makes_its_own_call(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    wire, guest = stack(tmp_path, client, delay=0.05, concurrency=0)
    answers = together(guest, ["r1", "r2"] * 4)
    assert all(a["ok"] for a in answers)
    assert wire.calls == [1] * 8


def test_a_missing_id_fails_only_the_requests_that_asked_for_it(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    wire, guest = stack(tmp_path, client, delay=0.2, concurrency=1)
    ids = ["r1", "zz", "r2", "r3", "yy", "r1"] * 2
    answers = together(guest, ids)
    for row_id, answer in zip(ids, answers, strict=True):
        if row_id in ROWS:
            assert answer["ok"], answer
        else:
            assert answer["status"] == 404, answer
            assert answer["error"] == (
                f"host party {HOST}: party {HOST} has no features for id {row_id!r}"
            )
    assert len(wire.calls) < len(ids)


def test_a_request_whose_deadline_passes_times_out_alone(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    wire, guest = stack(tmp_path, client, delay=0.3, concurrency=1)
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(predict, guest, "r1", 5.0)
        time.sleep(0.05)  # "r1" is in flight; "r2" queues behind it with a short deadline
        short = pool.submit(predict, guest, "r2", 0.1)
        assert short.result()["status"] == 503
        assert "did not answer" in short.result()["error"]
        assert slow.result()["ok"]
    # The lane is free again: the next request goes and is answered.
    assert predict(guest, "r3")["ok"]
    assert wire.calls == [1, 1]


def test_a_silent_host_fails_every_request_of_a_shared_call_naming_it(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    wire, guest = stack(tmp_path, client, delay=0.2, concurrency=1)
    wire.down.add(HOST)
    answers = together(guest, ["r1", "r2", "r3", "r4", "r5", "r6"])
    assert [a["status"] for a in answers] == [503] * 6
    assert all(f"host party {HOST}" in a["error"] for a in answers)
    assert len(wire.calls) < 6


def predict_many(guest: Serving, rows: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One `predict_many` message (the gateway's coalesced single-row requests)."""
    answer = guest.local(
        {
            "op": "predict_many",
            "args": {
                "service_id": "s",
                "requests": [
                    {"rows": [{"id": i, "features": f}], "caller": "c", "timeout_s": 5.0}
                    for i, f in rows
                ],
            },
        }
    )
    assert answer["ok"], answer
    answers: list[dict[str, Any]] = answer["data"]["answers"]
    return answers


GOOD = {"x0": 1.0, "x1": 0.5}


def test_requests_sent_as_one_message_share_one_host_call_and_each_gets_its_own_score(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    wire, guest = stack(tmp_path, client, delay=0.0, concurrency=2)
    alone = {i: predict(guest, i)["data"]["results"][0] for i in ROWS}
    wire.calls.clear()

    answers = predict_many(guest, [(i, GOOD) for i in ROWS])

    assert [a["data"]["results"][0] for a in answers] == [alone[i] for i in ROWS]
    assert wire.calls == [len(ROWS)]


def test_a_request_of_a_message_with_a_missing_id_or_bad_features_is_refused_alone(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    wire, guest = stack(tmp_path, client, delay=0.0, concurrency=2)
    alone = {i: predict(guest, i)["data"]["results"][0]["score"] for i in ("r1", "r2")}
    wire.calls.clear()

    answers = predict_many(
        guest, [("r1", GOOD), ("zz", GOOD), ("r2", {"x0": "a", "x1": 0.5}), ("r2", GOOD)]
    )

    assert answers[0]["data"]["results"][0]["score"] == alone["r1"]
    assert answers[1]["status"] == 404
    assert answers[1]["error"] == f"host party {HOST}: party {HOST} has no features for id 'zz'"
    assert answers[2]["status"] == 422 and "'x0' is not a number" in answers[2]["error"]
    assert answers[3]["data"]["results"][0]["score"] == alone["r2"]
    # the first call's 404 named 'zz'; the 422 was found before any call
    assert wire.calls == [3, 2], wire.calls


def test_a_silent_host_fails_every_request_of_a_message_with_one_call(
    tmp_path: Path, client: redis.Redis[bytes]
) -> None:
    wire, guest = stack(tmp_path, client, delay=0.0, concurrency=2)
    wire.down.add(HOST)

    answers = predict_many(guest, [(i, GOOD) for i in ROWS])

    assert [a["status"] for a in answers] == [503] * len(ROWS)
    assert all(f"host party {HOST}" in a["error"] for a in answers)
    assert wire.calls == [len(ROWS)]  # one call, not one per request
