"""Several classes' residuals in one Paillier plaintext (multi_class, sigmoid taylor, one host).

In the Taylor protocol the host multiplies the guest's [[v_k]] (class k's residual part) by
the same plaintext matrix X_h for every class, so the classes can share ciphertexts: the guest
packs S classes' values of a row into one plaintext, and one multi-exponentiation gives every
packed class's X_h^T v_k at once. Encryptions of the residual and the host's
multi-exponentiations drop by up to S times; nothing else changes (the host's own scores,
[[u_h^k]], stay one lane per class: the guest multiplies them by per-class columns, y'_k and
u_g^k, which would mix classes in a shared plaintext and reveal cross-class sums).

Layout. A row's packed plaintext holds the classes of one group (the active lanes in order, S
at a time), class j of the group in slot j:

    P = sum_j m_j 2^(j s),   m_j = round(v_j 2^FRACTION_BITS), signed, |v_j| < 2^VALUE_BITS

encrypted as P mod n (lanes.py: the groups stacked along the rows, (G b, c), G = ceil(A / S)).
The host's product is sum_i x_i P_i = sum_j 2^(j s) M_j with M_j = sum_i x_i m_ij, x_i the
quantised X_h entries (|x| < 2^MATRIX_BITS: encrypted_dot's grid, 2^-24 of the column
maximum, at most 2^28 in magnitude), so |M_j| < 2^(VALUE_BITS + FRACTION_BITS + MATRIX_BITS +
log2 b). Headroom: a slot has s = VALUE_BITS + FRACTION_BITS + MATRIX_BITS + ceil(log2 b) + 2
= 92 + ceil(log2 b) bits (one for the sign, one spare), so no slot's sum reaches 2^(s - 1) and
the slots decode without ambiguity (balanced digits, lowest slot first). The product's bound
is below 2^(S s - 2); the masked decryption adds R of bits(bound) + 80 bits to the whole
packed integer and needs 2^(bits) + bound < n / 3, hence S = floor((bits(n / 3) - 82) / s):
at 2048-bit keys and b = 1024, s = 102 and S = 19; at 512 bits and b = 80, s = 99 and S = 4.
The mask hides the packed integer as a whole (2^-80), so every slot; the host, which removes
its mask, learns each class's X_h^T v_k exactly as from one lane per class. A residual part
beyond 2^VALUE_BITS is refused before anything is encrypted (the divergence watch stops a run
long before).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from fedcrypto import EncryptedVector, ObfuscatorPool, PrivateKey, PublicKey
from fedcrypto.paillier.limbs import from_mpz, to_mpz
from numpy.typing import NDArray

from fedflow.kit import masking

if TYPE_CHECKING:
    from fedflow.kit.he import HeParty

Floats = NDArray[np.float64]

VALUE_BITS: Final = 14
"""|v| < 2^14 for a packed residual part v = u_g / 4 + 0.5 - y (|u_g| up to about 2^16, far
beyond where the divergence watch stops a run), so that a mantissa fits an int64."""
FRACTION_BITS: Final = 48
"""v's fixed-point step 2^-48 (the several-hosts protocol's precision)."""
MATRIX_BITS: Final = 28
"""encrypted_dot's quantised entries of X_h are below 2^28 in magnitude."""
SPARE_BITS: Final = 2
"""Per slot: the sign, and one bit spare."""


@dataclass(frozen=True)
class Slots:
    """The packing of one run: `bits` per slot, `per_plaintext` slots in a plaintext."""

    bits: int
    per_plaintext: int

    def groups(self, active: Sequence[int]) -> list[list[int]]:
        """The active lanes, `per_plaintext` at a time (one packed block of rows each)."""
        return [
            list(active[i : i + self.per_plaintext])
            for i in range(0, len(active), self.per_plaintext)
        ]


def slots_for(key: PublicKey, rows: int) -> Slots:
    """The slot layout for batches of at most `rows` rows under the guest's key (above)."""
    bits = (
        VALUE_BITS + FRACTION_BITS + MATRIX_BITS + math.ceil(math.log2(max(rows, 2))) + SPARE_BITS
    )
    per_plaintext = (key.max_int.bit_length() - 1 - masking.MASK_BITS - 1) // bits
    return Slots(bits, max(per_plaintext, 1))


