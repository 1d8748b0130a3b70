"""One-vs-rest in one exchange: the class lanes of hetero_lr's per-batch messages.

With `multi_class` and K classes, every per-batch message carries one lane per class, lane l
being class l's (the classes in ascending order; the host knows only their count). Layouts,
rows of the (rows, c) ciphertext array (the audit reads 2-D ciphertext arrays, so lanes are
stacked along the rows, lane-major):

  per-row messages  (residual, host_scores, peer_scores, host_scores_revealed)
                    the ACTIVE lanes only, each b rows (separable: (rank + 1) b rows, lane by
                    lane, each as in the binary protocol): (A b, c), A = active classes
  answers           (host_gradient, guest_gradient, their masked answers, host_cross,
                    host_class_score_sq) ALL K lanes, a frozen lane as a ciphertext of 0:
                    (K k_h, c), (K (k_g + 2), c), (K, c), (K,)

A class that stopped early is frozen: its weights stay, its rows leave the per-row messages (no
encryption and no multi-exponentiation is spent on it), and its lane of every answer is Enc(0)
(the trivial ciphertext 1, masked and re-randomised like any lane before it is sent), so the
answers keep the shapes the protocol binds once per run (k_g2 = K (k_g + 2), classes = K) and
the key holder decrypts nothing but a mask there. With one class (binary hetero_lr) the
messages are exactly the binary protocol's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from fedcrypto import EncryptedVector, PublicKey
from fedcrypto.paillier.limbs import from_mpz


def zeros(key: PublicKey, count: int) -> EncryptedVector:
    """`count` trivial encryptions of 0 (the ciphertext 1): they take any exponent, and are
    re-randomised by the masking before they leave."""
    return EncryptedVector(key, from_mpz([1] * count, key.limbs), 0, (count,), bound=0)


def join_lanes(
    parts: Sequence[EncryptedVector],
    active: Sequence[int],
    lanes: int,
    width: int,
    key: PublicKey,
) -> EncryptedVector:
    """One vector of `lanes` lanes of `width` values: parts[i] in lane active[i], Enc(0) in
    the others. The parts are brought to their lowest exponent (exact: ciphertexts raised to a
    power of 16), the zero lanes take it as they are."""
    if len(parts) == lanes == 1:
        return parts[0]  # binary: the vector as it was, bit for bit
    if len(parts) != len(active) or any(p.size != width for p in parts):
        raise ValueError(f"lanes: {len(parts)} parts of {width} values for lanes {list(active)}")
    exponent = min(p.exponent for p in parts) if parts else 0
    aligned = {
        lane: p if p.exponent == exponent else p.decrease_exponent_to(exponent)
        for lane, p in zip(active, parts, strict=True)
    }
    blank = zeros(key, width).data
    data = np.concatenate(
        [aligned[lane].data if lane in aligned else blank for lane in range(lanes)]
    )
    bound = max((p.bound for p in aligned.values()), default=0)
    return EncryptedVector(key, data, exponent, (lanes * width,), bound=bound)
