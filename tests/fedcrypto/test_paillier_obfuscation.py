"""Obfuscation modes (DJN, textbook, CRT, none), re-randomisation and the single-use pool."""

from __future__ import annotations

import numpy as np
import pytest
from fedcrypto import (
    KeyMismatchError,
    ObfuscatorPool,
    ObfuscatorPoolExhausted,
    PrivateKey,
    PublicKey,
    to_phe,
)
from fedcrypto.paillier.limbs import to_mpz

from tests.fedcrypto.paillier_keys import OTHER_PK, PK, SK

PHE_SK = SK.to_phe()
X = np.array([0.0, 1.0, -1.0, 0.375, 12345.678])


@pytest.fixture(params=["public", "private"])
def key(request: pytest.FixtureRequest) -> PublicKey | PrivateKey:
    """The key that encrypts: the public key, or the key holder's private key (CRT)."""
    return PK if request.param == "public" else SK


def ciphertexts(vec: object) -> list[int]:
    return [int(c) for c in to_mpz(vec.data)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("obfuscation", ["djn", "textbook"])
def test_every_obfuscation_mode_decrypts_with_fedcrypto_and_phe(
    obfuscation: str, key: PublicKey | PrivateKey
) -> None:

    vec = key.encrypt(X, obfuscation=obfuscation)  # type: ignore[arg-type]

    np.testing.assert_array_equal(SK.decrypt(vec), X)
    assert [PHE_SK.decrypt(c) for c in to_phe(vec)] == X.tolist()
    assert vec.obfuscated


@pytest.mark.parametrize("obfuscation", ["djn", "textbook"])
def test_encrypting_the_same_values_twice_gives_unrelated_ciphertexts(
    obfuscation: str, key: PublicKey | PrivateKey
) -> None:
    same = np.zeros(50)

    first = ciphertexts(key.encrypt(same, obfuscation=obfuscation))  # type: ignore[arg-type]
    second = ciphertexts(key.encrypt(same, obfuscation=obfuscation))  # type: ignore[arg-type]

    assert len(set(first) | set(second)) == 100
    assert all(c != 1 for c in first)


def test_unobfuscated_encryption_is_the_deterministic_one_plus_m_n() -> None:
    vec = PK.encrypt(np.array([3, -3]), obfuscate=False)

    assert ciphertexts(vec) == [1 + 3 * PK.n, (1 + (PK.n - 3) * PK.n) % PK.nsquare]
    assert not vec.obfuscated
    np.testing.assert_array_equal(SK.decrypt(vec), [3, -3])


def test_djn_obfuscators_are_powers_of_the_keys_base_and_n_th_residues() -> None:
    # hs = (-x^2)^n mod n^2 is an n-th residue, so c^(lambda) kills it: decryption of 0 is 0
    vec = PK.encrypt(np.zeros(5, dtype=np.int64))
    lam = (SK.p - 1) * (SK.q - 1)

    assert all(pow(c, lam, int(PK.nsquare)) == 1 for c in ciphertexts(vec))
    assert PK.djn_base == pow(PK.djn_base, 1, int(PK.nsquare))
    assert PK.precompute().exponent_bits == 512


def test_obfuscate_rerandomises_results_without_changing_plaintexts() -> None:
    a = PK.encrypt(X) * 2

    fresh = a.obfuscate()
    by_holder = a.obfuscate(key=SK, obfuscation="textbook")

    assert not a.obfuscated and fresh.obfuscated
    assert set(ciphertexts(fresh)).isdisjoint(ciphertexts(a))
    assert set(ciphertexts(by_holder)).isdisjoint(ciphertexts(a))
    np.testing.assert_array_equal(SK.decrypt(fresh), 2 * X)
    np.testing.assert_array_equal(SK.decrypt(by_holder), 2 * X)


def test_pool_obfuscators_are_handed_out_once_and_then_gone() -> None:
    pool = ObfuscatorPool(SK, 8)

    first = pool.take(3)
    second = pool.take(3)

    assert pool.remaining == 2 and len(pool) == 2
    taken = {int(c) for c in to_mpz(np.concatenate([first, second]))}
    assert len(taken) == 6
    # the pool's own storage no longer holds what it handed out
    assert not np.any(pool._store[:6])


def test_encrypting_with_a_pool_consumes_it_and_decrypts() -> None:
    pool = ObfuscatorPool(PK, 10)

    a = PK.encrypt(X, pool=pool)
    b = SK.encrypt(X, pool=pool)

    assert pool.remaining == 0
    assert set(ciphertexts(a)).isdisjoint(ciphertexts(b))
    np.testing.assert_array_equal(SK.decrypt(a), X)
    np.testing.assert_array_equal(SK.decrypt(b), X)


def test_an_exhausted_pool_raises_unless_it_refills() -> None:
    strict = ObfuscatorPool(PK, 2)
    refilling = ObfuscatorPool(PK, 2, refill=True)

    with pytest.raises(ObfuscatorPoolExhausted):
        PK.encrypt(X, pool=strict)
    vec = PK.encrypt(X, pool=refilling)

    assert strict.remaining == 2  # a failed take consumes nothing
    assert refilling.remaining == 0
    np.testing.assert_array_equal(SK.decrypt(vec), X)


def test_a_pool_for_another_key_is_refused() -> None:
    pool = ObfuscatorPool(OTHER_PK, 10)

    with pytest.raises(KeyMismatchError):
        PK.encrypt(X, pool=pool)
    with pytest.raises(KeyMismatchError):
        PK.encrypt(X).obfuscate(pool=pool)


def test_pool_with_obfuscate_false_is_a_contradiction() -> None:
    with pytest.raises(ValueError):
        PK.encrypt(X, obfuscate=False, pool=ObfuscatorPool(PK, 5))


def test_unknown_obfuscation_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown obfuscation"):
        PK.encrypt(X, obfuscation="none")  # type: ignore[arg-type]
