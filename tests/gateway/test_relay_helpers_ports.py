"""The in-process gateway pair tries new ports when one it picked is taken before it binds."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from fedmq.local import free_port
from tests import relay_helpers
from tests.relay_helpers import InProcessGateways


@pytest.fixture
def taken_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_a_port_taken_between_picking_and_binding_is_replaced(tmp_path, monkeypatch, taken_port):
    # Arrange: the first port handed out is already bound by someone else
    handed = iter([taken_port])
    monkeypatch.setattr(relay_helpers, "free_port", lambda: next(handed, None) or free_port())

    # Act
    with InProcessGateways(tmp_path, ["9999", "10000"], "ports") as gateways:
        # Assert: both gateways listen, neither on the taken port
        ports = {g.link_port for g in gateways.gateways.values()}
        assert len(ports) == 2
        assert taken_port not in ports
