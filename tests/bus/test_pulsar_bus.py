"""pulsar:// passes the bus contract when a Pulsar broker is given in PULSAR_URL.

No Pulsar broker can be installed on the project's machines (no package, no way to fetch
one), so these tests are skipped unless PULSAR_URL is set, and the skip reason says so.
"""

from __future__ import annotations

import os

import pytest

from tests.bus.contract import BusContract, ConnectBus, kill_subprocess_consumer_mid_handler

PULSAR_URL = os.environ.get("PULSAR_URL")

pytestmark = pytest.mark.skipif(
    not PULSAR_URL, reason="PULSAR_URL not set: no Pulsar broker can be installed on these machines"
)


class TestPulsarBus(BusContract):
    @pytest.fixture
    def bus_url(self) -> str:
        assert PULSAR_URL is not None
        return PULSAR_URL

    def kill_consumer_mid_handler(self, bus_url: str, connect_bus: ConnectBus, topic: str) -> None:
        kill_subprocess_consumer_mid_handler(bus_url, topic)


def test_pulsar_adapter_maps_topics_and_tenant_from_the_url() -> None:
    from fedbus.bus_factory import adapter_for
    from fedbus.pulsar_bus import PulsarBus

    assert adapter_for("pulsar+ssl://broker:6651") is PulsarBus
