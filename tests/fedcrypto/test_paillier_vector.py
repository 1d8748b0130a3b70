"""EncryptedVector operations against phe 1.5 as the oracle, plus errors, bytes and memory."""

from __future__ import annotations

import operator
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import phe
import pytest
from fedcrypto import (
    CiphertextError,
    EncryptedVector,
    KeyMismatchError,
    PaillierOverflowError,
    ShapeMismatchError,
    encrypted_dot,
    to_phe,
)
from fedcrypto.paillier.limbs import from_mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fedcrypto.paillier_keys import OTHER_PK, OTHER_SK, PK, SK

PHE_SK = SK.to_phe()

# magnitudes in [1e-30, 1e6] (or zero): aligning exponents between such values cannot pass
# max_int for a 1024-bit key; far smaller addends are covered by an explicit overflow test
values = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-30, max_value=1e6),
    st.floats(min_value=-1e6, max_value=-1e-30),
)
shapes = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5)


def phe_decrypt_all(numbers: list[phe.EncryptedNumber]) -> np.ndarray:
    return np.array([PHE_SK.decrypt(x) for x in numbers])


def same_shape_pair(shape: tuple[int, ...]) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    arr = hnp.arrays(np.float64, shape, elements=values)
    return st.tuples(arr, arr)


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from([np.float64, np.int64]), shapes, elements=st.integers(-(10**6), 10**6)
    )
)
def test_encrypt_decrypt_round_trips_any_shape(x: np.ndarray) -> None:
    vec = PK.encrypt(x)

    back = SK.decrypt(vec)

    assert vec.shape == x.shape and back.shape == x.shape
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("op", [operator.add, operator.sub], ids=["addition", "subtraction"])
@settings(max_examples=20, deadline=None)
@given(shapes.flatmap(same_shape_pair))
def test_encrypted_addition_and_subtraction_match_phe_exactly(
    op: Callable[[Any, Any], Any], pair: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = pair
    a, b = PK.encrypt(x), PK.encrypt(y)

    ours = SK.decrypt(op(a, b)).ravel()
    theirs = phe_decrypt_all([op(p, q) for p, q in zip(to_phe(a), to_phe(b), strict=True)])

    np.testing.assert_array_equal(ours, theirs)


@settings(max_examples=20, deadline=None)
@given(hnp.arrays(np.float64, shapes, elements=values), values)
def test_adding_a_plaintext_scalar_matches_phe_exactly(x: np.ndarray, s: float) -> None:
    a = PK.encrypt(x)

    ours = SK.decrypt(a + s).ravel()
    reflected = SK.decrypt(s + a).ravel()
    theirs = phe_decrypt_all([p + s for p in to_phe(a)])

    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(reflected, theirs)


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float64, shapes, elements=values), values)
def test_multiplying_by_a_scalar_matches_phe_exactly(x: np.ndarray, s: float) -> None:
    a = PK.encrypt(x)

    ours = SK.decrypt(a * s).ravel()
    reflected = SK.decrypt(s * a).ravel()
    theirs = phe_decrypt_all([p * s for p in to_phe(a)])

    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(reflected, theirs)


@pytest.mark.parametrize("s", [0, 1, -1, 3, -7, 0.5, -0.25])
def test_multiplying_by_small_and_signed_scalars(s: float) -> None:
    x = np.array([1.5, -2.0, 0.0, 1e-3])

    back = SK.decrypt(PK.encrypt(x) * s)

    np.testing.assert_allclose(back, x * s, rtol=0, atol=1e-15)


