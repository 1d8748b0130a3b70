"""hetero_lr / hetero_lr_predict: vertical logistic regression, guest + host, under Paillier.

The guest holds the labels y in {0, 1} and features X_g (plus an intercept column); the host
holds other features X_h of the same rows (aligned by an upstream psi). Each party has its OWN
Paillier key pair; there is no third party. docs/hetero_lr.md states the protocol, what each
party learns per iteration and why the minimum batch size is what it is.

Training uses the Taylor approximation sigma(z) ~ 0.5 + z / 4 (z = u_g + u_h, u = X w), so the
residual is d = v + u_h / 4 with v = u_g / 4 + 0.5 - y (u_h: the sum over hosts). Per
mini-batch (the same rows at every party: the permutation of epoch e is drawn from (seed, e)),
iteration t:

  order 1  guest -> host   residual              [[v]]_G                 (b, c) ciphertexts
  order 1  host  -> guest  host_scores           [[u_h]]_H               (b, c)
  order 2  host  -> guest  host_gradient         [[X_h^T d + R_h]]_G     (k_h, c) k_h checked
  order 2  guest -> host   guest_gradient        [[A^T u_h + R_g]]_H     (k_g2, c)
           A = [X_g, y', u_g] (y' = 2y - 1): the guest's gradient term and two loss aggregates
  order 3  guest -> host   host_gradient_masked  X_h^T d + R_h           (k_h, p) residue limbs
  order 3  host  -> guest  guest_gradient_masked A^T u_h + R_g           (k_g2, p)
  order 3  host  -> guest  host_score_sq         sum_i u_h,i^2           () aggregate
  order 4  guest -> host   epoch_end             {"stop": bool}          (last batch of an epoch)

With several hosts, each host also sends the others [[u_h / 4]]_G (`peer_scores`, order 1) and
adds theirs to [[v]]_G, so its residual covers every host's scores; and sends the guest
[[sum over the others of u_h . u_h' / 4]]_G (`host_cross`, order 2), the cross term of the loss.
The guest runs the exchange above with each host under that host's key.

Prediction (hetero_lr_predict), once per host:

  host -> guest  host_partial_scores  u_h = X_h w_h per row   (m,) float64, kind partial_score

in plaintext: the guest learns the host's partial score of every row it scores (it could derive
it from the final scores it is meant to get, z - u_g); the host receives nothing.

Masks R are integers added to the fixed-point mantissas (not to floats): R is uniform over
[0, 2^(bits(bound) + 80)), so a masked value hides the mantissa statistically (2^-80) and the
owner recovers it exactly. Every ciphertext derived from the other party's ciphertexts is
re-randomised (`obfuscate`) before it goes back to that party.

Resume (docs/components.md): state = weights, the peer keys, the party's secrets (its Paillier
private key and mask seed) SEALED (fedflow.sealing: AES-GCM under a key derived from the
party's checkpoint key, which is not in the database), epoch loss so far, iteration. The same
key pair must come back on resume: the peer keeps encrypting under our public key and the
pending ciphertexts below were made with it, so a fresh key pair would not do. Masks come
from SHAKE-256(mask seed, tag, iteration), so a redone iteration re-sends the same plaintexts.
Ciphertexts carry fresh encryption randomness, so before a ciphertext is first sent it is
written into the checkpoint ("pending"), and a redone iteration re-sends those exact bytes (the
outbox refuses a different payload under the same id).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from fedcrypto import (
    EncryptedVector,
    ObfuscatorPool,
    PrivateKey,
    PublicKey,
    ShapeMismatchError,
    encrypted_dot,
    generate_keypair,
)
from fedcrypto.paillier.limbs import from_mpz, to_mpz
from fedschemas import FederationData
from numpy.typing import NDArray
from pydantic import Field

from fedflow.components.base import ComponentParams, ComponentType, InputSpec
from fedflow.protocol import NONE, DecryptRule, MessageRule, Protocol
from fedflow.statecodec import decode_state, encode_state
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

Floats = NDArray[np.float64]

MASK_BITS: Final = 80
"""Statistical hiding of a masked mantissa: the mask has this many bits more than the bound."""
INTERCEPT: Final = "intercept"
KEY_FORMAT: Final = "fedcrypto.paillier.public_key.v1"
SECRETS_PURPOSE: Final = "hetero_lr.secrets"
"""What the sealed secrets in a hetero_lr checkpoint are (binds the sealing key to it)."""
LOG2: Final = math.log(2.0)
MAX_HOSTS: Final = 16
PREFETCH_ITERATIONS: Final = 2
PREFETCH_NICE: Final = 19
"""CPU priority of the obfuscator threads (nice, Linux): the lowest, so they run on cores the
party's own work leaves idle. On a machine busy with other processes they get little CPU; the
pool then runs short and encryption computes the rest on the spot, as without them."""
OBFUSCATOR_WINDOW: Final = 10
"""Fixed-base window of our key's DJN tables (mod p^2 and q^2): about 16% fewer products per
obfuscator than the default 8 (measured 66 against 79 us at 2048 bits), for 52 MiB of tables
instead of 16 MiB and 0.4 s instead of 0.1 s to build them once per run."""
SHARED_PRECISION: Final = 2.0**-48
"""With several hosts: the fixed precision of [[v]] and of the hosts' [[u_h / 4]] under the
guest's key, so that a host adds them without re-scaling ciphertexts."""


def min_batch_size(k_guest: int, k_host: int) -> int:
    """The smallest batch allowed: with b <= k + 3 a party could solve its views for the
    other party's per-sample values (docs/hetero_lr.md); 4x that, and never below 64."""
    return max(64, 4 * (max(k_guest, k_host) + 3))


