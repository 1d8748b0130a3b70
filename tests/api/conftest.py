"""One party's control plane in one process: the gateway's REST API app (FastAPI TestClient),
a real scheduler (`fedscheduler.main.Scheduler`) and a real worker (`fedworker.main.Worker`)
sharing a SQLite database (the embedded default; `worker_database` gives the worker its own)
and an in-memory broker, as the party's services share RabbitMQ in the stack. Single-party
pipelines (guest only) run to the end here; two-party runs are in tests/e2e.

A party made without a worker still has its data service (`DataOnly`: what a worker serves on
svc.data.rpc, without the task runner), so its tables can be uploaded while no job runs.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from fedbus import Bus, connect
from fedbus.sql_inbox import make_engine
from fedflow.tables import TableStore, default_tables_dir
from fedgateway.api.app import create_app
from fedgateway.metrics import GatewayMetrics
from fedgateway.settings import GatewaySettings
from fedscheduler.main import Scheduler
from fedscheduler.settings import SchedulerSettings
from fedschemas import topics
from fedworker.data import DataServer, PartyTables
from fedworker.main import Worker
from fedworker.metrics import WorkerMetrics
from fedworker.settings import WorkerSettings
from pydantic import SecretStr

from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data"
PARTY = "9999"
TOKEN = "api-test-token-0123456789"

GUEST_ONLY = """\
name: guest-eval
parties:
  guest: "9999"
  host: []
components:
  - name: reader_0
    type: reader
    params:
      guest: {table: breast_hetero_guest}
  - name: eval_0
    type: evaluation
    inputs: {data: reader_0.data}
    params:
      common: {label_column: y, score_column: x0, score_scale: -1.0, score_transform: sigmoid}
"""


class FakeGateway:
    """What create_app reads of a running gateway (the link is not needed for the API)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "party_id": self.settings.party_id, "peers": {}}

    def finish_attempt(self, job_id: str, attempt: int | None) -> None:
        pass


class DataOnly:
    """The party's data service (fedworker.data) on its own bus connection, with no task
    runner: the tables of a party whose jobs must not run."""

    def __init__(self, bus_url: str, database_url: str) -> None:
        self.bus: Bus = connect(bus_url)
        self.engine = make_engine(database_url)
        self.tables = TableStore(self.engine, default_tables_dir(database_url, PARTY))
        self.metrics = WorkerMetrics(process=False)
        self.server = DataServer(
            self.bus, topics.DATA_RPC, PARTY, PartyTables(self.tables), metrics=self.metrics
        )
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.bus.close()
        self.engine.dispose()


@dataclass
class Party:
    api: TestClient
    scheduler: Scheduler
    worker: Worker | None
    database_url: str
    headers: dict[str, str]
    data_only: DataOnly | None = None


@pytest.fixture
def party_factory(tmp_path: Path) -> Iterator[Callable[..., Party]]:
    started: list[Party] = []

    def make(*, worker: bool = True, worker_database: str | None = None) -> Party:
        """`worker_database`: the worker's own SQLite file (default: the scheduler's)."""
        bus_url = f"memory://api-{uuid.uuid4().hex[:10]}"
        database_url = f"sqlite:///{tmp_path / 'party.db'}"
        worker_url = f"sqlite:///{tmp_path / worker_database}" if worker_database else database_url
        scheduler = Scheduler(
            SchedulerSettings(
                party_id=PARTY,
                bus_url=SecretStr(bus_url),
                database_url=SecretStr(database_url),
                http_port=-1,
                timer_interval_s=0.2,
            )
        )
        scheduler.start()
        runner: Worker | None = None
        data_only: DataOnly | None = None
        if worker:
            runner = Worker(
                WorkerSettings(
                    party_id=PARTY,
                    bus_url=SecretStr(bus_url),
                    database_url=SecretStr(worker_url),
                    task_poll_s=0.05,
                )
            )
            runner.start()
        else:
            data_only = DataOnly(bus_url, worker_url)
        settings = GatewaySettings(
            party_id=PARTY, bus_url=SecretStr(bus_url), api_tokens=[SecretStr(TOKEN)]
        )
        client = TestClient(create_app(FakeGateway(settings)), raise_server_exceptions=False)
        party = Party(
            client,
            scheduler,
            runner,
            database_url,
            {"Authorization": f"Bearer {TOKEN}"},
            data_only,
        )
        started.append(party)
        return party

    yield make
    for party in started:
        api = party.api.app.state.api  # type: ignore[attr-defined]
        if api is not None:
            api.close()
        if party.worker is not None:
            party.worker.stop()
        if party.data_only is not None:
            party.data_only.stop()
        party.scheduler.stop()


@pytest.fixture(scope="module")
def fuzz_party(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Party]:
    """One party for every example of a hypothesis test (a fresh one each would be slow)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    bus_url = f"memory://fuzz-{uuid.uuid4().hex[:10]}"
    database_url = f"sqlite:///{tmp / 'party.db'}"
    scheduler = Scheduler(
        SchedulerSettings(
            party_id=PARTY,
            bus_url=SecretStr(bus_url),
            database_url=SecretStr(database_url),
            http_port=-1,
        )
    )
    scheduler.start()
    data_only = DataOnly(bus_url, database_url)
    settings = GatewaySettings(
        party_id=PARTY, bus_url=SecretStr(bus_url), api_tokens=[SecretStr(TOKEN)]
    )
    client = TestClient(create_app(FakeGateway(settings)), raise_server_exceptions=False)
    try:
        yield Party(
            client, scheduler, None, database_url, {"Authorization": f"Bearer {TOKEN}"}, data_only
        )
    finally:
        client.app.state.api.close()  # type: ignore[attr-defined]
        data_only.stop()
        scheduler.stop()


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve `app` over real HTTP on a free loopback port (for the CLI); yields its URL."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says
    # TCP; without it every keep-alive answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, what="the HTTP server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