@settings(max_examples=20, deadline=None)
@given(shapes.flatmap(same_shape_pair))
def test_elementwise_product_with_a_plaintext_array_is_within_the_encoding_error(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = pair
    a = PK.encrypt(x)

    back = SK.decrypt(a * y)

    # each factor is within 2^-53 of its vector's largest magnitude
    tol = 2.0**-52 * (np.max(np.abs(x)) * np.max(np.abs(y))) * 2 + np.spacing(np.abs(x * y))
    assert np.all(np.abs(back - x * y) <= tol)


@settings(max_examples=20, deadline=None)
@given(shapes.flatmap(same_shape_pair))
def test_adding_a_plaintext_array_is_within_the_encoding_error(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = pair
    a = PK.encrypt(x)

    forward = SK.decrypt(a + y)
    backward = SK.decrypt(y - a)

    tol = 2.0**-52 * (np.max(np.abs(x)) + np.max(np.abs(y))) + np.spacing(np.abs(x) + np.abs(y))
    assert np.all(np.abs(forward - (x + y)) <= tol)
    assert np.all(np.abs(backward - (y - x)) <= tol)


def test_negation_and_true_division() -> None:
    x = np.array([1.0, -2.5, 4.0])
    a = PK.encrypt(x)

    np.testing.assert_array_equal(SK.decrypt(-a), -x)
    np.testing.assert_allclose(SK.decrypt(a / 4), x / 4, atol=1e-15)


def test_broadcasting_follows_numpy_rules() -> None:
    col = np.array([[1.0], [2.0], [3.0]])
    row = np.array([10.0, 20.0, 30.0, 40.0])
    a = PK.encrypt(col)
    b = PK.encrypt(row)

    np.testing.assert_array_equal(SK.decrypt(a + b), col + row)
    np.testing.assert_array_equal(SK.decrypt(a + row), col + row)
    np.testing.assert_array_equal(SK.decrypt(a * np.array([1, -1, 2, 0])), col * [1, -1, 2, 0])


@settings(max_examples=15, deadline=None)
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=5), elements=values)
)
def test_sums_along_every_axis_match_phe(x: np.ndarray) -> None:
    a = PK.encrypt(x)
    nums = np.array(to_phe(a), dtype=object).reshape(x.shape)

    total = SK.decrypt(a.sum())
    by_rows = SK.decrypt(a.sum(axis=0))
    by_cols = SK.decrypt(a.sum(axis=-1))

    assert total.shape == ()
    assert total == PHE_SK.decrypt(sum(nums.ravel().tolist()))
    np.testing.assert_array_equal(by_rows, [PHE_SK.decrypt(sum(c)) for c in nums.T])
    np.testing.assert_array_equal(by_cols, [PHE_SK.decrypt(sum(r)) for r in nums])


def test_sum_of_an_empty_axis_is_zero() -> None:
    a = PK.encrypt(np.zeros((0, 3)))

    np.testing.assert_array_equal(SK.decrypt(a.sum(axis=0)), [0.0, 0.0, 0.0])


@settings(max_examples=12, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda m: st.tuples(
            hnp.arrays(np.float64, m, elements=st.floats(-100, 100)),
            hnp.arrays(np.float64, (m, 3), elements=st.floats(-10, 10)),
        )
    )
)
def test_encrypted_dot_equals_phe_on_the_same_quantised_matrix(
    case: tuple[np.ndarray, np.ndarray],
) -> None:
    d, x = case
    enc_d = PK.encrypt(d)
    precision = 2.0**-20
    exp_x = -5  # floor(log16(2^-20))
    q = np.rint(np.ldexp(x, 20)).astype(np.int64)

    ours = SK.decrypt(encrypted_dot(x, enc_d, precision=precision))
    phe_pk = PK.to_phe()
    nums = to_phe(enc_d)
    theirs = []
    for j in range(x.shape[1]):
        terms = [
            c * phe.EncodedNumber(phe_pk, int(q[i, j]) % phe_pk.n, exp_x)
            for i, c in enumerate(nums)
        ]
        theirs.append(PHE_SK.decrypt(sum(terms[1:], terms[0])))

    np.testing.assert_array_equal(ours, theirs)
    err_bound = np.abs(d).sum() * 2.0**-21 + 2.0**-40 * np.abs(d).sum() * 10
    assert np.all(np.abs(ours - x.T @ d) <= err_bound + 1e-9)


def test_matmul_operator_forms_agree() -> None:
    rng = np.random.default_rng(1)
    d = rng.uniform(-1, 1, 8)
    w = rng.uniform(-1, 1, (2, 8))
    x = rng.uniform(-1, 1, (8, 3))
    enc_d, enc_w = PK.encrypt(d), PK.encrypt(w)
    tol = 1e-5

    np.testing.assert_allclose(SK.decrypt(x.T @ enc_d), x.T @ d, atol=tol)
    np.testing.assert_allclose(SK.decrypt(enc_d @ x), d @ x, atol=tol)
    np.testing.assert_allclose(SK.decrypt(enc_w @ x), w @ x, atol=tol)
    np.testing.assert_allclose(SK.decrypt(x.T @ enc_w.T), x.T @ w.T, atol=tol)
    np.testing.assert_allclose(SK.decrypt(enc_d @ x[:, 0]), d @ x[:, 0], atol=tol)
    np.testing.assert_array_equal(SK.decrypt(enc_d.matmul_plain_left(x)), SK.decrypt(x.T @ enc_d))
    assert (x.T @ enc_d).shape == (3,) and (enc_w @ x).shape == (2, 3)