class HeteroLrParams(ComponentParams):
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=1024, ge=1)
    """Rows per mini-batch (the last batch of an epoch takes the remainder); at least
    min_batch_size(k_g, k_h), refused otherwise."""
    learning_rate: float = Field(default=0.15, gt=0.0)
    decay: float = Field(default=0.0, ge=0.0)
    """Learning rate at iteration t: learning_rate / sqrt(1 + decay * t)."""
    alpha: float = Field(default=0.01, ge=0.0)
    """L2 penalty (alpha / 2) * ||w||^2 (the intercept is not penalised)."""
    tol: float = Field(default=1e-4, ge=0.0)
    """Early stopping: stop when the epoch's Taylor loss improves by less than this."""
    early_stop: bool = True
    seed: int = Field(default=0, ge=0)
    """Seeds the batch order (both parties must use the same)."""
    reveal_host_scores: bool = False
    """Faster, less private mode: each host sends the guest its per-sample partial scores u_h
    in PLAINTEXT every iteration, so the guest uses the exact sigmoid and only the hosts'
    gradients go through Paillier (docs/hetero_lr.md). Off by default."""
    threads: int = Field(default=2, ge=0, le=64)
    """Threads for the Paillier batch work when the runtime provides no executor (the C
    kernels release the GIL); 0: the task's own thread only."""
    prefetch_threads: int = Field(default=2, ge=0, le=64)
    """Lowest-priority threads that precompute the next batches' obfuscators (the
    plaintext-free part of encryption) on cores the protocol leaves idle, e.g. while the party
    waits for its peer, so that encrypting a batch costs one product per value; what is not
    ready in time is computed on the spot. 0: no precomputation."""
    key_bits: int = Field(default=2048, ge=256, le=8192)
    insecure_short_keys: bool = False
    """Allow keys shorter than 2048 bits (tests only)."""


class HeteroLrPredictParams(ComponentParams):
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)


def _ct_rule(
    tag: str,
    sender: str,
    receiver: str,
    order: int,
    rows: str,
    what: str,
    *,
    decrypt: bool = True,
    per_iteration_decrypts: int = 1,
) -> MessageRule:
    return MessageRule(
        tag=tag,
        sender=sender,  # type: ignore[arg-type]
        receiver=receiver,  # type: ignore[arg-type]
        kinds=("ciphertext_vector",),
        per_iteration=True,
        order=order,
        shape=f"({rows}, c)",
        dtypes=("uint64",),
        decrypt=(
            DecryptRule(by=receiver, max_per_iteration=per_iteration_decrypts)  # type: ignore[arg-type]
            if decrypt
            else None
        ),
        description=what,
    )


def _masked_rule(tag: str, sender: str, receiver: str, rows: str, what: str) -> MessageRule:
    return MessageRule(
        tag=tag,
        sender=sender,  # type: ignore[arg-type]
        receiver=receiver,  # type: ignore[arg-type]
        kinds=("masked_vector",),
        per_iteration=True,
        order=3,
        shape=f"({rows}, p)",
        dtypes=("uint64",),
        description=what,
    )


HETERO_LR_PROTOCOL = Protocol(
    component_type="hetero_lr",
    description="vertical LR, Taylor sigmoid, two Paillier keys, integer masks, no arbiter",
    dims={
        "c": "64-bit limbs of one ciphertext (key bits / 32)",
        "p": "64-bit limbs of one plaintext residue (key bits / 64)",
        "k_g2": "the guest's feature count + 1 (intercept) + 2 (loss aggregates)",
    },
    messages=(
        MessageRule(
            tag="public_key",
            sender="guest",
            receiver="host",
            kinds=("public_key",),
            order=1,
            shape=NONE,
            blob_formats=(KEY_FORMAT,),
            description="the guest's Paillier public key",
        ),
        MessageRule(
            tag="public_key",
            sender="host",
            receiver="guest",
            kinds=("public_key",),
            order=1,
            shape=NONE,
            blob_formats=(KEY_FORMAT,),
            description="the host's Paillier public key; meta: its feature count",
        ),
        _ct_rule(
            "residual", "guest", "host", 1, "*", "[[u_g/4 + 0.5 - y]], guest key", decrypt=False
        ),
        _ct_rule("host_scores", "host", "guest", 1, "*", "[[u_h]], host key", decrypt=False),
        _ct_rule(
            "peer_scores",
            "host",
            "host",
            1,
            "*",
            "several hosts: [[u_h / 4]] under the guest key, to the other hosts",
            decrypt=False,
        ),
        # Rows: the sending host's feature count, checked against what it announced (a dim
        # name would bind one count for all hosts).
        _ct_rule(
            "host_gradient",
            "host",
            "guest",
            2,
            "*",
            "[[X_h^T d + R_h]], guest key",
            per_iteration_decrypts=MAX_HOSTS,  # one per host (the guard counts per tag)
        ),
        _ct_rule("guest_gradient", "guest", "host", 2, "k_g2", "[[A^T u_h + R_g]], host key"),
        _ct_rule(
            "host_cross",
            "host",
            "guest",
            2,
            "1",
            "several hosts: [[sum over other hosts h' of u_h . u_h' / 4]], guest key",
            per_iteration_decrypts=MAX_HOSTS,
        ),
        _masked_rule("host_gradient_masked", "guest", "host", "*", "X_h^T d + R_h"),
        _masked_rule("guest_gradient_masked", "host", "guest", "k_g2", "A^T u_h + R_g"),
        MessageRule(
            tag="host_scores_revealed",
            sender="host",
            receiver="guest",
            kinds=("partial_score",),
            per_iteration=True,
            order=1,
            shape="(*,)",
            dtypes=("float64",),
            description=(
                "reveal_host_scores mode only: u_h = X_h w_h for each row of the batch, in "
                "plaintext; the guest learns the host's partial score of every training row"
            ),
        ),
        MessageRule(
            tag="host_score_sq",
            sender="host",
            receiver="guest",
            kinds=("aggregate",),
            per_iteration=True,
            order=3,
            shape="()",
            dtypes=("float64",),
            description="sum of u_h^2 over the batch (for the Taylor loss)",
        ),
        MessageRule(
            tag="epoch_end",
            sender="guest",
            receiver="host",
            kinds=("plain_control",),
            per_iteration=True,
            order=4,
            shape=NONE,
            description="after an epoch's last batch: stop (early stopping) or go on",
        ),
    ),
)

