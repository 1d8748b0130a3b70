"""phe 1.5 interoperability: phe decrypts fedcrypto ciphertexts and fedcrypto decrypts phe's."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import phe
import pytest
from fedcrypto import KeyMismatchError, PaillierOverflowError, from_phe, to_phe
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fedcrypto.paillier_keys import PK, SK

PHE_PK, PHE_SK = PK.to_phe(), SK.to_phe()

values = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=20, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 12), elements=values))
def test_phe_private_key_decrypts_fedcrypto_ciphertexts(x: np.ndarray) -> None:
    vec = PK.encrypt(x)

    numbers = to_phe(vec)

    assert all(isinstance(c, phe.EncryptedNumber) for c in numbers)
    assert [PHE_SK.decrypt(c) for c in numbers] == SK.decrypt(vec).tolist()
    assert np.all(
        np.abs(SK.decrypt(vec) - x) <= 2.0**-53 * np.max(np.abs(x)) + np.spacing(np.abs(x))
    )


moderate = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-30, max_value=1e9),
    st.floats(min_value=-1e9, max_value=-1e-30),
    st.integers(-(10**9), 10**9),
)


@settings(max_examples=20, deadline=None)
@given(st.lists(moderate, min_size=1, max_size=12))
def test_fedcrypto_decrypts_phe_ciphertexts_with_mixed_exponents(xs: list[float]) -> None:
    numbers = [PHE_PK.encrypt(v) for v in xs]

    vec = from_phe(numbers, public_key=PK, value_bound=max(abs(v) for v in xs))

    assert vec.exponent == min(c.exponent for c in numbers)
    assert SK.decrypt(vec).tolist() == [PHE_SK.decrypt(c) for c in numbers]


def test_mixed_exponents_need_a_bound_that_proves_alignment_is_safe() -> None:
    numbers = [PHE_PK.encrypt(1.0), PHE_PK.encrypt(2.2250738585e-313)]

    with pytest.raises(PaillierOverflowError, match="value_bound"):
        from_phe(numbers, public_key=PK)
    with pytest.raises(PaillierOverflowError, match="max_int"):
        from_phe(numbers, public_key=PK, value_bound=1.0)


def test_from_phe_builds_its_own_key_and_keeps_a_shape() -> None:
    numbers = [PHE_PK.encrypt(float(v)) for v in range(6)]

    vec = from_phe(numbers, shape=(2, 3), insecure_allow_short=True, value_bound=5.0)

    assert vec.shape == (2, 3) and vec.public_key == PK
    np.testing.assert_array_equal(SK.decrypt(vec), np.arange(6.0).reshape(2, 3))


def test_phe_numbers_without_a_stated_bound_refuse_growth_but_decrypt() -> None:
    numbers = [PHE_PK.encrypt(1.5), PHE_PK.encrypt(-2.0)]  # both at exponent -14

    unknown = from_phe(numbers, public_key=PK)
    known = from_phe(numbers, public_key=PK, value_bound=2.0)

    np.testing.assert_array_equal(SK.decrypt(unknown), [1.5, -2.0])
    with pytest.raises(PaillierOverflowError, match="max_int"):
        unknown + unknown
    np.testing.assert_array_equal(SK.decrypt(known + known), [3.0, -4.0])


def test_results_of_fedcrypto_operations_decrypt_in_phe() -> None:
    x = np.array([0.5, -1.5, 2.0])
    vec = (PK.encrypt(x) + PK.encrypt(x)) * -3 + 1

    assert [PHE_SK.decrypt(c) for c in to_phe(vec)] == ((x + x) * -3 + 1).tolist()


def test_phe_arithmetic_on_converted_numbers_round_trips_back() -> None:
    vec = PK.encrypt(np.array([1.25, -0.5]))
    numbers = [c * 4 + 1 for c in to_phe(vec)]

    back = from_phe(numbers, public_key=PK, value_bound=6.0)

    np.testing.assert_array_equal(SK.decrypt(back), [6.0, -1.0])


def test_numbers_under_another_key_are_refused() -> None:
    other_pk, _ = phe.generate_paillier_keypair(n_length=1024)

    with pytest.raises(KeyMismatchError):
        from_phe([PHE_PK.encrypt(1.0), other_pk.encrypt(1.0)], public_key=PK)
    with pytest.raises(KeyMismatchError):
        from_phe([other_pk.encrypt(1.0)], public_key=PK)
    with pytest.raises(KeyMismatchError):
        to_phe(PK.encrypt(np.ones(1)), other_pk)
