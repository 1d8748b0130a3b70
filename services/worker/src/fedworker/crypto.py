"""The worker's part of the crypto job pool: serving crypto jobs, and the executor components use.

A worker with `crypto_serve` runs a `fedflow.cryptopool.CryptoReplica` on `crypto_topic`
(svc.crypto) next to its task queue; `crypto_only` runs nothing else (`CryptoWorker`: no task
queue, no database), which is how a party adds replicas for heavy homomorphic work. With
`crypto_replicas` > 0 the worker's components get a `BusExecutor` over those replicas as
ctx.executor; otherwise this process's thread pool.
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import Executor

import structlog
from fedbus import Bus, connect
from fedflow.cryptopool import BusExecutor, CryptoReplica, local_executor

from fedworker.settings import WorkerSettings

log = structlog.get_logger("fedworker.crypto")


def replica_id(settings: WorkerSettings) -> str:
    """A replica's id in crypto.result answers: party, process and a random suffix."""
    return f"{settings.party_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def make_replica(bus: Bus, settings: WorkerSettings) -> CryptoReplica | None:
    """The crypto replica this worker runs, or None when it serves no crypto jobs."""
    if not (settings.crypto_serve or settings.crypto_only):
        return None
    return CryptoReplica(
        bus,
        settings.party_id,
        topic=settings.crypto_topic,
        replica_id=replica_id(settings),
        max_deliveries=settings.max_deliveries,
        max_envelope_bytes=settings.max_envelope_bytes,
    )


def make_executor(bus: Bus, settings: WorkerSettings) -> Executor:
    """What components pass to fedcrypto: the crypto job pool, or the local thread pool."""
    if settings.crypto_replicas == 0:
        return local_executor()
    return BusExecutor(
        bus,
        settings.party_id,
        topic=settings.crypto_topic,
        replicas=settings.crypto_replicas,
        chunks_per_replica=settings.crypto_chunks_per_replica,
        timeout_s=settings.crypto_timeout_s or None,
        max_envelope_bytes=settings.max_envelope_bytes,
    )


class CryptoWorker:
    """A crypto-only replica: the bus and a CryptoReplica, nothing else."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.bus: Bus = connect(settings.bus_url.get_secret_value())
        replica = make_replica(self.bus, settings)
        assert replica is not None
        self.replica = replica

    def start(self) -> None:
        self.replica.start()

    def stop(self) -> None:
        self.replica.stop()
        self.bus.close()