HETERO_LR_PREDICT_PROTOCOL = Protocol(
    component_type="hetero_lr_predict",
    description=(
        "batch prediction, one message per host: the host's per-row partial scores u_h to the "
        "guest in plaintext. The guest learns u_h for every row (and outputs sigmoid(u_g + sum "
        "u_h)); the host learns nothing (it receives no message)"
    ),
    dims={"m": "rows to predict (the guest's row count; every host sends that many)"},
    messages=(
        MessageRule(
            tag="host_partial_scores",
            sender="host",
            receiver="guest",
            kinds=("partial_score",),
            order=1,
            shape="(m,)",
            dtypes=("float64",),
            description=(
                "u_h = X_h w_h for each row, in plaintext (per-row partial linear predictor of "
                "the host's features under its weights): REVEALED to the guest, which could "
                "compute it anyway from the scores it is meant to get"
            ),
        ),
    ),
)


# -- fixed-point masks ------------------------------------------------------------------------


def _mask_ints(seed: bytes, tag: str, iteration: int, count: int, bits: int) -> list[int]:
    """`count` integers uniform in [0, 2^bits), a deterministic function of (seed, tag, t)."""
    width = (bits + 7) // 8
    stream = hashlib.shake_256(
        seed + tag.encode() + iteration.to_bytes(8, "little", signed=True)
    ).digest(width * count)
    excess = width * 8 - bits
    return [
        int.from_bytes(stream[i * width : (i + 1) * width], "little") >> excess
        for i in range(count)
    ]


def _mask_bits(vec: EncryptedVector) -> int:
    bits = vec.bound.bit_length() + MASK_BITS
    if (1 << bits) + vec.bound > vec.public_key.max_int:
        raise OverflowError("hetero_lr: the key is too short for the masked values")
    return bits


def _add_mask(vec: EncryptedVector, masks: list[int], executor: Executor | None) -> EncryptedVector:
    """[[m + R]] (mantissas) re-randomised: safe to send to the key holder."""
    pk = vec.public_key
    plain = from_mpz(masks, pk.plain_limbs)
    raw = pk.encrypt_residues(plain, obfuscate=False)  # combined, then obfuscated below
    mask_vec = EncryptedVector(pk, raw, vec.exponent, vec.shape, bound=max(masks, default=0))
    return (vec + mask_vec).obfuscate(executor=executor)


def _unmask(residues: NDArray[np.uint64], masks: list[int], exponent: int, n: int) -> Floats:
    """The floats m * 16^exponent from residues of m + R mod n."""
    values = to_mpz(np.ascontiguousarray(residues, dtype="<u8"))
    if len(values) != len(masks):
        raise ValueError(f"hetero_lr: {len(values)} masked values for {len(masks)} masks")
    half = n // 2
    scale = Fraction(16) ** exponent
    out = np.empty(len(masks), dtype=np.float64)
    for i, (value, mask) in enumerate(zip(values, masks, strict=True)):
        m = (int(value) - mask) % n
        if m > half:
            m -= n
        out[i] = float(m * scale)
    return out


# -- messages ---------------------------------------------------------------------------------


def ciphertext_payload(vec: EncryptedVector) -> FederationData:
    """An encrypted vector as a (count, limbs) uint64 array; exponent and bound in meta."""
    return FederationData(
        kind="ciphertext_vector",
        array=vec.data,
        meta={"exponent": vec.exponent, "bound": format(vec.bound, "x")},
    )


def _ciphertexts(
    payload: FederationData,
    key: PublicKey,
    what: str,
    executor: Executor | None,
    rows: int | None = None,
) -> EncryptedVector:
    """Check and wrap received ciphertexts: CiphertextError unless each is in (0, n^2);
    ShapeMismatchError unless there are `rows` of them (when given)."""
    if payload.array is None:
        raise ValueError(f"hetero_lr: {what} carries no ciphertexts")
    if rows is not None and payload.array.shape[0] != rows:
        raise ShapeMismatchError(
            f"hetero_lr: {what} has {payload.array.shape[0]} ciphertexts, expected {rows}"
        )
    exponent, bound = payload.meta.get("exponent"), payload.meta.get("bound")
    if not isinstance(exponent, int) or not isinstance(bound, str):
        raise ValueError(f"hetero_lr: {what} has no exponent/bound")
    data = np.ascontiguousarray(payload.array, dtype="<u8")
    try:
        vec = EncryptedVector(key, data, exponent, (data.shape[0],), bound=int(bound, 16))
        vec.validate(executor=executor)
    except ValueError as exc:
        raise type(exc)(f"hetero_lr: {what} refused: {exc}") from None
    return vec


def _key_payload(key: PublicKey, **meta: int) -> FederationData:
    return FederationData(
        kind="public_key", blob=key.to_bytes(), blob_format=KEY_FORMAT, meta=dict(meta)
    )


# -- shared training state --------------------------------------------------------------------


