"""Table uploads through the REST API on the real RabbitMQ: a table larger than one bus frame
(8 MiB) is stored and described, bad rows far apart are all reported by line, the small-table
path still sends one command, and the file-size limit answers 413.

One party in this process: a real worker (which serves the party's tables, fedworker.data) on
its own vhost, the gateway's API app (TestClient) on the same vhost. Before upload sessions, a
CSV over one frame was chunked by the bus and the prefetch-1 RPC subscription that answers table
commands never answered it (nor any later command).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fedbus.chunking import DEFAULT_MAX_FRAME_BYTES
from fedgateway.api import tables as tables_api
from fedgateway.api.app import create_app
from fedgateway.settings import GatewaySettings
from fedworker.main import Worker
from fedworker.metrics import WorkerMetrics
from fedworker.settings import WorkerSettings
from pydantic import SecretStr

from fedmq import local

from .conftest import DATA, PARTY, TOKEN, FakeGateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@dataclass
class RabbitParty:
    api: TestClient
    worker: Worker
    headers: dict[str, str]
    uploads_dir: Path

    def rpc_count(self, op: str, outcome: str = "ok") -> float:
        value = self.worker.metrics.registry.get_sample_value(
            "fedmq_worker_data_requests_total", {"op": op, "outcome": outcome}
        )
        return value or 0.0

    def staged_sessions(self) -> list[str]:
        """Upload sessions with parts still staged (committed ones keep only a marker)."""
        if not self.uploads_dir.is_dir():
            return []
        return [d.name for d in self.uploads_dir.iterdir() if any(d.glob("part-*"))]


@pytest.fixture(scope="module")
def rabbit_party(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitParty]:
    vhost = f"fedmqu{uuid.uuid4().hex[:8]}"
    local.ensure_vhost(vhost)
    bus_url = f"{amqp_url.rsplit('/', 1)[0]}/{vhost}"
    tmp = tmp_path_factory.mktemp("rabbit-party")
    worker = Worker(
        WorkerSettings(
            party_id=PARTY,
            bus_url=SecretStr(bus_url),
            database_url=SecretStr(f"sqlite:///{tmp / 'party.db'}"),
        ),
        WorkerMetrics(process=False),
    )
    worker.start()
    settings = GatewaySettings(
        party_id=PARTY, bus_url=SecretStr(bus_url), api_tokens=[SecretStr(TOKEN)]
    )
    client = TestClient(create_app(FakeGateway(settings)), raise_server_exceptions=False)
    try:
        yield RabbitParty(
            client,
            worker,
            {"Authorization": f"Bearer {TOKEN}"},
            tmp / "party-tables" / ".uploads",
        )
    finally:
        client.app.state.api.close()  # type: ignore[attr-defined]
        worker.stop()
        local.delete_vhost(vhost)


ID_SUFFIX = "-a-long-reference-of-this-customer-in-the-records-of-the-party-0123456789"
"""Long ids make up the bytes of a large upload: parsing time goes by rows, so a file of many
megabytes in few rows tests the same sessions and parts in a third of the time."""


def big_csv(rows: int, bad_lines: dict[int, str] | None = None) -> bytes:
    """A table of `rows` rows (id, label y, four features; ~115 bytes a row). `bad_lines` maps
    a 1-based file line (the header is line 1) to the text that replaces it."""
    lines = ["id,y,a,b,c,d"]
    lines += [
        f"u{i:07d}{ID_SUFFIX},{i % 2},{i % 997 / 7:.5f},{i % 101 / 3:.5f},{i % 13:.1f},"
        f"{i % 7 / 9:.5f}"
        for i in range(rows)
    ]
    for line, text in (bad_lines or {}).items():
        lines[line - 1] = text
    return ("\n".join(lines) + "\n").encode()


def upload(party: RabbitParty, name: str, content: bytes, **form: str) -> dict[str, object]:
    response = party.api.post(
        "/api/v1/tables",
        headers=party.headers,
        data={"name": name, "label_column": "y", **form},
        files={"file": (f"{name}.csv", content, "text/csv")},
    )
    return {"status": response.status_code, **response.json()}


def test_a_20_mib_table_uploads_through_the_rest_api_and_is_described_with_its_rows(
    rabbit_party: RabbitParty,
) -> None:
    # Prepare: well over two bus frames (~21 MB)
    content = big_csv(180_000)
    assert len(content) > 2 * DEFAULT_MAX_FRAME_BYTES
    parts_before = rabbit_party.rpc_count("table_upload_part")

    # Execute
    started = time.monotonic()
    stored = upload(rabbit_party, "big", content)
    took = time.monotonic() - started
    described = rabbit_party.api.get("/api/v1/tables/big", headers=rabbit_party.headers)

    # Assert: stored whole, in parts that each fit a frame, and the RPC queue still answers
    assert stored["status"] == 201, stored
    assert stored["rows"] == 180_000 and stored["features"] == 4
    assert stored["label_column"] == "y"
    assert stored["sha256"] == hashlib.sha256(content).hexdigest()
    assert described.status_code == 200 and described.json()["rows"] == 180_000
    assert rabbit_party.rpc_count("table_upload_part") - parts_before >= 5
    assert rabbit_party.staged_sessions() == []
    assert took < 120, f"the upload took {took:.0f} s"


def test_bad_rows_in_the_first_and_the_last_part_are_both_reported_by_line(
    rabbit_party: RabbitParty,
) -> None:
    # Prepare: one bad row at line 3 (first part), one near the end (last part of five)
    rows = 180_000
    last = rows + 1 - 2
    content = big_csv(rows, {3: "u_bad_first,1,x,1,1,1", last: "u_bad_last,0,1,1"})

    # Execute
    refused = upload(rabbit_party, "bad_far_apart", content)
    lookup = rabbit_party.api.get("/api/v1/tables/bad_far_apart", headers=rabbit_party.headers)

    # Assert: both lines named in the user's file, nothing stored, nothing left staged
    assert refused["status"] == 400, refused
    detail = str(refused["detail"])
    assert detail.startswith("2 bad row(s)"), detail
    assert "bad_far_apart.csv:3: not a number" in detail
    assert f"bad_far_apart.csv:{last}: 4 fields, the header has 6" in detail
    assert lookup.status_code == 404
    assert rabbit_party.staged_sessions() == []


def test_a_small_table_still_travels_as_one_table_upload_command(
    rabbit_party: RabbitParty,
) -> None:
    # Prepare
    content = (DATA / "breast_hetero_guest.csv").read_bytes()
    single_before = rabbit_party.rpc_count("table_upload")
    sessions_before = rabbit_party.rpc_count("table_upload_begin")

    # Execute
    stored = upload(rabbit_party, "small", content)

    # Assert
    assert stored["status"] == 201, stored
    assert stored["rows"] == 569
    assert rabbit_party.rpc_count("table_upload") == single_before + 1
    assert rabbit_party.rpc_count("table_upload_begin") == sessions_before


def test_an_existing_table_is_refused_before_any_part_travels(
    rabbit_party: RabbitParty,
) -> None:
    # Prepare
    content = big_csv(90_000)  # over one part (4 MiB), so it would be a session
    assert upload(rabbit_party, "taken", content)["status"] == 201
    parts_before = rabbit_party.rpc_count("table_upload_part")

    # Execute
    again = upload(rabbit_party, "taken", content)
    replaced = upload(rabbit_party, "taken", big_csv(65_000), replace="true")

    # Assert
    assert again["status"] == 409 and "replace" in str(again["detail"])
    assert replaced["status"] == 201 and replaced["rows"] == 65_000
    # only the replacing upload sent parts
    sent = rabbit_party.rpc_count("table_upload_part") - parts_before
    assert 1 < sent <= 3


def test_a_file_over_the_size_limit_is_413_and_leaves_nothing_staged(
    rabbit_party: RabbitParty, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a 6 MiB limit, so a 7 MiB file passes its first part and fails in the second
    monkeypatch.setattr(tables_api, "MAX_UPLOAD_BYTES", 6 << 20)
    content = big_csv(65_000)
    assert 6 << 20 < len(content) < 8 << 20
    aborted_before = rabbit_party.rpc_count("table_upload_abort")

    # Execute
    refused = upload(rabbit_party, "too_big", content)

    # Assert
    assert refused["status"] == 413 and "6 MiB" in str(refused["detail"])
    assert rabbit_party.rpc_count("table_upload_abort") == aborted_before + 1
    assert rabbit_party.staged_sessions() == []


def test_bad_utf8_in_a_later_part_names_its_byte_in_the_file(
    rabbit_party: RabbitParty,
) -> None:
    # Prepare: valid text for 5 MiB, then a byte that is no UTF-8
    content = big_csv(55_000)
    at = 5 << 20
    assert len(content) > at + 1
    broken = content[:at] + b"\xff" + content[at + 1 :]

    # Execute
    refused = upload(rabbit_party, "not_utf8", broken)

    # Assert
    assert refused["status"] == 400
    assert f"not UTF-8 text (byte {at})" in str(refused["detail"])
    assert rabbit_party.staged_sessions() == []
