"""Fixtures of the runtime tests (a memory bus and a topic on it, captured JSON log lines); also
makes `tests.runtime.helpers` importable however pytest is started."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fedbus import Bus, connect

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture
def bus(unique_name: str) -> Iterator[Bus]:
    bus = connect(f"memory://{unique_name}")
    yield bus
    bus.close()


@pytest.fixture
def topic(bus: Bus, unique_name: str) -> str:
    name = f"{unique_name}.svc"
    bus.declare(name)
    return name


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the process logs during the test, as JSON lines (read them with helpers.events)."""
    from tests.runtime.helpers import captured_log  # importable once the path above is set

    with captured_log("test-runtime", "DEBUG") as stream:
        yield stream
