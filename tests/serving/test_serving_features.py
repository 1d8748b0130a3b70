"""The host's online feature sources: a table loaded into Redis that follows the table's
re-uploads, and the HTTP feature-lookup adapter against a real HTTP server standing for the
host's own feature service (retries, deadline, clear errors). Two parties' Serving objects
in one process as in test_serving_units, with the real Redis."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from fedflow.tables import TableStore
from fedserving import features as features_module
from fedserving.features import FeatureRefresher, FeaturesMissing
from fedserving.http_features import HttpFeatureSource

from tests.polling import wait_for
from tests.serving.test_serving_units import GUEST, HOST, JOB, W_HOST, Wire, ok, party, refused


def write_csv(path: Path, rows: dict[str, list[float]]) -> Path:
    path.write_text("id,h0,h1\n" + "".join(f"{i},{a},{b}\n" for i, (a, b) in rows.items()))
    return path


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def test_a_reuploaded_table_is_served_once_the_refresher_sees_it(
    tmp_path: Path, client: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the host serves table `online` as first uploaded
    monkeypatch.setattr(features_module, "RETIRE_AFTER_S", 0.05)
    wire = Wire()
    guest = party(wire, GUEST, tmp_path, client)
    host = party(wire, HOST, tmp_path, client)
    host.accept_models_from = ("*",)
    tables = TableStore(host.registry.engine, tmp_path / "tables")
    host.tables = tables
    tables.upload("online", write_csv(tmp_path / "v1.csv", {"a": [1.0, 2.0], "b": [3.0, 4.0]}))
    ok(host, "features_load", table="online")
    ok(guest, "model_publish", job_id=JOB, name="credit")
    ok(guest, "service_bind", service_id="s", name="credit", version=1)
    refresher = FeatureRefresher(host.features, tables.get, tables.read, interval_s=0.05)
    assert refresher.refresh() is None  # nothing changed
    before = host.features.rows(["a"], ["h0", "h1"])
    first_generation = host.features.current(max_age_s=0).table

    # Execute: the table is uploaded again (a changed, an added and a dropped id)
    tables.upload(
        "online",
        write_csv(tmp_path / "v2.csv", {"a": [-1.0, 0.5], "c": [7.0, 8.0]}),
        replace=True,
    )
    refresher.start()
    try:
        wait_for(
            lambda: host.features.current(max_age_s=0).table != first_generation or None,
            what="the refresher loads the new upload",
        )
    finally:
        refresher.stop()

    # Assert: the new rows are served, the dropped id is gone, the old keys are deleted
    assert before.tolist() == [[1.0, 2.0]]
    assert host.features.rows(["a", "c"], ["h0", "h1"]).tolist() == [[-1.0, 0.5], [7.0, 8.0]]
    with pytest.raises(FeaturesMissing):
        host.features.rows(["b"], ["h0", "h1"])
    zero = {"x0": 0.0, "x1": 0.0}
    status, error = refused(guest, "predict", service_id="s", rows=[{"id": "b", "features": zero}])
    assert status == 404 and "'b'" in error
    scored = ok(guest, "predict", service_id="s", rows=[{"id": "a", "features": zero}])
    u_host = -1.0 * W_HOST[0] + 0.5 * W_HOST[1]
    assert scored["results"][0]["score"] == pytest.approx(1 / (1 + np.exp(-(0.125 + u_host))))
    old_keys = wait_for(
        lambda: (
            not list(client.scan_iter(match=f"{host.features.prefix}f:{first_generation}:*"))
            or None
        ),
        what="the first generation's keys deleted",
    )
    assert old_keys


class FeatureService:
    """A real HTTP server standing for the host's feature service: rows by id, and switches
    that make it fail, stall or answer nonsense for a number of requests."""

    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.rows = rows
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self.stall_s = 0.0
        self.answer_override: bytes | None = None
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.requests.append({"body": body, "token": self.headers.get("X-Token")})
                if service.stall_s:
                    time.sleep(service.stall_s)
                if service.fail_next > 0:
                    service.fail_next -= 1
                    self._send(503, b"busy")
                    return
                if service.answer_override is not None:
                    self._send(200, service.answer_override)
                    return
                found = {
                    i: {n: service.rows[i].get(n) for n in body["features"]}
                    for i in body["ids"]
                    if i in service.rows
                }
                self._send(200, json.dumps({"rows": found}).encode())

            def _send(self, status: int, data: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a stalled answer the adapter stopped waiting for

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/lookup"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feature_service() -> Iterator[FeatureService]:
    service = FeatureService({"a": {"h0": 1.0, "h1": 2.0}, "c": {"h0": 0.25, "h1": None}})
    yield service
    service.close()


def test_the_http_adapter_serves_the_hosts_features_with_retries_and_clear_errors(
    tmp_path: Path, client: redis.Redis[bytes], feature_service: FeatureService
) -> None:
    # Prepare: the host's features come from its feature service, not a loaded table
    source = HttpFeatureSource(
        feature_service.url, timeout_s=0.2, retries=2, deadline_s=0.6, headers={"X-Token": "t0k"}
    )
    wire = Wire()
    guest = party(wire, GUEST, tmp_path, client)
    host = party(wire, HOST, tmp_path, client, lookup=source)
    host.accept_models_from = ("*",)
    ok(guest, "model_publish", job_id=JOB, name="credit")
    ok(guest, "service_bind", service_id="s", name="credit", version=1)
    row = {"x0": 1.0, "x1": 0.5}

    # Execute / Assert: the same scores as from a loaded table (a null counts as 0)
    got = ok(
        guest, "predict", service_id="s", rows=[{"id": i, "features": row} for i in ("a", "c")]
    )["results"]
    u_g = 1.0 * 0.5 + 0.5 * -1.25 + 0.125
    want = [u_g + 1.0 * 2.0 + 2.0 * -0.75, u_g + 0.25 * 2.0]
    assert [r["score"] for r in got] == pytest.approx([1 / (1 + np.exp(-z)) for z in want])
    assert feature_service.requests[-1] == {
        "body": {"ids": ["a", "c"], "features": ["h0", "h1"]},
        "token": "t0k",
    }

    # Two 503s, then an answer: retried, served
    feature_service.fail_next = 2
    before = len(feature_service.requests)
    ok(guest, "predict", service_id="s", rows=[{"id": "a", "features": row}])
    assert len(feature_service.requests) - before == 3

    # An id the service lacks: 404 naming the host and the id
    status, error = refused(guest, "predict", service_id="s", rows=[{"id": "zz", "features": row}])
    assert status == 404 and f"party {HOST}" in error and "'zz'" in error

    # Always failing: 503 naming the host, the service and the attempts
    feature_service.fail_next = 100
    status, error = refused(guest, "predict", service_id="s", rows=[{"id": "a", "features": row}])
    assert status == 503 and f"party {HOST}" in error
    assert feature_service.url in error and "3 attempts" in error and "503" in error
    feature_service.fail_next = 0

    # Stalled past the deadline: 503 within the deadline, saying it timed out
    feature_service.stall_s = 1.0
    started = time.monotonic()
    status, error = refused(guest, "predict", service_id="s", rows=[{"id": "a", "features": row}])
    elapsed = time.monotonic() - started
    feature_service.stall_s = 0.0
    assert status == 503 and "timed out" in error and elapsed < 1.0

    # Nonsense from the service: 503 saying what was wrong
    feature_service.answer_override = json.dumps({"rows": {"a": {"h0": "x", "h1": 1}}}).encode()
    status, error = refused(guest, "predict", service_id="s", rows=[{"id": "a", "features": row}])
    assert status == 503 and "'h0' of row 'a' is not a number" in error
    feature_service.answer_override = b'{"rows": {"a": {"h0": 1.0}}}'
    status, error = refused(guest, "predict", service_id="s", rows=[{"id": "a", "features": row}])
    assert status == 503 and "lacks feature 'h1'" in error
    feature_service.answer_override = None

    # No table load on a host whose features come from its service
    status, error = refused(host, "features_load", table="online")
    assert status == 409 and "feature service" in error
    source.close()


def test_the_http_adapter_refuses_a_url_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        HttpFeatureSource("redis://x")
