"""The worker's part of the crypto job pool: serving crypto jobs, and the executor components use.

A worker with `crypto_serve` runs a `fedflow.cryptopool.CryptoReplica` on `crypto_topic`
(svc.crypto) next to its task queue; `crypto_only` runs nothing else (`CryptoWorker`: no task
queue, no database), which is how a party adds replicas for heavy homomorphic work. With
`crypto_replicas` > 0 the worker's components get a `BusExecutor` over those replicas as
ctx.executor; otherwise this process's thread pool.

Metrics (with a WorkerMetrics): every crypto pool job this process runs is timed in
fedmq_crypto_job_seconds and its values counted in fedmq_crypto_ops_total, labelled with the
operation (`KERNEL_OPS`) and the Paillier backend that really ran it (`crypto_backend`): a
crypto.job served by its replica, a chunk run by its own thread pool, and a batch small enough
that fedcrypto keeps it in the component's thread (the executor's `run_here`, with
`MeteredThreadPool` or `MeteredBusExecutor`). Obfuscators precomputed on a component's prefetch
threads are counted as `obfuscate` through the executor's `observe` (fedflow.kit.he). Jobs sent
to other replicas are counted where they run, not here. Every (op, backend) series exists at 0
from the start, so the first job is an increase.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Final, ParamSpec, TypeVar

import structlog
from fedbus import Bus, connect
from fedbus.inbox import InboxTransaction
from fedcrypto.paillier import kernels
from fedflow.cryptocodec import CodecError, decode
from fedflow.cryptopool import BusExecutor, CryptoReplica, kernel_name, local_executor
from fedschemas import Envelope, Payload
from fedschemas.payloads import CryptoJob

from fedworker.metrics import WorkerMetrics
from fedworker.settings import WorkerSettings

P = ParamSpec("P")
T = TypeVar("T")

log = structlog.get_logger("fedworker.crypto")


KERNEL_OPS: Final[dict[str, tuple[str, int]]] = {
    kernel_name(fn): spec
    for fn, spec in (
        (kernels.k_obfuscators, ("obfuscate", 1)),
        (kernels.k_encrypt, ("encrypt", 1)),
        (kernels.k_encrypt_with, ("encrypt", 1)),
        (kernels.k_rerandomize, ("rerandomize", 1)),
        (kernels.k_mul, ("add", 1)),
        (kernels.k_add_plain, ("add", 1)),
        (kernels.k_invert, ("negate", 1)),
        (kernels.k_pow, ("scalar_mul", 1)),
        (kernels.k_prod_segments, ("sum", 1)),
        (kernels.k_multiexp, ("matvec", 3)),
        (kernels.k_decrypt, ("decrypt", 2)),
        (kernels.k_validate, ("validate", 1)),
    )
}
"""Kernel name -> (op label, index of the argument whose rows are the values processed). k_mul
multiplies ciphertexts, which adds their plaintexts; k_multiexp's values are the entries of its
exponent matrix (one ciphertext-times-plaintext product each: X.T @ [[d]])."""


CRYPTO_OPS: Final = tuple(sorted({op for op, _ in KERNEL_OPS.values()}))
"""Every `op` label value, pre-created at 0 on a metered pool or replica."""


def crypto_backend() -> str:
    """The Paillier backend the kernels run on in this process: fedcrypto's C extension
    ("native") when it was built, else gmpy2."""
    return "native" if kernels.native_available() else "gmpy2"


def kernel_values(name: str, args: tuple[Any, ...]) -> tuple[str, int] | None:
    """(op, values processed) of a call of kernel `name`; None for a function that is not a
    crypto kernel."""
    spec = KERNEL_OPS.get(name)
    if spec is None:
        return None
    op, index = spec
    arg = args[index] if index < len(args) else None
    shape = getattr(arg, "shape", None)
    if not shape:
        return op, 0
    if op == "matvec":
        return op, int(shape[0]) * (int(shape[1]) if len(shape) > 1 else 1)
    return op, int(shape[0])


def precreate(metrics: WorkerMetrics, backend: str) -> None:
    """Every op's series of `backend` at 0: increase() sees the first job (docs/metrics.md)."""
    for op in CRYPTO_OPS:
        metrics.crypto_ops.labels(op, backend)
        metrics.crypto_job_seconds.labels(op, backend)