@dataclass
class _Run:
    """One party's side of a training run: what the checkpoint holds, and helpers.

    `peers` are the parties this one exchanges ciphertexts with (the guest: every host; a host:
    the guest), each with its public key."""

    ctx: ComponentContext
    params: HeteroLrParams
    x: Floats
    private_key: PrivateKey
    peer_keys: dict[str, PublicKey]
    mask_seed: bytes
    sealed_secrets: dict[str, Any]
    """The private key and mask seed as the checkpoint holds them: sealed (fedflow.sealing)."""
    weights: Floats
    start: int = 0
    state_extra: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict)
    pending_iteration: int = -2
    own_executor: Executor | None = None
    pool: ObfuscatorPool | None = None
    """Obfuscators for encryptions under our own key, precomputed in the background."""
    background: Executor | None = None
    prefetch_count: int = 0
    """How many encryptions under our own key one iteration makes."""

    @property
    def executor(self) -> Executor | None:
        return getattr(self.ctx, "executor", None) or self.own_executor

    @property
    def peers(self) -> list[str]:
        return list(self.peer_keys)

    def start_prefetch(
        self, background: Executor | None, per_iteration: int, iterations_left: int
    ) -> None:
        """Precompute obfuscators for our own key on `background` (None: never); `prefetch`
        tops the pool up after every iteration's encryption."""
        if background is None or per_iteration <= 0:
            return
        self.pool = ObfuscatorPool(self.private_key, refill=True, executor=self.executor)
        self.background, self.prefetch_count = background, per_iteration
        self.prefetch(iterations_left)

    def prefetch(self, iterations_left: int) -> None:
        """Ask for the obfuscators of the next PREFETCH_ITERATIONS iterations (no more than
        are left), computed while we wait for the peer. Two, not one: the background threads
        run only on idle cores, and what an idle stretch computes early is not computed later
        on the critical path."""
        if self.pool is not None and self.background is not None:
            ahead = min(PREFETCH_ITERATIONS, max(0, iterations_left))
            self.pool.prefetch(self.prefetch_count * ahead, self.background)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def state(self) -> dict[str, Any]:
        # No private key or mask seed in the clear: the checkpoint is a database row.
        return {
            "secrets": self.sealed_secrets,
            "peer_keys": {p: k.to_bytes() for p, k in self.peer_keys.items()},
            "weights": self.weights,
            "extra": self.state_extra,
            "pending": self.pending,
            "pending_iteration": self.pending_iteration,
        }

    def save(self, iteration: int) -> None:
        self.pending, self.pending_iteration = {}, -2
        self.ctx.checkpoints.save(iteration, self.state())

    def send_ciphertexts(
        self, tag: str, iteration: int, make: Any, *, to: str, key: str | None = None
    ) -> dict[str, Any]:
        """Send the ciphertexts `make()` builds (it returns the vector and what unmasking the
        answer needs), or the ones recorded for this iteration; returns that unmask info.
        `to` is a party id or a role (every party of it); `key` names the recording."""
        key = key or tag
        entry = self.pending.get(key) if self.pending_iteration == iteration else None
        if entry is not None:
            payload = FederationData(
                kind="ciphertext_vector",
                array=np.asarray(entry["array"], dtype=np.uint64),
                meta=dict(entry["meta"]),
            )
            info = dict(entry["info"])
        else:
            vec, info = make()
            payload = ciphertext_payload(vec)
            if self.pending_iteration != iteration:
                self.pending, self.pending_iteration = {}, iteration
            self.pending[key] = {"array": payload.array, "meta": payload.meta, "info": info}
            # Recorded before it leaves: a redone iteration must re-send these very bytes.
            self.ctx.checkpoints.save(iteration - 1, self.state())
        self.ctx.federation.send(payload, to=to, tag=tag, iteration=iteration)
        return info

    def recv(self, tag: str, iteration: int, frm: str) -> FederationData:
        return self.ctx.federation.recv(frm=frm, tag=tag, iteration=iteration)

    def decrypt_for_peer(
        self, tag: str, iteration: int, answer: str, peer: str, rows: int | None = None
    ) -> None:
        """Decrypt the peer's masked ciphertexts under our key and send the residues back."""
        vec = _ciphertexts(
            self.recv(tag, iteration, peer),
            self.private_key.public_key,
            f"{tag} from {peer}",
            self.executor,
            rows,
        )
        self.ctx.federation.authorize_decrypt(tag, iteration, frm=peer)
        residues = self.private_key.decrypt_residues(vec.data, executor=self.executor)
        self.ctx.federation.send(
            FederationData(kind="masked_vector", array=np.ascontiguousarray(residues)),
            to=peer,
            tag=answer,
            iteration=iteration,
        )

    def masked(
        self, vec: EncryptedVector, tag: str, iteration: int
    ) -> tuple[EncryptedVector, dict[str, Any]]:
        """[[m + R]] for the peer to decrypt, and what `unmask` needs for its answer."""
        bits = _mask_bits(vec)
        masks = _mask_ints(self.mask_seed, tag, iteration, vec.size, bits)
        info = {"exponent": vec.exponent, "bits": bits, "count": vec.size}
        return _add_mask(vec, masks, self.executor), info

    def unmask(
        self,
        info: Mapping[str, Any],
        payload: FederationData,
        tag: str,
        iteration: int,
        peer: str,
    ) -> Floats:
        """Our values from the peer's decryption of [[m + R]] (residues modulo its n)."""
        if payload.array is None:
            raise ValueError(f"hetero_lr: the answer to {tag} carries no values")
        masks = _mask_ints(self.mask_seed, tag, iteration, int(info["count"]), int(info["bits"]))
        n = int(self.peer_keys[peer].n)
        return _unmask(payload.array, masks, int(info["exponent"]), n)


def _features(table: Table) -> Floats:
    return np.nan_to_num(np.asarray(table.features, dtype=np.float64), nan=0.0)


