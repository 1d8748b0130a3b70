"""The crypto job pool: fedcrypto's batch kernels run by any number of worker replicas.

fedcrypto's batch operations (encrypt, decrypt, X.T @ [[d]], ...) cut their work into chunks
and map a module-level kernel over them with `executor.submit`, gathering results in
submission order. `BusExecutor` is a `concurrent.futures.Executor` whose `submit` publishes the
chunk as a `crypto.job` message on the party's LOCAL topic (`svc.crypto`, never relayed to
another site) and resolves the future from the `crypto.result` a replica sends back to the
executor's own reply topic. `CryptoReplica` is the consuming side: it runs in each worker
replica that serves crypto jobs (prefetch 1, so idle replicas take the next chunk and a slow
one does not hoard them), executes the named kernel and answers.

Rules:
- Only the kernels in `KERNELS` (fedcrypto.paillier.kernels, by "module:qualname") may be named.
  `submit` refuses any other function; a replica refuses (answers "refused" and dead-letters)
  a job naming one. Arguments and results travel in `fedflow.cryptocodec` (msgpack, no pickle).
- No crypto job is chunked by the bus: a call too big for one frame is cut into row
  slices first (fedflow.cryptosplit), since prefetch-1 replicas could never reassemble one.
- At-least-once: a replica acks a job only after it published the answer, so a replica killed
  mid-job leaves the job unacked and the broker redelivers it to another replica. Kernels are
  pure, so running a chunk twice is harmless; the executor keeps the first answer for a chunk
  and ignores any later one.
- Secrets: jobs of a private key (CRT decryption, CRT obfuscators) carry p and q. They stay
  inside the party because svc.crypto and the reply topics are local topics that the gateway
  does not relay; only the key holder's own replicas ever see them.

`local_executor()` is the default a ComponentContext carries when no pool is configured: one
shared ThreadPoolExecutor (fedcrypto's C extension releases the GIL, so threads use every core
with nothing copied).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, ParamSpec, TypeVar

import structlog
from fedbus import Bus, Delivery, Reject, Unroutable
from fedbus.inbox import Effect, Inbox, InboxTransaction
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher
from fedcrypto.paillier import kernels
from fedcrypto.paillier.errors import CiphertextError
from fedschemas import (
    MAX_ENVELOPE_BYTES,
    Envelope,
    MalformedMessage,
    PartyRef,
    Payload,
    decode_envelope,
    decode_payload,
    new_envelope,
    topics,
)
from fedschemas.payloads import CryptoErrorKind, CryptoJob, CryptoResult

from fedflow.cryptocodec import (
    ARGS_FORMAT,
    RESULT_FORMAT,
    CodecError,
    TableCache,
    TableDigests,
    decode,
    encode,
)
from fedflow.cryptosplit import combiner, split

log = structlog.get_logger("fedflow.cryptopool")

P = ParamSpec("P")
T = TypeVar("T")

CRYPTO_TOPIC: Final = topics.CRYPTO
"""The party-local queue of crypto jobs (shared by every replica that serves them)."""

_KERNEL_NAMES: Final = (
    "k_obfuscators",
    "k_encrypt",
    "k_encrypt_with",
    "k_rerandomize",
    "k_mul",
    "k_add_plain",
    "k_invert",
    "k_pow",
    "k_prod_segments",
    "k_multiexp",
    "k_decrypt",
    "k_validate",
)


def kernel_name(fn: Callable[..., Any]) -> str:
    """The wire name of a function: "module:qualname"."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}"


KERNELS: Final = MappingProxyType(
    {
        kernel_name(fn): fn
        for fn in (getattr(kernels, name, None) for name in _KERNEL_NAMES)
        if callable(fn)
    }
)
"""The whitelist: the only functions a crypto job may name, by "module:qualname"."""


class NotWhitelisted(ValueError):
    """A function that the crypto job pool does not run."""


class CryptoJobFailed(RuntimeError):
    """A replica could not run a chunk (its reason is the message)."""


class CryptoJobTimeout(TimeoutError):
    """No replica answered a chunk within the executor's timeout."""


_local_lock = threading.Lock()
_local: ThreadPoolExecutor | None = None


def local_executor() -> ThreadPoolExecutor:
    """The process's shared thread pool for crypto chunks (created on first use, one per core)."""
    global _local
    with _local_lock:
        if _local is None:
            _local = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 2, thread_name_prefix="fedcrypto"
            )
        return _local


