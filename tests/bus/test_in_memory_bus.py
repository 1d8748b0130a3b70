"""memory:// passes the bus contract, plus what only the in-process broker promises."""

from __future__ import annotations

import pytest
from fedbus import Message, connect
from fedbus.in_memory_bus import InMemoryBus

from tests.bus.contract import BusContract, Recorder, wait_until


class TestInMemoryBus(BusContract):
    @pytest.fixture
    def bus_url(self, unique_name: str) -> str:
        return f"memory://{unique_name}"


def test_buses_with_the_same_name_share_a_broker_and_others_do_not(unique_name: str) -> None:
    party_a = connect(f"memory://{unique_name}-a")
    party_a_again = connect(f"memory://{unique_name}-a")
    party_b = connect(f"memory://{unique_name}-b")
    party_a.declare("jobs")
    got = Recorder()
    party_a_again.subscribe("jobs", got)

    party_a.publish(Message("jobs", b"x", "m-1"))

    wait_until(lambda: got.ids == ["m-1"], what="delivery on the shared broker")
    assert isinstance(party_b, InMemoryBus)
    assert party_b.name != party_a_again.name
    for bus in (party_a, party_a_again, party_b):
        bus.close()


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown bus URL scheme"):
        connect("kafka://localhost:9092")