def _batches(rows: int, batch_size: int, seed: int, epoch: int) -> list[NDArray[np.int64]]:
    """The epoch's batches: a permutation from (seed, epoch), cut into batches of at least
    `batch_size` rows (the remainder joins the last batch)."""
    order = np.random.default_rng([seed, epoch]).permutation(rows)
    count = max(1, rows // batch_size)
    return [np.asarray(part, dtype=np.int64) for part in np.array_split(order, count)]


def _lr(params: HeteroLrParams, t: int) -> float:
    return params.learning_rate / math.sqrt(1.0 + params.decay * t)


def _seal_secrets(
    ctx: ComponentContext, private_key: PrivateKey, mask_seed: bytes
) -> dict[str, Any]:
    plain = encode_state({"private_key": private_key.to_bytes(), "mask_seed": mask_seed})
    return ctx.checkpoints.seal(SECRETS_PURPOSE, plain)


def _open_secrets(
    ctx: ComponentContext, state: Mapping[str, Any], short: bool
) -> tuple[PrivateKey, bytes, dict[str, Any]]:
    """The private key, mask seed and sealed form from a checkpoint's state.

    A checkpoint written before the secrets were sealed holds them in the clear ("keys" or
    "private_key", and "mask_seed"): read once, then sealed, so the next save drops them."""
    if "secrets" in state:
        sealed = dict(state["secrets"])
        secrets = decode_state(ctx.checkpoints.open_sealed(SECRETS_PURPOSE, sealed))
        raw_key, mask_seed = bytes(secrets["private_key"]), bytes(secrets["mask_seed"])
    else:
        raw_key = bytes(state["private_key"] if "private_key" in state else state["keys"])
        mask_seed = bytes(state["mask_seed"])
        sealed = {}
    private_key = PrivateKey.from_bytes(raw_key, insecure_allow_short=short)
    return private_key, mask_seed, sealed or _seal_secrets(ctx, private_key, mask_seed)


def _setup(ctx: ComponentContext, params: HeteroLrParams, x: Floats, peers: list[str]) -> _Run:
    """Keys (checkpointed, sealed, before anything is sent), the key exchange, or the saved
    state."""
    saved = ctx.checkpoints.latest()
    short = params.insecure_short_keys
    if saved is not None and "peer_keys" in saved.state:
        state = saved.state
        private_key, mask_seed, sealed = _open_secrets(ctx, state, short)
        private_key.precompute(OBFUSCATOR_WINDOW)
        return _Run(
            ctx,
            params,
            x,
            private_key,
            {
                str(p): PublicKey.from_bytes(bytes(k), insecure_allow_short=short)
                for p, k in state["peer_keys"].items()
            },
            mask_seed,
            sealed,
            np.asarray(state["weights"], dtype=np.float64),
            start=saved.iteration + 1,
            state_extra=dict(state["extra"]),
            pending=dict(state["pending"]),
            pending_iteration=int(state["pending_iteration"]),
        )
    if saved is not None:
        private_key, mask_seed, sealed = _open_secrets(ctx, saved.state, short)
    else:
        _, private_key = generate_keypair(params.key_bits, insecure_allow_short=short)
        mask_seed = os.urandom(32)
        sealed = _seal_secrets(ctx, private_key, mask_seed)
        # Before the first send: a restarted party must present the same key (a new key pair
        # would orphan whatever the peer encrypts under the public key it already has).
        ctx.checkpoints.save(-1, {"secrets": sealed})
    public_key = private_key.public_key
    private_key.precompute(OBFUSCATOR_WINDOW)
    ctx.federation.bind_dims(c=public_key.limbs, p=public_key.plain_limbs)
    for peer in peers:
        ctx.federation.send(
            _key_payload(public_key, features=x.shape[1]), to=peer, tag="public_key"
        )
    peer_keys: dict[str, PublicKey] = {}
    features: dict[str, int] = {}
    for peer in peers:
        got = ctx.federation.recv(frm=peer, tag="public_key")
        if got.blob is None:
            raise ValueError(f"hetero_lr: the public key message of {peer} is empty")
        key = PublicKey.from_bytes(got.blob, insecure_allow_short=short)
        if key.n_length < min(params.key_bits, 2048) and not short:
            raise ValueError(f"hetero_lr: the key of {peer} has only {key.n_length} bits")
        if key.limbs != public_key.limbs:
            raise ValueError("hetero_lr: every party must use keys of the same length")
        count = got.meta.get("features")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"hetero_lr: {peer} did not say how many features it has")
        peer_keys[peer], features[peer] = key, count
    run = _Run(ctx, params, x, private_key, peer_keys, mask_seed, sealed, np.zeros(x.shape[1]))
    run.state_extra["peer_features"] = features
    return run


