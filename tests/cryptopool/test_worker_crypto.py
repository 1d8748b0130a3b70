"""The worker's wiring of the crypto job pool: what ctx.executor is, and that it works."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fedcrypto.paillier import generate_keypair
from fedflow.cryptopool import BusExecutor
from fedworker.main import Worker
from fedworker.settings import WorkerSettings


def _settings(tmp_path: Path, bus_name: str, **extra: object) -> WorkerSettings:
    return WorkerSettings(
        party_id="9999",
        bus_url=f"memory://{bus_name}",
        database_url=f"sqlite:///{tmp_path / 'worker.db'}",
        **extra,
    )


def test_a_worker_without_crypto_replicas_gives_components_the_local_thread_pool(
    tmp_path: Path, unique_name: str
) -> None:
    worker = Worker(_settings(tmp_path, unique_name))
    try:
        assert isinstance(worker.runtime.executor, ThreadPoolExecutor)
        assert worker.crypto_replica is None
    finally:
        worker.stop()


def test_a_worker_with_crypto_replicas_runs_component_crypto_through_the_pool(
    tmp_path: Path, unique_name: str
) -> None:
    # Prepare: one worker that serves crypto jobs and uses the pool for its components.
    worker = Worker(_settings(tmp_path, unique_name, crypto_serve=True, crypto_replicas=1))
    worker.start()
    pk, sk = generate_keypair(512, insecure_allow_short=True)
    try:
        executor = worker.runtime.executor
        assert isinstance(executor, BusExecutor)

        # Execute: what a component does with ctx.executor.
        enc = pk.encrypt(np.arange(100), executor=executor, chunk_size=25)

        # Assert
        assert np.array_equal(sk.decrypt(enc), np.arange(100))
        assert worker.crypto_replica is not None and worker.crypto_replica.jobs_done == 4
    finally:
        worker.stop()
