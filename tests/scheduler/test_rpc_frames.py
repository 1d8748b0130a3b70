"""The scheduler's RPC on the real RabbitMQ: a command too large for one bus frame is refused
before it is sent, and the queue keeps answering. (Table uploads, which travel as upload
sessions, are the data service's: tests/worker/test_data_uploads.py.)

The scheduler runs in this process on its own vhost and SQLite database; commands go through
`SchedulerClient` as the REST API sends them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fedbus import Bus, connect
from fedbus.chunking import DEFAULT_MAX_FRAME_BYTES
from fedcontrol import SchedulerClient, SchedulerCommandFailed
from fedscheduler.main import Scheduler
from fedscheduler.settings import SchedulerSettings
from pydantic import SecretStr

from fedmq import local

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTY = "9999"


@dataclass
class RpcParty:
    client: SchedulerClient
    scheduler: Scheduler


@pytest.fixture(scope="module")
def party(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpcParty]:
    vhost = f"fedmqr{uuid.uuid4().hex[:8]}"
    local.ensure_vhost(vhost)
    bus_url = f"{amqp_url.rsplit('/', 1)[0]}/{vhost}"
    tmp = tmp_path_factory.mktemp("rpc-frames")
    scheduler = Scheduler(
        SchedulerSettings(
            party_id=PARTY,
            bus_url=SecretStr(bus_url),
            database_url=SecretStr(f"sqlite:///{tmp / 'party.db'}"),
            http_port=-1,
        )
    )
    scheduler.start()
    bus: Bus = connect(bus_url)
    try:
        yield RpcParty(SchedulerClient(bus, PARTY, timeout=20), scheduler)
    finally:
        bus.close()
        scheduler.stop()
        local.delete_vhost(vhost)


def test_a_command_over_one_frame_is_refused_before_it_is_sent(party: RpcParty) -> None:
    # Prepare: a pipeline document larger than a frame (only tables have upload sessions)
    huge = "# padding\n" * (DEFAULT_MAX_FRAME_BYTES // 10 + 1)

    # Execute
    started = time.monotonic()
    with pytest.raises(SchedulerCommandFailed) as refused:
        party.client.submit(huge)
    took = time.monotonic() - started
    listed = party.client.list_jobs()

    # Assert: refused at once, and the scheduler's queue was never blocked by it
    assert refused.value.http_status == 400 and "bus frame" in refused.value.message
    assert took < 2
    assert isinstance(listed, list)
