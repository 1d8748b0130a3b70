"""Paillier keys: generation rules, byte formats, and conversion to and from phe keys."""

from __future__ import annotations

import numpy as np
import phe
import pytest
from fedcrypto import KeyMismatchError, PrivateKey, PublicKey, generate_keypair


@pytest.fixture(scope="module")
def keys() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(1024, insecure_allow_short=True)


def test_keys_shorter_than_2048_bits_are_refused_without_the_insecure_flag() -> None:
    with pytest.raises(ValueError, match="too short"):
        generate_keypair(1024)


def test_generated_modulus_has_exactly_the_requested_length(
    keys: tuple[PublicKey, PrivateKey],
) -> None:
    pk, sk = keys

    assert pk.n_length == 1024
    assert sk.p * sk.q == pk.n
    assert sk.p < sk.q


def test_public_key_bytes_round_trip(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys

    back = PublicKey.from_bytes(pk.to_bytes(), insecure_allow_short=True)

    assert back == pk
    assert hash(back) == hash(pk)


def test_short_public_key_from_bytes_needs_the_insecure_flag(
    keys: tuple[PublicKey, PrivateKey],
) -> None:
    pk, _ = keys

    with pytest.raises(ValueError, match="too short"):
        PublicKey.from_bytes(pk.to_bytes())


def test_private_key_bytes_round_trip_and_decrypt(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys
    vec = pk.encrypt(np.array([1.5, -2.25]))

    back = PrivateKey.from_bytes(sk.to_bytes(), insecure_allow_short=True)

    assert back == sk
    np.testing.assert_array_equal(back.decrypt(vec), [1.5, -2.25])


def test_key_bytes_with_wrong_format_are_rejected(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, _ = keys

    with pytest.raises(ValueError, match=r"not a fedcrypto\.paillier\.private_key"):
        PrivateKey.from_bytes(pk.to_bytes(), insecure_allow_short=True)
    with pytest.raises(ValueError):
        PublicKey.from_bytes(b"\x93garbage", insecure_allow_short=True)


def test_private_key_rejects_factors_that_do_not_match(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys

    with pytest.raises(KeyMismatchError):
        PrivateKey(pk, sk.p, sk.q + 2)
    with pytest.raises(ValueError, match="differ"):
        PrivateKey(pk, sk.p, sk.p)


def test_phe_keys_convert_both_ways(keys: tuple[PublicKey, PrivateKey]) -> None:
    pk, sk = keys

    phe_pk, phe_sk = pk.to_phe(), sk.to_phe()
    back_pk = PublicKey.from_phe(phe_pk, insecure_allow_short=True)
    back_sk = PrivateKey.from_phe(phe_sk, insecure_allow_short=True)

    assert isinstance(phe_pk, phe.PaillierPublicKey)
    assert phe_pk.n == pk.n and phe_sk.p * phe_sk.q == pk.n
    assert back_pk == pk and back_sk == sk


def test_phe_generated_key_decrypts_what_fedcrypto_encrypts_under_it() -> None:
    phe_pk, phe_sk = phe.generate_paillier_keypair(n_length=1024)
    pk = PublicKey.from_phe(phe_pk, insecure_allow_short=True)

    vec = pk.encrypt(np.array([0.125, -7.0, 3.0]))
    sk = PrivateKey.from_phe(phe_sk, insecure_allow_short=True)

    np.testing.assert_array_equal(sk.decrypt(vec), [0.125, -7.0, 3.0])
