"""The fixed-point contract: one base-16 exponent per vector, phe's rules, stated error bound."""

from __future__ import annotations

import math
from fractions import Fraction

import hypothesis.extra.numpy as hnp
import numpy as np
import phe
import pytest
from fedcrypto import PaillierOverflowError, PrivateKey, PublicKey
from fedcrypto.paillier.encoding import decode, encode, float_exponent
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fedcrypto.paillier_keys import PK, SK

PHE_PK = PK.to_phe()

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.one_of(finite, st.floats(min_value=-1.0, max_value=1.0)))
def test_a_single_float_encodes_exactly_like_phe(x: float) -> None:
    ours = encode(np.array(x), PK.max_int)
    theirs = phe.EncodedNumber.encode(PHE_PK, x)

    assert ours.exponent == theirs.exponent
    assert int(ours.mantissas) % PK.n == theirs.encoding


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=6), elements=finite))
def test_default_float_encoding_is_within_2_to_minus_53_of_the_largest_magnitude(
    x: np.ndarray,
) -> None:
    enc = encode(x, PK.max_int)
    max_abs = float(np.max(np.abs(x)))

    unit = Fraction(16) ** enc.exponent
    pairs = zip(enc.mantissas.ravel(), x.ravel(), strict=True)
    errors = [abs(int(m) * unit - Fraction(float(v))) for m, v in pairs]

    assert enc.exponent == float_exponent(max_abs)
    # the documented contract: |encoded - x| <= 16^e / 2 <= 2^-53 * max|x|
    assert all(err <= unit / 2 for err in errors)
    assert unit / 2 <= Fraction(2) ** -53 * Fraction(max_abs) or max_abs == 0


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 12), elements=finite))
def test_decrypted_floats_are_the_nearest_float_to_the_encoded_value(x: np.ndarray) -> None:
    vec = PK.encrypt(x)

    back = SK.decrypt(vec)

    bound = 2.0**-53 * float(np.max(np.abs(x)))
    assert np.all(np.abs(back - x) <= bound + np.spacing(np.abs(x)) / 2)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-1e6, 1e6)),
    st.sampled_from([2.0**-8, 1e-4, 2.0**-20, 1e-9]),
)
def test_explicit_precision_bounds_the_round_trip_error(x: np.ndarray, precision: float) -> None:
    vec = PK.encrypt(x, precision=precision)

    back = SK.decrypt(vec)

    assert vec.exponent == math.floor(math.log(precision, 16))
    assert np.max(np.abs(back - x)) <= 16.0**vec.exponent / 2 * (1 + 1e-12) + 1e-16 * np.max(
        np.abs(x)
    )


def test_integers_encode_exactly_with_exponent_zero() -> None:
    x = np.array([0, 1, -1, 2**62, -(2**62)], dtype=np.int64)

    vec = PK.encrypt(x)
    back = SK.decrypt(vec)

    assert vec.exponent == 0
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, x)


def test_big_python_ints_up_to_max_int_round_trip() -> None:
    x = np.array([PK.max_int, -PK.max_int, 12345], dtype=object)

    back = SK.decrypt(PK.encrypt(x))

    assert [int(v) for v in back] == [PK.max_int, -PK.max_int, 12345]


def test_values_beyond_max_int_are_refused_before_encryption() -> None:
    with pytest.raises(PaillierOverflowError):
        PK.encrypt(np.array([PK.max_int + 1], dtype=object))
    with pytest.raises(PaillierOverflowError):
        PK.encrypt(np.array([1e300]), precision=1e-300)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_infinite_plaintexts_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        PK.encrypt(np.array([1.0, bad]))


def test_non_numeric_plaintexts_are_refused() -> None:
    with pytest.raises(TypeError):
        PK.encrypt(np.array(["a", "b"]))


def test_decode_flags_residues_in_the_overflow_band() -> None:
    middle = PK.n // 2

    with pytest.raises(PaillierOverflowError):
        decode([middle], 0, PK.n, PK.max_int)


def test_float_results_decode_exactly_like_phe_for_large_mantissas() -> None:
    # a mantissa above 2^53 takes the exact int / int path; phe does the same division
    mantissa = 3**40 + 1
    ours = decode([type(PK.n)(mantissa)], -20, PK.n, PK.max_int)
    theirs = phe.EncodedNumber(PHE_PK, mantissa, -20).decode()

    assert ours[0] == theirs


def test_private_key_type_is_exported() -> None:
    assert isinstance(SK, PrivateKey) and isinstance(PK, PublicKey)
