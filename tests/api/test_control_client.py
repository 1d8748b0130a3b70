"""fedcontrol's clients: refusals carry their HTTP status, silence is SchedulerUnavailable /
DataUnavailable naming the party, the party's worker answers the table ops (the data service)
and the scheduler refuses them, pointing at it."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from fedbus import connect
from fedcontrol import (
    DataClient,
    DataCommandFailed,
    DataUnavailable,
    SchedulerClient,
    SchedulerCommandFailed,
    SchedulerUnavailable,
)

from .conftest import DATA, Party


@pytest.mark.parametrize(
    ("kind", "status"),
    [("invalid", 400), ("not_found", 404), ("conflict", 409), ("internal", 500), ("odd", 500)],
)
def test_a_refusal_maps_its_kind_to_an_http_status(kind: str, status: int) -> None:
    assert SchedulerCommandFailed(kind, "why").http_status == status


def test_no_scheduler_at_all_is_unavailable_naming_the_party() -> None:
    bus = connect(f"memory://ctl-{uuid.uuid4().hex[:8]}")
    try:
        client = SchedulerClient(bus, "9999", timeout=0.3)
        with pytest.raises(SchedulerUnavailable, match="scheduler of party 9999"):
            client.list_jobs()  # nothing declared the topic: unroutable
        bus.declare("svc.scheduler.rpc")
        with pytest.raises(SchedulerUnavailable, match=r"within 0\.3 s"):
            client.list_jobs()  # declared, nobody consumes: no answer
    finally:
        bus.close()


def test_no_worker_at_all_is_the_data_service_unavailable_naming_the_party() -> None:
    bus = connect(f"memory://ctl-{uuid.uuid4().hex[:8]}")
    try:
        client = DataClient(bus, "9999", timeout=0.3)
        with pytest.raises(DataUnavailable, match="data service of party 9999"):
            client.table_list()
    finally:
        bus.close()


def test_table_ops_store_in_the_store_the_worker_reads(
    party_factory: Callable[..., Party],
) -> None:
    party = party_factory()
    assert party.worker is not None
    bus = connect(party.scheduler.settings.bus_url.get_secret_value())
    client = DataClient(bus, "9999")
    try:
        text = (DATA / "breast_hetero_host.csv").read_text()

        stored = client.table_upload("host_half", text)
        seen_by_worker = party.worker.tables.get("host_half")
        listed = client.table_list()
        with pytest.raises(DataCommandFailed) as missing:
            client.table_get("nope")

        assert stored["rows"] == 569 and stored["label_column"] is None
        assert seen_by_worker is not None and seen_by_worker.sha256 == stored["sha256"]
        assert [t["name"] for t in listed] == ["host_half"]
        assert missing.value.http_status == 404
    finally:
        bus.close()


def test_the_scheduler_refuses_table_ops_and_names_the_data_service(
    party_factory: Callable[..., Party],
) -> None:
    # Prepare: an old client sending a table op to the scheduler's topic
    party = party_factory(worker=False)
    bus = connect(party.scheduler.settings.bus_url.get_secret_value())
    try:
        client = SchedulerClient(bus, "9999")

        # Execute
        with pytest.raises(SchedulerCommandFailed) as refused:
            client.call("table_list")

        # Assert
        assert refused.value.http_status == 400
        assert "svc.data.rpc" in refused.value.message
    finally:
        bus.close()
