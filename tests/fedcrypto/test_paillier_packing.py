"""Packing several quantised values per plaintext: round trips, sums, budgets, overflow."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from fedcrypto import (
    KeyMismatchError,
    PackedEncoder,
    PackedEncryptedVector,
    PaillierOverflowError,
    ShapeMismatchError,
)
from fedcrypto.paillier.limbs import from_mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fedcrypto.paillier_keys import OTHER_SK, PK, SK

PRECISION = 2.0**-20
GRAD = PackedEncoder(PK, lo=-1.0, hi=1.0, precision=PRECISION, planned_additions=1000)


def test_encoder_sizes_slots_for_the_planned_additions() -> None:
    levels = 2 * 2**20  # (hi - lo) / precision

    assert GRAD.levels == levels
    assert GRAD.slot_bits == (levels * 1000).bit_length()
    assert GRAD.slots == (PK.n_length - 2) // GRAD.slot_bits
    assert GRAD.slots * GRAD.slot_bits < PK.n_length - 1


@settings(max_examples=20, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=40),
        elements=st.floats(-1.0, 1.0),
    )
)
def test_packed_values_round_trip_within_half_the_precision(x: np.ndarray) -> None:
    packed = GRAD.encrypt(SK, x)

    back = GRAD.decrypt(SK, packed)

    assert back.shape == x.shape
    assert packed.data.shape[0] == int(np.prod(x.shape[:-1])) * GRAD.ciphertexts_for(x.shape[-1])
    assert np.max(np.abs(back - x)) <= PRECISION / 2 + 1e-15


def test_public_key_packing_decrypts_the_same() -> None:
    x = np.linspace(-1, 1, 100)

    back = GRAD.decrypt(SK, GRAD.encrypt(PK, x.reshape(1, -1)))

    assert np.max(np.abs(back.ravel() - x)) <= PRECISION / 2


def test_gradient_hessian_pairs_sum_into_histogram_bins() -> None:
    rng = np.random.default_rng(5)
    g = rng.uniform(-1, 1, 300)
    h = rng.uniform(0, 0.25, 300)
    bins = rng.integers(0, 7, 300)
    gh = PackedEncoder(
        PK,
        lo=[-1.0, 0.0],
        hi=[1.0, 0.25],
        precision=PRECISION,
        planned_additions=300,
        slots_per_ciphertext=2,
    )
    packed = gh.encrypt(SK, np.stack([g, h], axis=1))

    hist = [gh.decrypt(SK, packed[bins == b].sum()) for b in range(7)]

    assert packed.shape == (300,) and packed.data.shape[0] == 300
    for b in range(7):
        sel = bins == b
        tol = sel.sum() * PRECISION / 2 + 1e-9
        assert abs(hist[b][0] - g[sel].sum()) <= tol
        assert abs(hist[b][1] - h[sel].sum()) <= tol


def test_adding_packed_vectors_adds_slotwise_and_counts_terms() -> None:
    x = np.array([[0.5, -0.25, 1.0], [-1.0, 0.0, 0.75]])
    a = GRAD.encrypt(SK, x)

    s = a + a + a
    by_axis = s.sum(axis=0)

    np.testing.assert_array_equal(s.terms, [3, 3])
    np.testing.assert_allclose(GRAD.decrypt(SK, s), 3 * x, atol=3 * PRECISION)
    np.testing.assert_allclose(GRAD.decrypt(SK, by_axis), 3 * x.sum(axis=0), atol=6 * PRECISION)
    assert int(by_axis.terms) == 6


def test_exceeding_the_planned_additions_raises_before_adding() -> None:
    small = PackedEncoder(PK, lo=0.0, hi=1.0, precision=2**-8, planned_additions=3)
    a = small.encrypt(SK, np.ones((4, 5)))

    three = a[:3].sum(axis=0)

    with pytest.raises(PaillierOverflowError, match="planned"):
        a.sum(axis=0)
    with pytest.raises(PaillierOverflowError, match="planned"):
        three + a[0]
    np.testing.assert_allclose(small.decrypt(SK, three), [3.0] * 5)


def test_the_slot_width_really_holds_the_planned_sums() -> None:
    tight = PackedEncoder(PK, lo=0.0, hi=1.0, precision=2**-8, planned_additions=3)
    top = np.ones((3, tight.slots))  # every slot at its maximum level

    total = tight.decrypt(SK, tight.encrypt(SK, top).sum(axis=0))

    np.testing.assert_array_equal(total, [3.0] * tight.slots)


def test_values_outside_the_range_or_not_finite_are_refused() -> None:
    with pytest.raises(PaillierOverflowError, match="outside"):
        GRAD.encrypt(SK, np.array([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="NaN"):
        GRAD.encrypt(SK, np.array([[np.nan]]))


def test_slot_width_too_small_for_the_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        PackedEncoder(PK, lo=0.0, hi=1.0, precision=2**-8, planned_additions=1000, slot_bits=12)
    with pytest.raises(ValueError, match="slots_per_ciphertext"):
        PackedEncoder(
            PK, lo=0.0, hi=1.0, precision=2**-8, planned_additions=2, slots_per_ciphertext=10_000
        )


def test_corrupted_or_wrapped_plaintexts_are_detected_on_decryption() -> None:
    a = GRAD.encrypt(SK, np.zeros((1, 4)))
    # a ciphertext of a plaintext with bits above the last slot
    high = PK.encrypt_residues(from_mpz([1 << (GRAD.slots * GRAD.slot_bits)], PK.plain_limbs))
    # a ciphertext of a slot value larger than one term can produce
    over = PK.encrypt_residues(from_mpz([GRAD.levels + 1], PK.plain_limbs))

    for data in (high, over):
        bad = PackedEncryptedVector(GRAD, data, (1,), 4, np.ones(1, dtype=np.int64))
        with pytest.raises(PaillierOverflowError):
            GRAD.decrypt(SK, bad)
    np.testing.assert_array_equal(GRAD.decrypt(SK, a), np.full((1, 4), 0.0))


def test_mixing_encoders_keys_and_shapes_is_refused() -> None:
    other = PackedEncoder(PK, lo=-2.0, hi=2.0, precision=PRECISION, planned_additions=1000)
    a = GRAD.encrypt(SK, np.zeros((2, 3)))

    with pytest.raises(KeyMismatchError):
        a + other.encrypt(SK, np.zeros((2, 3)))
    with pytest.raises(ShapeMismatchError):
        a + GRAD.encrypt(SK, np.zeros((3, 3)))
    with pytest.raises(KeyMismatchError):
        GRAD.encrypt(OTHER_SK, np.zeros((1, 2)))
    with pytest.raises(KeyMismatchError):
        GRAD.decrypt(OTHER_SK, a)


def test_packed_bytes_round_trip_and_check_the_encoder() -> None:
    x = np.array([[0.5, -0.5, 0.25]])
    a = GRAD.encrypt(SK, x) + GRAD.encrypt(SK, x)

    raw = a.to_bytes()
    back = PackedEncryptedVector.from_bytes(raw, GRAD)
    other = PackedEncoder(PK, lo=-1.0, hi=1.0, precision=PRECISION, planned_additions=999)

    np.testing.assert_array_equal(back.terms, [2])
    np.testing.assert_allclose(GRAD.decrypt(SK, back), 2 * x, atol=2 * PRECISION)
    with pytest.raises(ValueError, match="different encoder"):
        PackedEncryptedVector.from_bytes(raw, other)


def test_obfuscating_packed_ciphertexts_keeps_slots() -> None:
    a = GRAD.encrypt(SK, np.array([[0.125, -0.5]]))

    fresh = a.obfuscate()

    assert fresh.ciphertexts() != a.ciphertexts()
    np.testing.assert_allclose(GRAD.decrypt(SK, fresh), [[0.125, -0.5]], atol=PRECISION)