def _error_kind(exc: BaseException) -> CryptoErrorKind:
    if isinstance(exc, CiphertextError):
        return "ciphertext"
    if isinstance(exc, ValueError):
        return "value"
    return "failed"


def _exception(kind: CryptoErrorKind | None, message: str) -> BaseException:
    if kind == "ciphertext":
        return CiphertextError(message)
    if kind == "value":
        return ValueError(message)
    if kind == "refused":
        return NotWhitelisted(message)
    return CryptoJobFailed(message)


def run_job(job: CryptoJob, tables: TableCache, *, replica: str | None = None) -> CryptoResult:
    """Run one crypto job and say how it went (never raises for a bad job)."""
    fn = KERNELS.get(job.function)
    if fn is None:
        return CryptoResult(
            job_id=job.job_id,
            ok=False,
            error=f"{job.function!r} is not a whitelisted crypto kernel",
            error_kind="refused",
            replica=replica,
        )
    try:
        if job.args_format != ARGS_FORMAT:
            raise CodecError(f"unknown args format {job.args_format!r}")
        args = decode(job.args, tables.resolve)
        if not isinstance(args, tuple):
            raise CodecError("args must be a tuple")
    except CodecError as exc:
        return CryptoResult(
            job_id=job.job_id, ok=False, error=str(exc), error_kind="invalid", replica=replica
        )
    try:
        out = fn(*args)
        body = encode(out)
    except Exception as exc:
        return CryptoResult(
            job_id=job.job_id,
            ok=False,
            error=f"{type(exc).__name__}: {exc}"[:4000],
            error_kind=_error_kind(exc),
            replica=replica,
        )
    return CryptoResult(
        job_id=job.job_id, ok=True, result=body, result_format=RESULT_FORMAT, replica=replica
    )


class _NoDedupe(Inbox):
    """Crypto jobs are pure: a redelivered one is simply run again (no done markers kept)."""

    def process(self, message_id: str, effect: Effect) -> bool:
        effect(InboxTransaction(message_id=message_id, session=None))
        return True

    def is_done(self, message_id: str) -> bool:
        return False


def _local_ref(party_id: str) -> PartyRef:
    return PartyRef(party_id=party_id, role="local")


