"""The WAN emulator for the tests of tests/wan: one per module, at 80 ms / 1% loss."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.wan.emulator import WanEmulator, missing_requirements


@pytest.fixture(scope="module")
def wan() -> Iterator[WanEmulator]:
    why = missing_requirements()
    if why is not None:
        pytest.skip(why)
    emulator = WanEmulator(f"fwt{os.getpid() % 100000}")
    emulator.up(rtt_ms=80, loss_pct=1, rate_mbit=1000)
    try:
        yield emulator
    finally:
        emulator.down()
