"""`api_request`, the one request the audit and serving commands make to a party's REST API:
each way it can go wrong ends the command with status 2 and says why on stderr."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import typer

from fedmq.data_cli import api_request


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.headers.get("Authorization") != "Bearer good":
            body, status = {"detail": "unknown token"}, 401
        else:
            body, status = {"path": self.path}, 200
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass  # keep the test output quiet


@pytest.fixture
def api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_answer_comes_back_from_under_api_v1(api_url: str) -> None:
    response = api_request(api_url, "good", "GET", "/audit/jobs", timeout=5, params={"n": 1})
    assert response.json() == {"path": "/api/v1/audit/jobs?n=1"}


def test_no_token_a_refusal_and_no_answer_each_exit_2_with_the_reason(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as no_token:
        api_request(api_url, "", "GET", "/audit/jobs", timeout=5)
    with pytest.raises(typer.Exit) as refused:
        api_request(api_url, "bad", "GET", "/audit/jobs", timeout=5)
    with pytest.raises(typer.Exit) as unreachable:
        api_request("http://127.0.0.1:9", "good", "GET", "/audit/jobs", timeout=5)

    assert [e.value.exit_code for e in (no_token, refused, unreachable)] == [2, 2, 2]
    err = " ".join(capsys.readouterr().err.split())
    assert "no API token" in err
    assert "refused (401): unknown token" in err
    assert "refused (no answer): cannot reach http://127.0.0.1:9" in err
