"""pulsar:// passes the bus contract when a Pulsar broker is given in PULSAR_URL.

No Pulsar broker can be installed on the project's machines (no package, no way to fetch
one), so these tests are skipped unless PULSAR_URL is set, and the skip reason says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fedbus import Message, connect
from fedbus.pulsar_bus import PulsarBus, _properties, _to_delivery

from tests.bus.contract import BusContract, ConnectBus, kill_subprocess_consumer_mid_handler

PULSAR_URL = os.environ.get("PULSAR_URL")

needs_broker = pytest.mark.skipif(
    not PULSAR_URL, reason="PULSAR_URL not set: no Pulsar broker can be installed on these machines"
)


@needs_broker
class TestPulsarBus(BusContract):
    @pytest.fixture
    def bus_url(self) -> str:
        assert PULSAR_URL is not None
        return PULSAR_URL

    def kill_consumer_mid_handler(self, bus_url: str, connect_bus: ConnectBus, topic: str) -> None:
        kill_subprocess_consumer_mid_handler(bus_url, topic)


# Below: the adapter's own mapping logic, checked without a broker.


@pytest.fixture
def offline_pulsar_bus() -> Iterator[PulsarBus]:
    """A PulsarBus that never talks to a broker (pulsar-client connects lazily)."""
    bus = connect("pulsar://127.0.0.1:6650?tenant=acme&namespace=fl")
    assert isinstance(bus, PulsarBus)
    yield bus
    bus.close()


def test_url_selects_tenant_and_namespace_for_persistent_topics(
    offline_pulsar_bus: PulsarBus,
) -> None:
    assert offline_pulsar_bus.full_topic("jobs") == "persistent://acme/fl/jobs"
    assert offline_pulsar_bus.full_topic("persistent://x/y/z") == "persistent://x/y/z"


def test_capabilities_say_unroutable_cannot_be_detected(offline_pulsar_bus: PulsarBus) -> None:
    caps = offline_pulsar_bus.capabilities

    assert (caps.detects_unroutable, caps.persistent, caps.native_delivery_limit) == (
        False,
        True,
        True,
    )
    assert caps.max_frame_bytes < 5 * 1024 * 1024  # Pulsar's default maxMessageSize


def test_message_fields_round_trip_through_pulsar_properties() -> None:
    message = Message("t", b"body", "m-1", headers={"x-app": "v"}, reply_to="r", correlation_id="c")

    class FakePulsarMessage:  # the three accessors the adapter reads from pulsar.Message
        def properties(self) -> dict[str, str]:
            return _properties(message)

        def data(self) -> bytes:
            return message.body

        def redelivery_count(self) -> int:
            return 2

    delivery = _to_delivery("t", FakePulsarMessage())

    assert (delivery.message_id, delivery.body, delivery.reply_to, delivery.correlation_id) == (
        "m-1",
        b"body",
        "r",
        "c",
    )
    assert dict(delivery.headers) == {"x-app": "v"}
    assert delivery.delivery_count == 3