def _largest_batch(rows: int, params: HeteroLrParams) -> int:
    """Rows of the largest batch of an epoch (`_batches` cuts them almost evenly)."""
    return -(-rows // max(1, rows // params.batch_size))


def _check_batch(params: HeteroLrParams, rows: int, k_guest: int, k_host: int) -> None:
    smallest = min_batch_size(k_guest, k_host)
    batch = min(params.batch_size, rows)
    if batch < smallest:
        raise ValueError(
            f"hetero_lr: batch size {batch} is below the minimum {smallest} for "
            f"{k_guest} guest and {k_host} host features (a smaller batch lets a party solve "
            "for the other's per-sample values; see docs/hetero_lr.md)"
        )


def _encrypt_for(
    run: _Run, values: Floats, *, key: PublicKey | None, shared: bool
) -> tuple[EncryptedVector, dict[str, Any]]:
    """Encrypt under our key (CRT) or `key`; `shared` fixes the exponent, so that vectors
    from several parties add without re-scaling (several hosts)."""
    precision = SHARED_PRECISION if shared else None
    if key is None:
        # Obfuscators from the pool (each used once) when precomputed, else made here.
        vec = run.private_key.encrypt(
            values, precision=precision, executor=run.executor, pool=run.pool
        )
    else:
        vec = key.encrypt(values, precision=precision, executor=run.executor)
    return vec, {}


# -- guest ------------------------------------------------------------------------------------


def _guest(
    ctx: ComponentContext,
    params: HeteroLrParams,
    pool: Executor | None,
    background: Executor | None,
) -> Mapping[str, Table]:
    table = ctx.input("data")
    if table.labels is None:
        raise TableError("hetero_lr: the guest's input has no label column")
    labels = np.asarray(table.labels, dtype=np.float64)
    if not np.all((labels == 0.0) | (labels == 1.0)):
        raise ValueError("hetero_lr: labels must be 0 or 1")
    hosts = list(ctx.parties.get("host", []))
    if not 1 <= len(hosts) <= MAX_HOSTS:
        raise ValueError(f"hetero_lr: needs 1 to {MAX_HOSTS} hosts ({len(hosts)} given)")
    several = len(hosts) > 1
    x = np.hstack([_features(table), np.ones((table.rows, 1))])
    k_g = x.shape[1]
    setup_began = time.perf_counter()
    run = _setup(ctx, params, x, hosts)
    run.own_executor = pool
    # Key generation, fixed-base precomputation and the key exchange (or a checkpoint load).
    ctx.metrics.log("setup_seconds", time.perf_counter() - setup_began)
    k_hosts = {h: int(k) for h, k in run.state_extra["peer_features"].items()}
    _check_batch(params, table.rows, k_g, max(k_hosts.values()))
    ctx.federation.bind_dims(k_g2=k_g + 2)
    penalty = np.r_[np.ones(k_g - 1), 0.0]  # no penalty on the intercept
    batches_per_epoch = len(_batches(table.rows, params.batch_size, params.seed, 0))
    total = params.epochs * batches_per_epoch
    # One encryption under our key per row of a batch (the residual), in either mode.
    run.start_prefetch(background, _largest_batch(table.rows, params), total - run.start)
    extra = run.state_extra
    loss_sum = float(extra.get("loss_sum", 0.0))
    last_loss = extra.get("last_loss")
    began = time.perf_counter()
    t = run.start
    while t < total and not extra.get("stopped", False):
        ctx.check_canceled()
        epoch, position = divmod(t, batches_per_epoch)
        rows = _batches(table.rows, params.batch_size, params.seed, epoch)[position]
        xb, yb = x[rows], labels[rows]
        b = len(rows)
        u_g = xb @ run.weights
        if params.reveal_host_scores:
            gradient, batch_loss = _guest_revealed(
                run, t, hosts, xb, yb, u_g, k_hosts, total - t - 1
            )
        else:
            v = 0.25 * u_g + 0.5 - yb
            run.send_ciphertexts(
                "residual",
                t,
                lambda v=v: _encrypt_for(run, v, key=None, shared=several),
                to="host",
            )
            run.prefetch(total - t - 1)
            y_pm = 2.0 * yb - 1.0
            design = np.hstack([xb, y_pm[:, None], u_g[:, None]])
            sent: dict[str, dict[str, Any]] = {}
            for host in hosts:
                u_h = _ciphertexts(
                    run.recv("host_scores", t, host),
                    run.peer_keys[host],
                    f"host_scores from {host}",
                    run.executor,
                    b,
                )

                def guest_gradient(
                    u_h: EncryptedVector = u_h,
                    t: int = t,
                    host: str = host,
                    design: Floats = design,
                ) -> tuple[EncryptedVector, dict[str, Any]]:
                    vec = encrypted_dot(design, u_h, executor=run.executor)
                    return run.masked(vec, f"guest_gradient:{host}", t)

                sent[host] = run.send_ciphertexts(
                    "guest_gradient", t, guest_gradient, to=host, key=f"guest_gradient:{host}"
                )
            for host in hosts:
                run.decrypt_for_peer(
                    "host_gradient", t, "host_gradient_masked", host, k_hosts[host]
                )
            from_hosts = np.zeros(k_g + 2)
            u_h_sq = 0.0
            for host in hosts:
                masked = run.recv("guest_gradient_masked", t, host)
                from_hosts += run.unmask(sent[host], masked, f"guest_gradient:{host}", t, host)
                sq = run.recv("host_score_sq", t, host)
                u_h_sq += (
                    float(np.asarray(sq.array, dtype=np.float64)) if sq.array is not None else 0
                )
                if several:
                    # sum over the other hosts h' of u_h . u_h' / 4, an aggregate for the loss
                    cross = _ciphertexts(
                        run.recv("host_cross", t, host),
                        run.private_key.public_key,
                        f"host_cross from {host}",
                        run.executor,
                        1,
                    )
                    ctx.federation.authorize_decrypt("host_cross", t, frm=host)
                    u_h_sq += 4.0 * float(run.private_key.decrypt(cross)[0])
            gradient = (xb.T @ v + 0.25 * from_hosts[:k_g]) / b
            batch_loss = (
                b * LOG2
                - 0.5 * (float(y_pm @ u_g) + from_hosts[k_g])
                + (float(u_g @ u_g) + 2 * from_hosts[k_g + 1] + u_h_sq) / 8
            )
        loss_sum += batch_loss
        run.weights = run.weights - _lr(params, t) * (
            gradient + params.alpha * penalty * run.weights
        )
        if position == batches_per_epoch - 1:
            loss = loss_sum / table.rows
            ctx.metrics.log("loss", loss, epoch)
            stop = bool(
                params.early_stop
                and last_loss is not None
                and abs(float(last_loss) - loss) < params.tol
            )
            ctx.federation.send(
                FederationData(kind="plain_control", meta={"stop": stop, "epoch": epoch}),
                to="host",
                tag="epoch_end",
                iteration=t,
            )
            last_loss, loss_sum = loss, 0.0
            extra["stopped"] = stop
            extra["epochs_done"] = epoch + 1
        extra["loss_sum"], extra["last_loss"] = loss_sum, last_loss
        run.save(t)
        ctx.report_progress((t + 1) / total)
        t += 1
    ctx.metrics.log("iterations", float(t))
    ctx.metrics.log("epochs", float(extra.get("epochs_done", 0)))
    ctx.metrics.log("train_seconds", time.perf_counter() - began)
    if last_loss is not None:
        ctx.metrics.log("final_loss", float(last_loss))
    run.close()
    return {"model": _model_table([*table.feature_names, INTERCEPT], run.weights)}


def _guest_revealed(
    run: _Run,
    t: int,
    hosts: list[str],
    xb: Floats,
    yb: Floats,
    u_g: Floats,
    k_hosts: Mapping[str, int],
    iterations_left: int,
) -> tuple[Floats, float]:
    """One iteration with `reveal_host_scores`: the hosts' partial scores arrive in plaintext,
    the residual is the exact sigmoid's, and only the hosts' gradients go through Paillier
    (one key, the guest's). Returns the guest's gradient and the batch's log loss."""
    b = len(yb)
    z = u_g.copy()
    for host in hosts:
        got = run.recv("host_scores_revealed", t, host)
        if got.array is None or got.array.shape != (b,):
            raise ShapeMismatchError(f"hetero_lr: host_scores_revealed from {host} is not ({b},)")
        z += np.asarray(got.array, dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-z))
    d = p - yb
    run.send_ciphertexts(
        "residual", t, lambda: _encrypt_for(run, d, key=None, shared=False), to="host"
    )
    run.prefetch(iterations_left)
    for host in hosts:
        run.decrypt_for_peer("host_gradient", t, "host_gradient_masked", host, k_hosts[host])
    # log(1 + exp(-y'z)), computed stably
    loss = float(np.sum(np.logaddexp(0.0, -(2.0 * yb - 1.0) * z)))
    return xb.T @ d / b, loss