class CryptoReplica:
    """Serves `crypto.job` from the party's crypto topic: one chunk at a time (prefetch 1)."""

    def __init__(
        self,
        bus: Bus,
        party_id: str,
        *,
        topic: str = CRYPTO_TOPIC,
        replica_id: str | None = None,
        tables: TableCache | None = None,
        max_deliveries: int = 5,
        max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
    ) -> None:
        self.bus = bus
        self.party_id = party_id
        self.topic = topic
        self.replica_id = replica_id or uuid.uuid4().hex[:16]
        self.tables = tables or TableCache()
        self.jobs_done = 0
        self._publisher = EnvelopePublisher(
            bus, _local_ref(party_id), max_envelope_bytes=max_envelope_bytes
        )
        self._consumer = EnvelopeConsumer(
            bus,
            topic,
            {"crypto.job": self.handle_job},
            _NoDedupe(),
            max_envelope_bytes=max_envelope_bytes,
            prefetch=1,
            max_deliveries=max_deliveries,
        )

    def start(self) -> None:
        self._consumer.start()
        log.info("crypto_replica_started", topic=self.topic, replica=self.replica_id)

    def stop(self) -> None:
        self._consumer.stop()

    def handle_job(self, envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        """crypto.job: run the kernel, answer on the job's reply topic, then (return) ack."""
        if not isinstance(payload, CryptoJob):
            raise Reject(f"crypto.job handler got {type(payload).__name__}")
        # Local topic, local jobs: a job from another party (it cannot get here through the
        # gateway) is refused all the same.
        if envelope.source.party_id != self.party_id:
            raise Reject(f"crypto.job from party {envelope.source.party_id}")
        started = time.perf_counter()
        result = run_job(payload, self.tables, replica=self.replica_id)
        answer = new_envelope(
            result,
            job_id=envelope.job_id,
            component="cryptopool",
            task_id=envelope.task_id,
            attempt=0,
            source=_local_ref(self.party_id),
            destination=envelope.source,
            tag=f"crypto.result.{payload.job_id}",
            iteration=-1,
            seq=0,
            created_at=datetime.now(UTC),
        )
        try:
            self._publisher.send(payload.reply_topic, answer)
        except Unroutable:
            # The requester is gone (its reply topic was deleted): nobody wants the answer.
            log.info("crypto_result_unroutable", chunk=payload.job_id)
        self.jobs_done += 1
        log.info(
            "crypto_job_done",
            chunk=payload.job_id,
            function=payload.function,
            ok=result.ok,
            error_kind=result.error_kind,
            replica=self.replica_id,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if result.error_kind in ("refused", "invalid"):
            # Answered so the requester fails fast, and dead-lettered so operators see it.
            raise Reject(result.error or "refused")


def _joined(parts: list[Future[Any]], combine: Callable[[Sequence[Any]], Any]) -> Future[Any]:
    """One future for the row slices of a call: the combined result, or the first error."""
    out: Future[Any] = Future()
    out.set_running_or_notify_cancel()
    left = [len(parts)]
    lock = threading.Lock()

    def one_done(_: Future[Any]) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        for part in parts:
            exc = part.exception()
            if exc is not None:
                out.set_exception(exc)
                return
        try:
            out.set_result(combine([part.result() for part in parts]))
        except Exception as exc:
            out.set_exception(exc)

    for part in parts:
        part.add_done_callback(one_done)
    return out


@dataclass
class _Pending:
    future: Future[Any]
    deadline: float | None


class BusExecutor(Executor):
    """An Executor whose chunks run on the party's crypto replicas, over the bus.

    `replicas` (how many replicas serve `topic`) and `chunks_per_replica` tell fedcrypto how
    finely to cut a batch: it reads `_max_workers` (= replicas * chunks_per_replica) and makes
    about two chunks per worker for element-wise kernels, one per worker for X.T @ [[d]].
    Several chunks per replica keep every replica busy while answers travel, and bound what a
    killed replica's redelivered chunk costs. `timeout_s`: a chunk nobody answered within that
    many seconds fails with CryptoJobTimeout (None: wait; the broker redelivers the chunks of a
    dead replica, so they are not lost).
    """

    def __init__(
        self,
        bus: Bus,
        party_id: str,
        *,
        topic: str = CRYPTO_TOPIC,
        replicas: int = 1,
        chunks_per_replica: int = 2,
        timeout_s: float | None = None,
        job_id: str = "",
        max_job_bytes: int | None = None,
        max_envelope_bytes: int = MAX_ENVELOPE_BYTES,
    ) -> None:
        if replicas < 1 or chunks_per_replica < 1:
            raise ValueError("replicas and chunks_per_replica must be positive")
        self.bus = bus
        self.party_id = party_id
        self.topic = topic
        self._max_workers = replicas * chunks_per_replica
        # Room for a job's args (and its result) in one bus frame, leaving space for the
        # envelope and headers.
        self._budget = max_job_bytes or (bus.capabilities.max_frame_bytes * 3 // 4 - 16_384)
        self._timeout_s = timeout_s
        self._job_id = job_id
        self._max_envelope_bytes = max_envelope_bytes
        self.reply_topic = f"{topic}.reply.{uuid.uuid4().hex}"
        self._publisher = EnvelopePublisher(
            bus, _local_ref(party_id), max_envelope_bytes=max_envelope_bytes
        )
        self._tables = TableDigests()
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.answered_by: Counter[str] = Counter()
        """Chunks answered per replica id (what shows the work was shared)."""
        self.duplicates = 0
        bus.declare(topic)
        bus.declare(reply_topic := self.reply_topic)
        self._subscription = bus.subscribe(reply_topic, self._on_result, prefetch=256)
        self._reaper: threading.Thread | None = None
        self._reaper_stop = threading.Event()
        if timeout_s is not None:
            self._reaper = threading.Thread(
                target=self._reap, name="cryptopool-reaper", daemon=True
            )
            self._reaper.start()

    # -- submitting ----------------------------------------------------------------------------

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        name = kernel_name(fn)
        if KERNELS.get(name) is not fn:
            raise NotWhitelisted(f"{name} is not a whitelisted crypto kernel")
        if kwargs:
            raise TypeError("crypto jobs take positional arguments only")
        call = tuple(args)
        # No crypto message may need the bus's chunking (see fedflow.cryptosplit): cut big
        # calls into row slices, each its own crypto.job, and join their results.
        pieces = split(name, call, self._budget)
        if pieces is None:
            log.warning("crypto_job_too_large_ran_locally", function=name)
            return local_executor().submit(fn, *args)
        if len(pieces) == 1:
            return self._publish(name, fn, call)
        log.debug("crypto_job_split", function=name, pieces=len(pieces))
        return _joined([self._publish(name, fn, p) for p in pieces], combiner(name, call))

    def _publish(self, name: str, fn: Callable[..., Any], call: tuple[Any, ...]) -> Future[Any]:
        body = encode(call, self._tables)
        if len(body) > self._budget:
            # The estimate in cryptosplit was too low for this call: never publish a job that
            # the bus would chunk; run it here instead.
            log.warning("crypto_job_too_large_ran_locally", function=name, bytes=len(body))
            return local_executor().submit(fn, *call)
        chunk = uuid.uuid4().hex
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()  # queued at the broker: it cannot be withdrawn
        deadline = None if self._timeout_s is None else time.monotonic() + self._timeout_s
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a BusExecutor that was shut down")
            self._pending[chunk] = _Pending(future, deadline)
        envelope = new_envelope(
            CryptoJob(
                job_id=chunk,
                function=name,
                args=body,
                args_format=ARGS_FORMAT,
                reply_topic=self.reply_topic,
            ),
            job_id=self._job_id,
            component="cryptopool",
            task_id="",
            attempt=0,
            source=_local_ref(self.party_id),
            destination=_local_ref(self.party_id),
            tag=f"crypto.job.{chunk}",
            iteration=-1,
            seq=0,
            created_at=datetime.now(UTC),
        )
        try:
            self._publisher.send(self.topic, envelope)
        except BaseException:
            with self._lock:
                self._pending.pop(chunk, None)
            raise
        return future

    # -- answers -------------------------------------------------------------------------------

    def _on_result(self, delivery: Delivery) -> None:
        try:
            envelope = decode_envelope(delivery.body, max_bytes=self._max_envelope_bytes)
            result = decode_payload(envelope, CryptoResult)
        except MalformedMessage as exc:
            raise Reject(exc.reason) from None
        if envelope.source.party_id != self.party_id:
            raise Reject(f"crypto.result from party {envelope.source.party_id}")
        with self._lock:
            pending = self._pending.pop(result.job_id, None)
            if pending is None:
                # A second answer (redelivered job) or one for a chunk that timed out.
                self.duplicates += 1
        if pending is None:
            log.debug("crypto_result_ignored", chunk=result.job_id)
            return
        if result.replica is not None:
            with self._lock:
                self.answered_by[result.replica] += 1
        if not result.ok:
            pending.future.set_exception(_exception(result.error_kind, result.error or "failed"))
            return
        try:
            if result.result_format != RESULT_FORMAT or result.result is None:
                raise CodecError(f"unknown result format {result.result_format!r}")
            value = decode(result.result)
        except CodecError as exc:
            pending.future.set_exception(CryptoJobFailed(f"undecodable result: {exc}"))
            return
        pending.future.set_result(value)

    def _reap(self) -> None:
        assert self._timeout_s is not None
        period = min(1.0, max(0.05, self._timeout_s / 4))
        while not self._reaper_stop.wait(period):
            now = time.monotonic()
            with self._lock:
                expired = [
                    (chunk, p)
                    for chunk, p in self._pending.items()
                    if p.deadline is not None and p.deadline <= now
                ]
                for chunk, _ in expired:
                    del self._pending[chunk]
            for chunk, p in expired:
                log.warning("crypto_job_timed_out", chunk=chunk, timeout_s=self._timeout_s)
                p.future.set_exception(
                    CryptoJobTimeout(f"no replica answered within {self._timeout_s} s")
                )

    # -- lifecycle -----------------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop; with `wait` (and not `cancel_futures`) first wait for the chunks in flight.

        Chunks still unanswered then fail with CryptoJobFailed; the reply topic is deleted.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            in_flight = [p.future for p in self._pending.values()]
        if wait and not cancel_futures:
            futures_wait(in_flight)
        with self._lock:
            left = list(self._pending.values())
            self._pending.clear()
        self._reaper_stop.set()
        self._subscription.cancel()
        for p in left:
            p.future.set_exception(CryptoJobFailed("the executor was shut down"))
        with contextlib.suppress(NotImplementedError):
            self.bus.delete(self.reply_topic)
