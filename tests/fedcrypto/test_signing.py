"""Ed25519 signing: round trips, tampering, key formats, bad input."""

from __future__ import annotations

import pytest
from fedcrypto.signing import BadSignature, SigningKey, VerifyKey
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=512))
def test_signature_verifies_for_the_signed_bytes(data: bytes) -> None:
    key = SigningKey.generate()

    signature = key.sign(data)

    assert len(signature) == 64
    key.verify_key().verify(data, signature)


def test_flipping_any_bit_of_data_breaks_the_signature() -> None:
    key = SigningKey.generate()
    data = b"gradient batch 7 for job 42"
    signature = key.sign(data)

    for i in range(len(data) * 8):
        tampered = bytearray(data)
        tampered[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BadSignature):
            key.verify_key().verify(bytes(tampered), signature)


def test_flipping_a_signature_bit_is_rejected() -> None:
    key = SigningKey.generate()
    signature = bytearray(key.sign(b"payload"))
    signature[10] ^= 0x04

    with pytest.raises(BadSignature):
        key.verify_key().verify(b"payload", bytes(signature))


def test_signature_from_another_key_is_rejected() -> None:
    alice, mallory = SigningKey.generate(), SigningKey.generate()

    forged = mallory.sign(b"transfer")

    with pytest.raises(BadSignature):
        alice.verify_key().verify(b"transfer", forged)


def test_bad_signature_is_a_value_error_subclass() -> None:
    key = SigningKey.generate()

    with pytest.raises(ValueError):
        key.verify_key().verify(b"x", bytes(64))


def test_wrong_length_signature_raises_bad_signature() -> None:
    key = SigningKey.generate()

    with pytest.raises(BadSignature, match="64 bytes"):
        key.verify_key().verify(b"x", key.sign(b"x")[:63])


def test_raw_private_key_round_trip_keeps_signatures_identical() -> None:
    key = SigningKey.generate()

    restored = SigningKey.from_bytes(key.to_bytes())

    assert len(key.to_bytes()) == 32
    assert restored.sign(b"abc") == key.sign(b"abc")


def test_rfc8032_test_vector_1() -> None:
    # RFC 8032 section 7.1, TEST 1 (empty message).
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    expected = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    key = SigningKey.from_bytes(seed)

    assert key.verify_key().to_bytes() == public
    assert key.sign(b"") == expected
    VerifyKey.from_bytes(public).verify(b"", expected)


def test_raw_public_key_round_trip() -> None:
    vk = SigningKey.generate().verify_key()

    assert VerifyKey.from_bytes(vk.to_bytes()) == vk


def test_pem_round_trip_unencrypted() -> None:
    key = SigningKey.generate()

    pem = key.to_pem()
    restored = SigningKey.from_pem(pem)

    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert restored.to_bytes() == key.to_bytes()


def test_pem_round_trip_with_password_and_wrong_password_fails() -> None:
    key = SigningKey.generate()

    pem = key.to_pem(password=b"correct horse")

    assert b"ENCRYPTED" in pem
    assert SigningKey.from_pem(pem, password=b"correct horse").to_bytes() == key.to_bytes()
    with pytest.raises(ValueError, match="cannot load"):
        SigningKey.from_pem(pem, password=b"wrong")
    with pytest.raises(ValueError, match="cannot load"):
        SigningKey.from_pem(pem)


def test_public_pem_round_trip() -> None:
    vk = SigningKey.generate().verify_key()

    pem = vk.to_pem()

    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert VerifyKey.from_pem(pem) == vk


def test_public_pem_given_as_private_pem_is_refused() -> None:
    vk = SigningKey.generate().verify_key()

    with pytest.raises(ValueError):
        SigningKey.from_pem(vk.to_pem())


def test_non_ed25519_pem_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub_pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    with pytest.raises(ValueError, match="not an Ed25519"):
        SigningKey.from_pem(pem)
    with pytest.raises(ValueError, match="not an Ed25519"):
        VerifyKey.from_pem(pub_pem)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_key_sizes_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey.from_bytes(bytes(size))
    with pytest.raises(ValueError, match="32 bytes"):
        VerifyKey.from_bytes(bytes(size))


def test_non_bytes_input_is_a_type_error() -> None:
    key = SigningKey.generate()

    with pytest.raises(TypeError):
        key.sign("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SigningKey.from_bytes("0" * 32)  # type: ignore[arg-type]


def test_fingerprint_is_sha256_hex_of_public_key_and_distinguishes_keys() -> None:
    import hashlib

    a, b = SigningKey.generate().verify_key(), SigningKey.generate().verify_key()

    assert a.fingerprint() == hashlib.sha256(a.to_bytes()).hexdigest()
    assert len(a.fingerprint()) == 64
    assert a.fingerprint() != b.fingerprint()


def test_repr_does_not_leak_the_secret() -> None:
    key = SigningKey.generate()

    assert key.to_bytes().hex() not in repr(key)