def _model_table(names: list[str], weights: Floats) -> Table:
    return Table(
        ids=np.array(names, dtype=np.str_),
        features=np.asarray(weights, dtype=np.float64).reshape(-1, 1),
        feature_names=["weight"],
        labels=None,
    )


# -- host -------------------------------------------------------------------------------------


def _host(
    ctx: ComponentContext,
    params: HeteroLrParams,
    pool: Executor | None,
    background: Executor | None,
) -> Mapping[str, Table]:
    table = ctx.input("data")
    guest = ctx.parties["guest"][0]
    others = [h for h in ctx.parties.get("host", []) if h != ctx.party_id]
    x = _features(table)
    k_h = x.shape[1]
    run = _setup(ctx, params, x, [guest])
    run.own_executor = pool
    guest_key = run.peer_keys[guest]
    k_g = int(run.state_extra["peer_features"][guest])
    _check_batch(params, table.rows, k_g, k_h)
    ctx.federation.bind_dims(k_g2=k_g + 2)
    batches_per_epoch = len(_batches(table.rows, params.batch_size, params.seed, 0))
    total = params.epochs * batches_per_epoch
    if not params.reveal_host_scores:  # that mode encrypts nothing under the host's key
        run.start_prefetch(background, _largest_batch(table.rows, params), total - run.start)
    extra = run.state_extra
    t = run.start
    while t < total and not extra.get("stopped", False):
        ctx.check_canceled()
        epoch, position = divmod(t, batches_per_epoch)
        rows = _batches(table.rows, params.batch_size, params.seed, epoch)[position]
        xb = x[rows]
        b = len(rows)
        u_h = xb @ run.weights
        if params.reveal_host_scores:
            _host_revealed(run, t, guest, xb, u_h)
            gradient = _host_revealed_gradient(run, t, guest, b)
            run.weights = run.weights - _lr(params, t) * (gradient + params.alpha * run.weights)
            if position == batches_per_epoch - 1:
                control = run.recv("epoch_end", t, guest)
                extra["stopped"] = bool(control.meta.get("stop", False))
            run.save(t)
            ctx.report_progress((t + 1) / total)
            t += 1
            continue
        run.send_ciphertexts(
            "host_scores",
            t,
            lambda u_h=u_h: _encrypt_for(run, u_h, key=None, shared=False),
            to=guest,
        )
        run.prefetch(total - t - 1)
        if others:
            # [[u_h / 4]] under the guest's key: the other hosts add it to their residual.
            run.send_ciphertexts(
                "peer_scores",
                t,
                lambda u_h=u_h: _encrypt_for(run, 0.25 * u_h, key=guest_key, shared=True),
                to="host",
            )
        what = f"residual from {guest}"
        d = _ciphertexts(run.recv("residual", t, guest), guest_key, what, run.executor, b)
        peer_scores = [
            _ciphertexts(
                run.recv("peer_scores", t, other),
                guest_key,
                f"peer_scores from {other}",
                run.executor,
                b,
            )
            for other in others
        ]
        for scores in peer_scores:
            d = d + scores  # same exponent (SHARED_PRECISION): no re-scaling

        def host_gradient(
            xb: Floats = xb, d: EncryptedVector = d, u_h: Floats = u_h, t: int = t
        ) -> tuple[EncryptedVector, dict[str, Any]]:
            vec = encrypted_dot(xb, d, executor=run.executor) + 0.25 * (xb.T @ u_h)
            return run.masked(vec, "host_gradient", t)

        sent = run.send_ciphertexts("host_gradient", t, host_gradient, to=guest)
        if others:

            def host_cross(
                u_h: Floats = u_h, peer_scores: list[EncryptedVector] = peer_scores
            ) -> tuple[EncryptedVector, dict[str, Any]]:
                total_cross = encrypted_dot(u_h[:, None], peer_scores[0])
                for scores in peer_scores[1:]:
                    total_cross = total_cross + encrypted_dot(u_h[:, None], scores)
                # Sent to the key holder: re-randomised first.
                return total_cross.obfuscate(executor=run.executor), {}

            run.send_ciphertexts("host_cross", t, host_cross, to=guest)
        run.decrypt_for_peer("guest_gradient", t, "guest_gradient_masked", guest)
        ctx.federation.send(
            FederationData(kind="aggregate", array=np.array(float(u_h @ u_h))),
            to=guest,
            tag="host_score_sq",
            iteration=t,
        )
        answer = run.recv("host_gradient_masked", t, guest)
        gradient = run.unmask(sent, answer, "host_gradient", t, guest) / b
        run.weights = run.weights - _lr(params, t) * (gradient + params.alpha * run.weights)
        if position == batches_per_epoch - 1:
            control = run.recv("epoch_end", t, guest)
            extra["stopped"] = bool(control.meta.get("stop", False))
        run.save(t)
        ctx.report_progress((t + 1) / total)
        t += 1
    ctx.metrics.log("iterations", float(t))
    run.close()
    return {"model": _model_table(list(table.feature_names), run.weights)}


