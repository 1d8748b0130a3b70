"""The gateway's operator routes (/api/v1/peers, /api/v1/replay/finished) need the API token
like the rest of /api/v1, while /healthz and /metrics stay open for probes and Prometheus; and
the upload reader's checks hold across block boundaries."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import HTTPException, UploadFile
from fastapi.testclient import TestClient
from fedgateway.api.app import create_app
from fedgateway.api.tables import CsvText
from fedgateway.settings import GatewaySettings
from pydantic import SecretStr

from .conftest import PARTY, TOKEN, FakeGateway


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
def operator_api() -> Iterator[tuple[TestClient, RecordingGateway]]:
    settings = GatewaySettings(
        party_id=PARTY,
        bus_url=SecretStr(f"memory://ops-{uuid.uuid4().hex[:8]}"),
        api_tokens=[SecretStr(TOKEN)],
    )
    gateway = RecordingGateway(settings)
    with TestClient(create_app(gateway), raise_server_exceptions=False) as client:
        yield client, gateway


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
