"""The gateway's wire bytes without re-packing the payload (envelope_bytes.py) are exactly
fedschemas' encoding, and what it signs verifies over the payload digest's signed bytes."""

from __future__ import annotations

import datetime as dt
import os

import msgpack
import pytest
from fedcrypto.signing import SigningKey
from fedgateway.envelope_bytes import wire_bytes
from fedgateway.relay import Signer, sign_envelope
from fedschemas import (
    FederationData,
    PartyRef,
    canonical_bytes,
    decode_envelope,
    encode_envelope,
    new_envelope,
)

NOW = dt.datetime.now(dt.UTC)


def _envelope(blob: bytes, *, deadline: dt.datetime | None = None):
    env = new_envelope(
        FederationData(kind="ciphertext_vector", blob=blob, blob_format="fedcrypto.paillier.v1"),
        job_id="j",
        component="c",
        task_id="t",
        attempt=3,
        source=PartyRef(party_id="9999", role="guest"),
        destination=PartyRef(party_id="10000", role="host"),
        tag="grad",
        iteration=7,
        seq=1,
        created_at=NOW,
    )
    return env if deadline is None else env.model_copy(update={"deadline": deadline})


# payload sizes around msgpack's bin8 / bin16 / bin32 boundaries
@pytest.mark.parametrize("size", [0, 200, 300, 70_000, 1 << 20])
@pytest.mark.parametrize("with_deadline", [False, True])
def test_signed_wire_bytes_equal_fedschemas_encoding(size, with_deadline):
    # Prepare
    env = _envelope(
        os.urandom(size), deadline=NOW + dt.timedelta(seconds=30) if with_deadline else None
    )
    key = SigningKey.generate()
    # Execute
    wire = sign_envelope(env, Signer(key=key, key_id="k1"))
    # Assert: what fedschemas itself would have produced, and it verifies
    expected = env.model_copy(update={"signer_key_id": "k1"})
    expected = expected.model_copy(update={"signature": key.sign(canonical_bytes(expected))})
    assert wire == encode_envelope(expected)
    decoded = decode_envelope(wire)
    key.verify_key().verify(canonical_bytes(decoded), decoded.signature)


@pytest.mark.parametrize("with_deadline", [False, True])
def test_wire_bytes_of_an_unsigned_envelope_equal_fedschemas_encoding(with_deadline):
    env = _envelope(b"x" * 5000, deadline=NOW + dt.timedelta(seconds=30) if with_deadline else None)
    assert wire_bytes(env) == encode_envelope(env)


def test_a_signature_over_the_payload_itself_no_longer_verifies():
    # Prepare: signed as builds before the payload digest signed (the wire array minus the
    # signature, payload included)
    key = SigningKey.generate()
    env = _envelope(os.urandom(1000)).model_copy(update={"signer_key_id": "k1"})
    items = msgpack.unpackb(encode_envelope(env), raw=False)[:-1]
    old_style = env.model_copy(
        update={"signature": key.sign(msgpack.packb(items, use_bin_type=True))}
    )
    decoded = decode_envelope(wire_bytes(old_style))
    # Execute / Assert: the verifier's bytes are the payload digest's, so it fails closed
    with pytest.raises(ValueError):
        key.verify_key().verify(canonical_bytes(decoded), decoded.signature)