class CryptoRecorder:
    """Records kernel calls and other crypto work of this process in WorkerMetrics."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self.backend = crypto_backend()
        precreate(metrics, self.backend)

    def timed(self, counted: tuple[str, int], fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        started = time.perf_counter()
        result = fn(*args, **kw)
        self.observe(counted[0], counted[1], time.perf_counter() - started)
        return result

    def run_here(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        counted = kernel_values(kernel_name(fn), tuple(args))
        if counted is None:
            return fn(*args, **kwargs)
        return self.timed(counted, fn, *args, **kwargs)

    def observe(self, op: str, values: int, seconds: float) -> None:
        self.metrics.crypto_job(op, self.backend, values, seconds)


class MeteredThreadPool(ThreadPoolExecutor):
    """The worker's own thread pool for crypto chunks, recording each kernel call as a job.

    A ThreadPoolExecutor itself, not a wrapper: fedcrypto sizes its chunks differently for one
    (threads need no argument shipping), and that must not change because metrics are on."""

    def __init__(self, metrics: WorkerMetrics, max_workers: int | None = None) -> None:
        super().__init__(
            max_workers=max_workers or os.cpu_count() or 2, thread_name_prefix="fedcrypto"
        )
        self._recorder = CryptoRecorder(metrics)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        counted = kernel_values(kernel_name(fn), tuple(args))
        if counted is None:
            return super().submit(fn, *args, **kwargs)
        return super().submit(partial(self._recorder.timed, counted, fn, *args, **kwargs))

    def run_here(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a kernel call in the calling thread, recorded as a job like a submitted one
        (fedcrypto keeps a batch of one chunk in the caller's thread)."""
        return self._recorder.run_here(fn, *args, **kwargs)

    def observe(self, op: str, values: int, seconds: float) -> None:
        """Record crypto work done outside this pool's kernel calls (a component's prefetch
        threads making obfuscators) as one job of `op`."""
        self._recorder.observe(op, values, seconds)


class MeteredBusExecutor(BusExecutor):
    """The crypto job pool as components' executor, recording what runs in this process: the
    chunks fedcrypto keeps in the component's thread and the prefetch threads' obfuscators
    (jobs sent to the replicas are recorded by the replica that runs them)."""

    def __init__(self, *args: Any, metrics: WorkerMetrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorder = CryptoRecorder(metrics)

    def run_here(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._recorder.run_here(fn, *args, **kwargs)

    def observe(self, op: str, values: int, seconds: float) -> None:
        self._recorder.observe(op, values, seconds)


class MeteredCryptoReplica(CryptoReplica):
    """A CryptoReplica that records each crypto.job it serves."""

    def __init__(self, *args: Any, metrics: WorkerMetrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorder = CryptoRecorder(metrics)

    def handle_job(self, envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        started = time.perf_counter()
        super().handle_job(envelope, payload, tx)  # raises Reject for a refused job: not counted
        seconds = time.perf_counter() - started
        if not isinstance(payload, CryptoJob):
            return
        try:
            # Decoded a second time to count its values: cheap next to the kernel (arrays are
            # one buffer each, and fixed-base tables come from the cache the job just filled).
            args = decode(payload.args, self.tables.resolve)
        except CodecError:
            return
        counted = kernel_values(payload.function, args if isinstance(args, tuple) else ())
        if counted is not None:
            self._recorder.observe(counted[0], counted[1], seconds)


def replica_id(settings: WorkerSettings) -> str:
    """A replica's id in crypto.result answers: party, process and a random suffix."""
    return f"{settings.party_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def make_replica(
    bus: Bus, settings: WorkerSettings, metrics: WorkerMetrics | None = None
) -> CryptoReplica | None:
    """The crypto replica this worker runs, or None when it serves no crypto jobs."""
    if not (settings.crypto_serve or settings.crypto_only):
        return None
    make: Callable[..., CryptoReplica] = (
        CryptoReplica if metrics is None else partial(MeteredCryptoReplica, metrics=metrics)
    )
    return make(
        bus,
        settings.party_id,
        topic=settings.crypto_topic,
        replica_id=replica_id(settings),
        max_deliveries=settings.max_deliveries,
        max_envelope_bytes=settings.max_envelope_bytes,
    )


def make_executor(
    bus: Bus, settings: WorkerSettings, metrics: WorkerMetrics | None = None
) -> Executor:
    """What components pass to fedcrypto: the crypto job pool, or the local thread pool (the
    worker's own, metered one when `metrics` is given)."""
    if settings.crypto_replicas == 0:
        return MeteredThreadPool(metrics) if metrics is not None else local_executor()
    make: Callable[..., BusExecutor] = (
        BusExecutor if metrics is None else partial(MeteredBusExecutor, metrics=metrics)
    )
    return make(
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

    def __init__(self, settings: WorkerSettings, metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.bus: Bus = connect(settings.bus_url.get_secret_value())
        replica = make_replica(self.bus, settings, metrics)
        assert replica is not None
        self.replica = replica

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "party_id": self.settings.party_id, "crypto_only": True}

    def start(self) -> None:
        self.replica.start()

    def stop(self) -> None:
        self.replica.stop()
        self.bus.close()
