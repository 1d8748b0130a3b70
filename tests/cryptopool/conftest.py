"""Crypto pool test helpers: `python -m fedworker` crypto replicas as real subprocesses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.worker.conftest import WorkerProcess

# A crypto replica is a worker process (crypto_only): the same process wrapper and log reader.
ReplicaProcess = WorkerProcess

StartReplica = Callable[..., ReplicaProcess]


@pytest.fixture
def start_replica(tmp_path: Path) -> Iterator[StartReplica]:
    """start_replica(**settings) -> a running crypto-only worker (WorkerSettings field names)."""
    started: list[ReplicaProcess] = []

    def start(**settings: str) -> ReplicaProcess:
        env = {f"FEDMQ_WORKER_{k.upper()}": v for k, v in settings.items()}
        env.setdefault("FEDMQ_WORKER_LOG_LEVEL", "INFO")
        env.setdefault("FEDMQ_WORKER_CRYPTO_ONLY", "true")
        # Several replicas run at once: no HTTP port unless a test asks for one.
        env.setdefault("FEDMQ_WORKER_HTTP_PORT", "0")
        replica = ReplicaProcess(env, tmp_path)
        started.append(replica)
        replica.wait_for("crypto_replica_started")
        return replica

    yield start
    for replica in started:
        replica.kill()