def _host_revealed(run: _Run, t: int, guest: str, xb: Floats, u_h: Floats) -> None:
    """`reveal_host_scores`: send u_h in plaintext; answer [[d]] with [[X_h^T d + R_h]]."""
    run.ctx.federation.send(
        FederationData(kind="partial_score", array=u_h),
        to=guest,
        tag="host_scores_revealed",
        iteration=t,
    )
    key = run.peer_keys[guest]
    d = _ciphertexts(run.recv("residual", t, guest), key, "residual", run.executor, len(u_h))

    def host_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        return run.masked(encrypted_dot(xb, d, executor=run.executor), "host_gradient", t)

    run.state_extra["revealed_sent"] = run.send_ciphertexts(
        "host_gradient", t, host_gradient, to=guest
    )


def _host_revealed_gradient(run: _Run, t: int, guest: str, b: int) -> Floats:
    sent = run.state_extra.pop("revealed_sent")
    answer = run.recv("host_gradient_masked", t, guest)
    return run.unmask(sent, answer, "host_gradient", t, guest) / b


def _lowest_priority() -> None:
    """Thread initializer: the lowest CPU priority for this thread (Linux: nice is per
    thread), so precomputation only takes a core that the protocol's own work leaves idle
    and never slows the critical path; elsewhere the thread keeps the normal priority."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PREFETCH_NICE)


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(HeteroLrParams)
    side = _host if ctx.role == "host" else _guest
    with contextlib.ExitStack() as stack:
        background: ThreadPoolExecutor | None = None
        if params.prefetch_threads > 0:
            background = ThreadPoolExecutor(
                params.prefetch_threads,
                thread_name_prefix="hetero-lr-prefetch",
                initializer=_lowest_priority,
            )
            # Queued precomputation is dropped, not finished, when the task ends or fails.
            stack.callback(background.shutdown, wait=True, cancel_futures=True)
        pool: ThreadPoolExecutor | None = None
        if getattr(ctx, "executor", None) is None and params.threads > 0:
            pool = stack.enter_context(
                ThreadPoolExecutor(params.threads, thread_name_prefix="hetero-lr")
            )
        return side(ctx, params, pool, background)


# -- prediction -------------------------------------------------------------------------------


def _weights_for(model: Table, names: list[str]) -> Floats:
    position = {str(name): i for i, name in enumerate(model.ids.tolist())}
    missing = [name for name in names if name not in position]
    if missing:
        raise TableError(f"hetero_lr_predict: the model has no weight for {missing[0]!r}")
    weights = model.features[:, 0]
    return np.array([weights[position[name]] for name in names], dtype=np.float64)


def predict_run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(HeteroLrPredictParams)
    table, model = ctx.input("data"), ctx.input("model")
    x = _features(table)
    if ctx.role == "host":
        u_h = x @ _weights_for(model, list(table.feature_names))
        ctx.federation.send(
            FederationData(kind="partial_score", array=u_h),
            to=ctx.parties["guest"][0],
            tag="host_partial_scores",
        )
        return {}
    weights = _weights_for(model, [*table.feature_names, INTERCEPT])
    z = np.hstack([x, np.ones((table.rows, 1))]) @ weights
    ctx.federation.bind_dims(m=table.rows)
    for host, got in ctx.federation.recv_all(frm="host", tag="host_partial_scores").items():
        if got.array is None:
            raise ValueError(f"hetero_lr_predict: host {host} sent no scores")
        z = z + np.asarray(got.array, dtype=np.float64)
    score = 1.0 / (1.0 + np.exp(-z))
    ctx.metrics.log("rows", float(table.rows))
    ctx.metrics.log("positive_rate", float((score >= params.threshold).mean()))
    return {
        "data": Table(
            ids=table.ids,
            features=np.stack([score, (score >= params.threshold).astype(np.float64)], axis=1),
            feature_names=["score", "predicted"],
            labels=table.labels,
            label_name=table.label_name,
        )
    }


HETERO_LR = ComponentType(
    name="hetero_lr",
    description="vertical logistic regression under Paillier (guest + host, no arbiter)",
    run=run,
    roles=("guest", "host"),
    params=HeteroLrParams,
    inputs=(InputSpec("data", description="rows aligned across parties (psi output)"),),
    outputs=("model",),
    protocol=HETERO_LR_PROTOCOL,
)

HETERO_LR_PREDICT = ComponentType(
    name="hetero_lr_predict",
    description="scores of a hetero_lr model: the guest gets sigmoid(u_g + u_h) per row",
    run=predict_run,
    roles=("guest", "host"),
    params=HeteroLrPredictParams,
    inputs=(
        InputSpec("model", description="this party's part of a hetero_lr model"),
        InputSpec("data", description="rows aligned across parties"),
    ),
    outputs=("data",),
    protocol=HETERO_LR_PREDICT_PROTOCOL,
)
