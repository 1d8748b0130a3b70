"""HeParty: one party's side of a two-party (or guest + hosts) Paillier component.

Each party has its OWN key pair (no third party holds a key). What the kit does for it:
  secrets     the private key and a mask seed are a sealed per-task secret (ctx.secret), made
              and checkpointed before anything is sent: a restarted party presents the same
              key, since its peer keeps encrypting under the public key it already has and
              the pending ciphertexts were made with it;
  key exchange  `exchange_keys` sends our public key (with the component's meta, e.g. a
              feature count) to every peer and checks theirs (length, same limbs as ours);
  encryption  under our key with obfuscators precomputed on low-priority background threads
              (`start_prefetch` / `prefetch`), else on the spot; under a peer's key plainly;
              with `idle_only`, the precomputation runs only while the party waits for a peer
              (`waiting`), so it never takes a core from the party's own protocol work;
  masked decryption  `masked` ([[m + R]] to send to the key holder), `decrypt_for_peer` (the
              key holder's side: residues back, and how many fell outside the masked range
              reported to the party's audit), `unmask` (m from them); fedflow.kit.masking;
  checks      every received ciphertext vector is in (0, n^2) and of the expected length.
  metrics     none of its own: an executor that records crypto work (the worker's metered pool,
              fedworker.crypto) sees every kernel call through fedcrypto; the prefetch threads'
              obfuscators are reported to its `observe` (`ObservedPrefetch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import numpy as np
from fedcrypto import EncryptedVector, ObfuscatorPool, PrivateKey, PublicKey, generate_keypair
from fedcrypto.paillier.limbs import to_mpz
from fedschemas import FederationData
from numpy.typing import NDArray

from fedflow.kit import decrypt_check, masking, payloads
from fedflow.statecodec import decode_state, encode_state

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

Floats = NDArray[np.float64]
T = TypeVar("T")

PREFETCH_ITERATIONS: Final = 2
"""Obfuscators are asked for this many iterations ahead. Two, not one: the background threads
run only on idle cores, and what an idle stretch computes early is not computed later on the
critical path."""
OBFUSCATOR_WINDOW: Final = 10
"""Fixed-base window of our key's DJN tables (mod p^2 and q^2): about 16% fewer products per
obfuscator than the default 8 (measured 66 against 79 us at 2048 bits), for 52 MiB of tables
instead of 16 MiB and 0.4 s instead of 0.1 s to build them once per run."""

LegacySecrets = Callable[[Mapping[str, Any]], bytes | None]


def open_secrets(
    ctx: ComponentContext,
    purpose: str,
    *,
    key_bits: int,
    insecure_short_keys: bool = False,
    legacy: LegacySecrets | None = None,
) -> tuple[PrivateKey, bytes]:
    """This task's Paillier private key and mask seed (ctx.secret: the checkpointed ones, or a
    fresh pair sealed into a checkpoint before this returns)."""

    def fresh() -> bytes:
        _, private_key = generate_keypair(key_bits, insecure_allow_short=insecure_short_keys)
        return encode_state({"private_key": private_key.to_bytes(), "mask_seed": os.urandom(32)})

    secrets = decode_state(ctx.secret(purpose, fresh, legacy=legacy))
    private_key = PrivateKey.from_bytes(
        bytes(secrets["private_key"]), insecure_allow_short=insecure_short_keys
    )
    return private_key, bytes(secrets["mask_seed"])


def encode_secrets(private_key_bytes: bytes, mask_seed: bytes) -> bytes:
    """The bytes `open_secrets` keeps sealed (for a legacy reader of older checkpoints)."""
    return encode_state({"private_key": private_key_bytes, "mask_seed": mask_seed})


class ObservedPrefetch(Executor):
    """The prefetch threads, each job timed and reported to `observe(op, values, seconds)` as
    `obfuscate`: an ObfuscatorPool's background job makes as many obfuscators as its first
    argument says (ObfuscatorPool.prefetch)."""

    def __init__(self, inner: Executor, observe: Callable[[str, int, float], None]) -> None:
        self._inner = inner
        self._observe = observe

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        count = args[0] if args and isinstance(args[0], int) else 0

        def timed() -> T:
            started = time.perf_counter()
            result = fn(*args, **kwargs)
            self._observe("obfuscate", count, time.perf_counter() - started)
            return result

        return self._inner.submit(timed)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait, cancel_futures=cancel_futures)


class IdleGate:
    """Open while the party waits for a peer (`waiting`, nestable), closed while it works;
    `stop` opens it for good and tells waiting jobs to skip their work."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting = 0
        self._stopped = False

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._waiting -= 1

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def wait_idle(self) -> bool:
        """Block until the party waits (True) or the gate is stopped (False: skip the job)."""
        with self._cond:
            self._cond.wait_for(lambda: self._waiting > 0 or self._stopped)
            return not self._stopped


