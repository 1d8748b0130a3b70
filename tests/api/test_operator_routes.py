"""The gateway's operator routes (/api/v1/peers, /api/v1/replay/finished) need the API token
like the rest of /api/v1, while /healthz and /metrics stay open for probes and Prometheus; the
replay override refuses ids that are no job id and jobs still open at the party's scheduler;
and the upload reader's checks hold across block boundaries."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException, UploadFile
from fastapi.testclient import TestClient
from fedgateway.api.app import create_app
from fedgateway.api.tables import CsvText
from fedgateway.settings import GatewaySettings
from fedscheduler.main import Scheduler
from fedscheduler.settings import SchedulerSettings
from pydantic import SecretStr

from .conftest import GUEST_ONLY, PARTY, TOKEN, FakeGateway


class RecordingGateway(FakeGateway):
    def __init__(self, settings: GatewaySettings) -> None:
        super().__init__(settings)
        self.finished: list[tuple[str, int | None]] = []

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "party_id": PARTY,
            "peers": {"10000": {"address": "10.0.0.2:7443", "connected": True}},
        }

    def finish_attempt(self, job_id: str, attempt: int | None) -> None:
        self.finished.append((job_id, attempt))


@pytest.fixture
def operator_api(tmp_path: Path) -> Iterator[tuple[TestClient, RecordingGateway]]:
    """The app with the party's scheduler (the replay override asks it for the job's state);
    no worker, so a submitted job stays running."""
    bus_url = f"memory://ops-{uuid.uuid4().hex[:8]}"
    scheduler = Scheduler(
        SchedulerSettings(
            party_id=PARTY,
            bus_url=SecretStr(bus_url),
            database_url=SecretStr(f"sqlite:///{tmp_path / 'party.db'}"),
            http_port=-1,
        )
    )
    scheduler.start()
    settings = GatewaySettings(
        party_id=PARTY, bus_url=SecretStr(bus_url), api_tokens=[SecretStr(TOKEN)]
    )
    gateway = RecordingGateway(settings)
    try:
        with TestClient(create_app(gateway), raise_server_exceptions=False) as client:
            yield client, gateway
            client.app.state.api.close()  # type: ignore[attr-defined]
    finally:
        scheduler.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-the-token-0123456789"}


@pytest.mark.parametrize("headers", [{}, WRONG], ids=["no token", "wrong token"])
def test_operator_routes_answer_401_without_the_token_and_change_nothing(
    operator_api: tuple[TestClient, RecordingGateway], headers: dict[str, str]
) -> None:
    # Prepare
    client, gateway = operator_api

    # Execute
    peers = client.get("/api/v1/peers", headers=headers)
    finished = client.post(
        "/api/v1/replay/finished", headers=headers, json={"job_id": "j1", "attempt": 0}
    )

    # Assert
    assert peers.status_code == 401 and "10.0.0.2" not in peers.text
    assert finished.status_code == 401
    assert peers.headers["WWW-Authenticate"].startswith("Bearer")
    assert gateway.finished == []


def test_operator_routes_work_with_the_token(
    operator_api: tuple[TestClient, RecordingGateway],
) -> None:
    # Prepare
    client, gateway = operator_api

    # Execute
    peers = client.get("/api/v1/peers", headers=AUTH)
    finished = client.post(
        "/api/v1/replay/finished", headers=AUTH, json={"job_id": "j1", "attempt": 2}
    )
    whole_job = client.post("/api/v1/replay/finished", headers=AUTH, json={"job_id": "j2"})

    # Assert
    assert peers.status_code == 200
    assert peers.json() == {"data": {"10000": {"address": "10.0.0.2:7443", "connected": True}}}
    assert finished.status_code == 204 and whole_job.status_code == 204
    assert gateway.finished == [("j1", 2), ("j2", None)]


def test_the_replay_override_refuses_a_running_job_and_closes_nothing(
    operator_api: tuple[TestClient, RecordingGateway],
) -> None:
    # Prepare: a job that runs at this party (no worker takes its task).
    client, gateway = operator_api
    submitted = client.post(
        "/api/v1/jobs?job_id=live-1",
        content=GUEST_ONLY,
        headers={**AUTH, "Content-Type": "application/yaml"},
    )

    # Execute
    whole = client.post("/api/v1/replay/finished", headers=AUTH, json={"job_id": "live-1"})
    current = client.post(
        "/api/v1/replay/finished", headers=AUTH, json={"job_id": "live-1", "attempt": 0}
    )
    later = client.post(
        "/api/v1/replay/finished", headers=AUTH, json={"job_id": "live-1", "attempt": 7}
    )
    job = client.get("/api/v1/jobs/live-1", headers=AUTH)

    # Assert: refused with the reason, the guard untouched, the job still running.
    assert submitted.status_code == 201, submitted.text
    assert [whole.status_code, current.status_code, later.status_code] == [409, 409, 409]
    assert "live-1 is running" in whole.json()["detail"]
    assert "/api/v1/jobs/live-1/stop" in whole.json()["detail"]
    assert gateway.finished == []
    assert job.json()["state"] == "running"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"job_id": "a\nb"}, "job_id"),
        ({"job_id": "\u0000"}, "job_id"),
        ({"job_id": "../x"}, "job_id"),
        ({"job_id": "x" * 129}, "job_id"),
        ({"job_id": "j1", "attempt": 2**64}, "attempt"),
        ({"job_id": "j1", "attempt": 2**31}, "attempt"),
        ({"job_id": "j1", "attempt": -1}, "attempt"),
    ],
    ids=["newline", "nul", "path", "too long", "2^64", "2^31", "negative"],
)
def test_the_replay_override_refuses_what_is_no_job_id_or_attempt_with_a_422(
    operator_api: tuple[TestClient, RecordingGateway], body: dict[str, Any], field: str
) -> None:
    client, gateway = operator_api

    response = client.post("/api/v1/replay/finished", headers=AUTH, json=body)

    assert response.status_code == 422, response.text
    assert [p["loc"] for p in response.json()["detail"]] == [["body", field]]
    assert gateway.finished == []


def broker_down() -> Any:
    raise OSError("connection refused")


def test_the_replay_override_answers_503_and_closes_nothing_without_a_scheduler(
    operator_api: tuple[TestClient, RecordingGateway],
) -> None:
    # Prepare: the API's broker is unreachable, so the job's state cannot be asked.
    client, gateway = operator_api
    api = client.app.state.api  # type: ignore[attr-defined]
    api.close()
    api._bus_factory = broker_down

    # Execute
    response = client.post("/api/v1/replay/finished", headers=AUTH, json={"job_id": "j1"})

    # Assert
    assert response.status_code == 503, response.text
    assert "cannot reach party 9999's broker" in response.json()["detail"]
    assert gateway.finished == []


def test_health_and_metrics_stay_open_for_probes(
    operator_api: tuple[TestClient, RecordingGateway],
) -> None:
    client, _ = operator_api

    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200


async def read_all(content: bytes, block_bytes: int) -> str:
    reader = CsvText(UploadFile(io.BytesIO(content)), block_bytes=block_bytes)
    text = ""
    while not reader.done:
        text += await reader.read()
    return text


@pytest.mark.anyio
@pytest.mark.parametrize("block_bytes", [1, 2, 3, 5, 64])
async def test_the_upload_reader_decodes_characters_cut_by_a_block_boundary(
    block_bytes: int,
) -> None:
    content = "\ufeffid,name\n1,Zoë\n2,東京\n3,🙂\n".encode()

    text = await read_all(content, block_bytes)

    assert text == "id,name\n1,Zoë\n2,東京\n3,🙂\n"


@pytest.mark.anyio
@pytest.mark.parametrize("block_bytes", [1, 4, 7, 64])
async def test_the_upload_reader_names_the_file_offset_of_a_bad_byte(block_bytes: int) -> None:
    content = "\ufeffid,x\n1,é\n".encode() + b"2,\xe9t\xe9\n"
    at = content.index(b"\xe9t")

    with pytest.raises(HTTPException) as refused:
        await read_all(content, block_bytes)

    assert refused.value.status_code == 400
    assert f"(byte {at})" in str(refused.value.detail)