def packs(classes: int, hosts: int, sigmoid: str, reveal: bool) -> bool:
    """Whether a run packs its residual: one-vs-rest with the Taylor line and one host (the
    separable sigmoid's host matrices differ per class; with several hosts the peer scores'
    cross terms would mix classes)."""
    return classes > 1 and hosts == 1 and sigmoid == "taylor" and not reveal


def pack(values: Floats, slots: Slots) -> list[int]:
    """The packed plaintexts of `values` (active lanes, rows): group after group, row by
    row, as signed integers."""
    limit = 2.0**VALUE_BITS
    if values.size and not float(np.max(np.abs(values))) < limit:
        raise OverflowError(
            f"hetero_lr: a residual of {float(np.max(np.abs(values))):.4g} does not fit a packed "
            f"slot (below 2^{VALUE_BITS}); scale the features or lower learning_rate"
        )
    mantissas = np.rint(np.ldexp(values, FRACTION_BITS)).astype(np.int64)  # |m| < 2^62
    out: list[int] = []
    for start in range(0, len(mantissas), slots.per_plaintext):
        group = mantissas[start : start + slots.per_plaintext]
        for row in range(group.shape[1]):
            out.append(sum(int(group[j, row]) << (j * slots.bits) for j in range(len(group))))
    return out


def encrypt(
    private_key: PrivateKey,
    values: Floats,
    slots: Slots,
    *,
    pool: ObfuscatorPool | None,
    executor: Executor | None,
) -> EncryptedVector:
    """[[P]] for every packed row (exponent 0: the mantissas are the packed integers),
    obfuscators from the party's pool when it has one."""
    packed = pack(values, slots)
    n = int(private_key.public_key.n)
    key = private_key.public_key
    residues = from_mpz([p % n for p in packed], key.plain_limbs)
    data = private_key.encrypt_residues(residues, pool=pool, executor=executor)
    bound = max((abs(p) for p in packed), default=0)
    return EncryptedVector(key, data, 0, (len(packed),), bound=bound)


def unpack(total: int, slots: Slots, count: int) -> list[int]:
    """The `count` signed slot sums of a packed integer (balanced digits, lowest first)."""
    half, full = 1 << (slots.bits - 1), 1 << slots.bits
    out = []
    for _ in range(count):
        digit = total & (full - 1)
        if digit >= half:
            digit -= full
        out.append(digit)
        total = (total - digit) >> slots.bits
    if total != 0:
        raise ValueError("hetero_lr: a packed answer does not decode (a slot overflowed)")
    return out


def unmask_packed(
    he: HeParty,
    info: Mapping[str, Any],
    answer: str,
    iteration: int,
    peer: str,
    tag: str,
    slots: Slots,
    groups: list[list[int]],
    lanes: int,
) -> Floats:
    """The host's side of a packed answer: the peer's residues of P + R minus our masks R
    (fedflow.kit.masking, on integers: a packed value needs all its bits), unpacked into
    (lanes, features) floats, zero for a lane in no group."""
    payload = he.ctx.federation.recv(frm=peer, tag=answer, iteration=iteration)
    if payload.array is None:
        raise ValueError(f"{he.name}: the answer to {tag} carries no values")
    count = int(info["count"])
    masks = masking.mask_ints(he.mask_seed, tag, iteration, count, int(info["bits"]))
    values = to_mpz(np.ascontiguousarray(payload.array, dtype="<u8"))
    if len(values) != count:
        raise ValueError(f"{he.name}: {len(values)} masked values for {count} masks")
    n = int(he.peer_keys[peer].n)
    features = count // max(len(groups), 1)
    scale = math.ldexp(1.0, -FRACTION_BITS) * 16.0 ** int(info["exponent"])
    out = np.zeros((lanes, features))
    for g, group in enumerate(groups):
        for j in range(features):
            m = (int(values[g * features + j]) - masks[g * features + j]) % n
            if m > n // 2:
                m -= n
            for lane, slot in zip(group, unpack(m, slots, len(group)), strict=True):
                out[lane, j] = slot * scale
    return out