class GatedPrefetch(Executor):
    """Background jobs that start only while `gate` is open: each waits for the party to wait
    for a peer, and returns at once without working once the gate is stopped (demand met or
    the task ending). A job that has started runs to its end (PREFETCH_CHUNK obfuscators: tens
    of milliseconds), so the party's own work waits at most that long for a core. The
    ObfuscatorPool counts a skipped job as done with nothing added."""

    def __init__(self, inner: Executor, gate: IdleGate) -> None:
        self._inner = inner
        self._gate = gate

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        gate = self._gate

        def gated() -> T:
            if not gate.wait_idle():
                return None  # type: ignore[return-value]  # the pool's jobs return None
            return fn(*args, **kwargs)

        return self._inner.submit(gated)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._gate.stop()
        self._inner.shutdown(wait=wait, cancel_futures=cancel_futures)


@dataclass
class HeParty:
    """This party's keys, its peers' public keys, and the executors its crypto runs on."""

    ctx: ComponentContext
    private_key: PrivateKey
    mask_seed: bytes
    peer_keys: dict[str, PublicKey] = field(default_factory=dict)
    executor: Executor | None = None
    """Where fedcrypto runs its chunks (fedflow.kit.threads.crypto_threads)."""
    pool: ObfuscatorPool | None = None
    """Obfuscators for encryptions under our own key, precomputed in the background."""
    background: Executor | None = None
    prefetch_count: int = 0
    """How many encryptions under our own key one iteration makes."""
    gate: IdleGate | None = None
    """With idle-only precomputation: open while the party waits for a peer (`waiting`)."""

    def __post_init__(self) -> None:
        self.private_key.precompute(OBFUSCATOR_WINDOW)

    @property
    def name(self) -> str:
        return self.ctx.component_type

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key

    # -- keys ---------------------------------------------------------------------------------

    def exchange_keys(
        self,
        peers: list[str],
        *,
        min_bits: int,
        insecure_short_keys: bool = False,
        **meta: int,
    ) -> dict[str, dict[str, Any]]:
        """Send our public key (with `meta`) to every peer, then take theirs; returns each
        peer's meta. Binds the protocol dims c (ciphertext limbs) and p (plaintext limbs)."""
        public_key = self.public_key
        self.ctx.federation.bind_dims(c=public_key.limbs, p=public_key.plain_limbs)
        for peer in peers:
            self.ctx.federation.send(
                payloads.key_payload(public_key, **meta), to=peer, tag="public_key"
            )
        metas: dict[str, dict[str, Any]] = {}
        for peer in peers:
            got = self.ctx.federation.recv(frm=peer, tag="public_key")
            if got.blob is None:
                raise ValueError(f"{self.name}: the public key message of {peer} is empty")
            key = PublicKey.from_bytes(got.blob, insecure_allow_short=insecure_short_keys)
            if key.n_length < min_bits and not insecure_short_keys:
                raise ValueError(f"{self.name}: the key of {peer} has only {key.n_length} bits")
            if key.limbs != public_key.limbs:
                raise ValueError(f"{self.name}: every party must use keys of the same length")
            self.peer_keys[peer], metas[peer] = key, dict(got.meta)
        return metas

    def peer_keys_state(self) -> dict[str, bytes]:
        return {p: k.to_bytes() for p, k in self.peer_keys.items()}

    def restore_peer_keys(self, saved: Mapping[str, Any], insecure_short_keys: bool) -> None:
        self.peer_keys = {
            str(p): PublicKey.from_bytes(bytes(k), insecure_allow_short=insecure_short_keys)
            for p, k in saved.items()
        }

    # -- encryption ---------------------------------------------------------------------------

    def start_prefetch(
        self,
        background: Executor | None,
        per_iteration: int,
        iterations_left: int,
        *,
        idle_only: bool = False,
    ) -> None:
        """Precompute obfuscators for our own key on `background` (None: never); `prefetch`
        tops the pool up after every iteration's encryption. `idle_only`: the background jobs
        run only inside `waiting()` (the component wraps its waits for peers in it), and none
        is left running once `prefetch` learns that no iteration is left."""
        if background is None or per_iteration <= 0:
            return
        if idle_only:
            self.gate = IdleGate()
            background = GatedPrefetch(background, self.gate)
        observe = getattr(self.executor, "observe", None)
        if observe is not None:
            # The executor records crypto work (the worker's metered pool): what the prefetch
            # threads compute is counted too, though it never passes through that executor.
            background = ObservedPrefetch(background, observe)
        self.pool = ObfuscatorPool(self.private_key, refill=True, executor=self.executor)
        self.background, self.prefetch_count = background, per_iteration
        self.prefetch(iterations_left)

    def prefetch(self, iterations_left: int) -> None:
        """Ask for the obfuscators of the next PREFETCH_ITERATIONS iterations (no more than are
        left), computed while we wait for the peer."""
        if self.pool is not None and self.background is not None:
            ahead = min(PREFETCH_ITERATIONS, max(0, iterations_left))
            if ahead == 0 and self.gate is not None:
                self.gate.stop()  # demand met: queued jobs skip their work
                return
            self.pool.prefetch(self.prefetch_count * ahead, self.background)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Wrap a wait for a peer: idle-only precomputation may run meanwhile."""
        if self.gate is None:
            yield
            return
        with self.gate.waiting():
            yield

    def close(self) -> None:
        if self.gate is not None:
            self.gate.stop()
        if self.pool is not None:
            self.pool.close()

    def encrypt(
        self, values: Floats, *, key: PublicKey | None = None, precision: float | None = None
    ) -> EncryptedVector:
        """Encrypt under our key (CRT; obfuscators from the pool, each used once, when
        precomputed) or under `key`. A fixed `precision` fixes the exponent, so that vectors
        from several parties add without re-scaling."""
        if key is None:
            return self.private_key.encrypt(
                values, precision=precision, executor=self.executor, pool=self.pool
            )
        return key.encrypt(values, precision=precision, executor=self.executor)

    def ciphertexts(
        self, payload: FederationData, key: PublicKey, what: str, rows: int | None = None
    ) -> EncryptedVector:
        """A received ciphertext vector, checked (fedflow.kit.payloads.read_ciphertexts)."""
        return payloads.read_ciphertexts(payload, key, f"{self.name}: {what}", self.executor, rows)

    def recv_ciphertexts(
        self, tag: str, iteration: int, frm: str, key: PublicKey, rows: int | None = None
    ) -> EncryptedVector:
        got = self.ctx.federation.recv(frm=frm, tag=tag, iteration=iteration)
        return self.ciphertexts(got, key, f"{tag} from {frm}", rows)

    # -- masked decryption --------------------------------------------------------------------

    def masked(
        self, vec: EncryptedVector, tag: str, iteration: int
    ) -> tuple[EncryptedVector, dict[str, Any]]:
        """[[m + R]] for the key holder to decrypt, and what `unmask` needs for its answer."""
        bits = masking.mask_bits(vec, self.name)
        masks = masking.mask_ints(self.mask_seed, tag, iteration, vec.size, bits)
        info = {"exponent": vec.exponent, "bits": bits, "count": vec.size}
        return masking.add_mask(vec, masks, self.executor), info

    def decrypt_for_peer(
        self, tag: str, iteration: int, answer: str, peer: str, rows: int | None = None
    ) -> None:
        """The key holder's side: decrypt the peer's masked ciphertexts `tag` under our key
        (authorized by the protocol's decrypt rule) and send the residues back as `answer`."""
        vec = self.recv_ciphertexts(tag, iteration, peer, self.public_key, rows)
        self.ctx.federation.authorize_decrypt(tag, iteration, frm=peer)
        residues = self.private_key.decrypt_residues(vec.data, executor=self.executor)
        self.report_masked(residues, tag, iteration, peer)
        self.ctx.federation.send(
            FederationData(kind="masked_vector", array=np.ascontiguousarray(residues)),
            to=peer,
            tag=answer,
            iteration=iteration,
        )

    def report_masked(
        self, residues: NDArray[np.uint64], tag: str, iteration: int, peer: str
    ) -> None:
        """Count the decrypted masked plaintexts outside their agreed range and tell this
        party's audit (report.decrypt_check; counts only). An honest m + R is in [0, max_int]
        (masking.mask_bits makes 2^bits + |m| fit under max_int = n/3 - 1; it is negative only
        when R < |m|, with probability 2^-MASK_BITS): a residue above max_int is a ciphertext
        that was not a masked value of the agreed form, e.g. a peer asking to decrypt signed
        values it holds under our key (negative ones decrypt near n) or forged ciphertexts.
        Masked values are never decoded to floats here (only the peer can unmask them), so
        NaN and infinity are counted where they are: `unmask`."""
        top = self.public_key.max_int
        values = to_mpz(np.ascontiguousarray(residues, dtype="<u8"))
        outside = sum(1 for v in values if v > top)
        decrypt_check.report_check(
            self.ctx,
            decrypt_check.PlaintextCounts(count=len(values), out_of_bound=outside),
            peer=peer,
            tag=tag,
            iteration=iteration,
            bound=f"masked plaintext in [0, n/3) of a {self.public_key.n_length}-bit key",
        )

    def unmask(
        self, info: Mapping[str, Any], answer: str, iteration: int, peer: str, tag: str
    ) -> Floats:
        """Our values m from the peer's decryption (message `answer`) of [[m + R]] sent as
        `tag`: residues of m + R modulo the peer's n. What the answer decodes to is checked
        and reported to this party's audit before it is used: an honest |m| is below
        2^(bits - MASK_BITS) (masking.unmask_counted), so a larger one, or one past float64's
        range (infinite: refused here too), is an answer the key holder made up."""
        payload = self.ctx.federation.recv(frm=peer, tag=answer, iteration=iteration)
        if payload.array is None:
            raise ValueError(f"{self.name}: the answer to {tag} carries no values")
        bits = int(info["bits"])
        masks = masking.mask_ints(self.mask_seed, tag, iteration, int(info["count"]), bits)
        n = int(self.peer_keys[peer].n)
        limit_bits = bits - masking.MASK_BITS
        values, outside = masking.unmask_counted(
            payload.array, masks, int(info["exponent"]), n, 1 << limit_bits, self.name
        )
        counts = decrypt_check.count_floats(values, -np.inf, np.inf)
        counts = dataclasses.replace(counts, out_of_bound=outside)
        decrypt_check.report_check(
            self.ctx,
            counts,
            peer=peer,
            tag=answer,
            iteration=iteration,
            bound=f"unmasked mantissa |m| < 2^{limit_bits} (the masked vector's bound)",
        )
        if counts.infinite:
            raise OverflowError(
                f"{self.name}: {counts.infinite} value(s) of {answer} from {peer} overflow float64"
            )
        return values