def test_matmul_with_integer_matrix_is_exact() -> None:
    d = np.array([0.5, -1.25, 2.0])
    x = np.array([[1, -2], [3, 0], [-4, 5]])

    np.testing.assert_array_equal(SK.decrypt(PK.encrypt(d) @ x), d @ x)


def test_indexing_slicing_reshape_and_transpose_follow_numpy() -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 4) - 5
    a = PK.encrypt(x)

    assert len(a) == 3 and a.shape == (3, 4) and a.size == 12
    np.testing.assert_array_equal(SK.decrypt(a[1]), x[1])
    np.testing.assert_array_equal(SK.decrypt(a[1:, ::2]), x[1:, ::2])
    np.testing.assert_array_equal(SK.decrypt(a[np.array([2, 0])]), x[[2, 0]])
    np.testing.assert_array_equal(SK.decrypt(a[1, 2]), x[1, 2])
    np.testing.assert_array_equal(SK.decrypt(a.reshape(4, -1)), x.reshape(4, -1))
    np.testing.assert_array_equal(SK.decrypt(a.T), x.T)
    np.testing.assert_array_equal(SK.decrypt(a.ravel()), x.ravel())
    assert [SK.decrypt(r).tolist() for r in a] == x.tolist()


def test_exponents_are_aligned_like_phe_decrease_exponent_to() -> None:
    a = PK.encrypt(np.array([1.0, 2.0]), precision=16.0**-2)
    b = PK.encrypt(np.array([0.5, 0.25]), precision=16.0**-6)

    s = a + b
    lowered = a.decrease_exponent_to(-9)

    assert s.exponent == -6
    np.testing.assert_array_equal(SK.decrypt(s), [1.5, 2.25])
    assert lowered.exponent == -9
    np.testing.assert_array_equal(SK.decrypt(lowered), [1.0, 2.0])
    with pytest.raises(ValueError):
        a.decrease_exponent_to(0)


def test_operations_that_could_pass_max_int_raise_before_computing() -> None:
    big = PK.max_int // 2 + 1
    a = PK.encrypt(np.array([big, -big], dtype=object))

    with pytest.raises(PaillierOverflowError):
        a + a
    with pytest.raises(PaillierOverflowError):
        a - a
    with pytest.raises(PaillierOverflowError):
        a * 3
    with pytest.raises(PaillierOverflowError):
        a.sum()
    with pytest.raises(PaillierOverflowError):
        a @ np.array([[2], [0]])
    with pytest.raises(PaillierOverflowError):
        a.decrease_exponent_to(-1)
    # the bound is conservative but not absurd: one more unit of headroom is fine
    np.testing.assert_array_equal(SK.decrypt(a + 1).astype(object), [big + 1, -big + 1])


def test_a_tiny_addend_that_would_drag_the_exponent_past_max_int_raises() -> None:
    # phe would align 274915 to the addend's exponent (about 16^-263) and wrap silently
    a = PK.encrypt(np.array([274915.0]))

    with pytest.raises(PaillierOverflowError):
        a + 1e-300
    np.testing.assert_array_equal(SK.decrypt(a.add(1e-300, precision=2**-20)), [274915.0])


def test_mixing_keys_is_refused() -> None:
    a = PK.encrypt(np.array([1.0]))
    b = OTHER_PK.encrypt(np.array([1.0]))

    with pytest.raises(KeyMismatchError):
        a + b
    with pytest.raises(KeyMismatchError):
        OTHER_SK.decrypt(a)
    with pytest.raises(KeyMismatchError):
        EncryptedVector.from_bytes(a.to_bytes(), OTHER_PK)


def test_shape_mismatches_are_refused() -> None:
    a = PK.encrypt(np.zeros(3))

    with pytest.raises(ShapeMismatchError):
        a + PK.encrypt(np.zeros(4))
    with pytest.raises(ShapeMismatchError):
        a * np.ones(2)
    with pytest.raises(ShapeMismatchError):
        a @ np.ones((4, 2))
    with pytest.raises(ShapeMismatchError):
        a.sum(axis=1)


