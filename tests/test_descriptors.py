"""Descriptors given back: what a test opens and closes must not stay open in the suite's one
process. A leak of a few per test adds up over 2,500 tests: the process held over 1,024 by
the time tests/faults ran (select() refused the fault proxy's sockets then), most of them the
event loops of closed AMQP buses (six each). tests/conftest.py checks the whole suite's count
at its end."""

from __future__ import annotations

import os

import pytest
from fedbus import connect


def held_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc (Linux)"
)


@pytest.mark.integration
def test_a_closed_amqp_bus_holds_no_descriptor(amqp_url: str, unique_name: str) -> None:
    # Prepare: one bus opened and closed first, so what a first connection loads for good
    # (modules, the resolver's files) is not counted
    warm = connect(amqp_url)
    warm.declare(unique_name)
    warm.close()
    before = held_descriptors()

    # Execute: three buses, each used and closed
    for _ in range(3):
        bus = connect(amqp_url)
        bus.declare(unique_name)
        bus.close()

    # Assert: six per bus stayed open before the fix (its event loop's); none may
    after = held_descriptors()
    cleanup = connect(amqp_url)
    cleanup.delete(unique_name)
    cleanup.close()
    assert after - before <= 2, f"{after - before} descriptors left open by 3 closed buses"
