"""Crypto pool test helpers: `python -m fedworker` crypto replicas as real subprocesses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.worker.conftest import WorkerProcess, worker_processes

# A crypto replica is a worker process (crypto_only): the same process wrapper and log reader.
ReplicaProcess = WorkerProcess

StartReplica = Callable[..., ReplicaProcess]


@pytest.fixture
def start_replica(tmp_path: Path) -> Iterator[StartReplica]:
    """start_replica(**settings) -> a running crypto-only worker (WorkerSettings field names)."""
    with worker_processes(tmp_path, "crypto_replica_started", crypto_only="true") as start:
        yield start