def test_multiplying_two_ciphertexts_is_refused() -> None:
    a = PK.encrypt(np.ones(2))

    with pytest.raises(TypeError):
        a * a
    with pytest.raises(TypeError):
        a @ a


@pytest.mark.parametrize("bad", ["zero", "n_squared", "multiple_of_p"])
def test_ciphertexts_outside_the_group_are_refused(bad: str) -> None:
    value = {"zero": 0, "n_squared": PK.nsquare, "multiple_of_p": SK.p * 12345}[bad]
    good = PK.encrypt(np.array([1.0, 2.0]))
    data = good.data.copy()
    data[1] = from_mpz([value], PK.limbs)[0] if value < 1 << (64 * PK.limbs) else 0

    with pytest.raises(CiphertextError):
        EncryptedVector.from_limbs(PK, data, good.exponent)
    tampered = EncryptedVector(PK, data, good.exponent, (2,), bound=good.bound)
    with pytest.raises(CiphertextError):
        EncryptedVector.from_bytes(tampered.to_bytes(), PK)


def test_bytes_round_trip_keeps_shape_exponent_bound_and_values() -> None:
    x = np.array([[1.5, -2.0, 3.25], [0.0, 0.5, -1e9]])
    a = PK.encrypt(x)

    raw = a.to_bytes()
    b = EncryptedVector.from_bytes(raw, PK)

    assert (b.shape, b.exponent, b.bound, b.obfuscated) == (a.shape, a.exponent, a.bound, True)
    np.testing.assert_array_equal(b.data, a.data)
    np.testing.assert_array_equal(SK.decrypt(b), x)
    assert len(raw) - a.data.nbytes < 300  # header is small
    assert b"pickle" not in raw


def test_truncated_or_foreign_bytes_are_refused() -> None:
    raw = PK.encrypt(np.ones(3)).to_bytes()

    with pytest.raises(ValueError, match="payload"):
        EncryptedVector.from_bytes(raw[:-8], PK)
    with pytest.raises(ValueError):
        EncryptedVector.from_bytes(PK.to_bytes(), PK)
    for garbage in (b"", b"\xc1", raw[:5]):
        with pytest.raises(ValueError, match="not a fedcrypto"):
            EncryptedVector.from_bytes(garbage, PK)


def test_storage_stays_within_one_and_a_half_times_the_raw_ciphertext_bytes() -> None:
    count = 100_000
    seed = PK.encrypt(np.linspace(-1, 1, 64))
    index = np.arange(count) % 64
    raw_bytes = count * (PK.nsquare.bit_length() + 7) // 8

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        big = seed[index]
        held = tracemalloc.get_traced_memory()[0] - before
        summed = big + big
        held_after_op = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert big.size == count and summed.size == count
    assert held <= 1.5 * raw_bytes
    assert held_after_op <= 2 * 1.5 * raw_bytes  # two vectors alive, no per-element objects
    np.testing.assert_allclose(SK.decrypt(summed[:64]), 2 * np.linspace(-1, 1, 64), atol=1e-15)


def test_thread_and_process_executors_give_the_same_plaintexts() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, 150)
    m = rng.uniform(-1, 1, (150, 4))
    expected_dot = SK.decrypt(encrypted_dot(m, PK.encrypt(x)))

    for executor_type in (ThreadPoolExecutor, ProcessPoolExecutor):
        with executor_type(2) as ex:
            a = PK.encrypt(x, executor=ex, chunk_size=40)
            b = SK.encrypt(x, executor=ex, chunk_size=40)
            total = a.add(b, executor=ex, chunk_size=40).sum(executor=ex, chunk_size=33)
            scaled = a.mul(-0.5, executor=ex, chunk_size=40)
            dot = encrypted_dot(m, a, executor=ex, chunk_size=1)

            np.testing.assert_array_equal(SK.decrypt(a, executor=ex, chunk_size=40), x)
            np.testing.assert_allclose(SK.decrypt(total), 2 * x.sum(), atol=1e-12)
            np.testing.assert_array_equal(SK.decrypt(scaled), -0.5 * x)
            np.testing.assert_array_equal(SK.decrypt(dot), expected_dot)
