"""The gateway's envelope bytes without re-packing the payload (envelope_bytes.py) are exactly
fedschemas' canonical and wire bytes; non-canonical input is verified in its canonical form."""

from __future__ import annotations

import datetime as dt
import os

import msgpack
import pytest
from fedcrypto.signing import SigningKey
from fedgateway.envelope_bytes import canonical_and_head, canonical_of_wire, wire_from_canonical
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
    assert canonical_of_wire(wire, decoded) == canonical_bytes(decoded)
    key.verify_key().verify(canonical_of_wire(wire, decoded), decoded.signature)


def test_canonical_and_wire_helpers_round_trip_an_unsigned_envelope():
    env = _envelope(b"x" * 5000)
    canonical, head_len = canonical_and_head(env)
    assert canonical == canonical_bytes(env)
    assert wire_from_canonical(canonical, head_len, None) == encode_envelope(env)


def test_non_canonical_wire_is_verified_in_its_canonical_form():
    # Prepare: the same envelope with `attempt` written as a uint64 (msgpack allows it; the
    # canonical form uses the shortest encoding) and signed over those non-canonical bytes.
    key = SigningKey.generate()
    env = _envelope(os.urandom(1000)).model_copy(update={"signer_key_id": "k1"})
    items = msgpack.unpackb(encode_envelope(env), raw=False)
    attempt_at = 6
    assert items[attempt_at] == 3
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_array_header(len(items) - 1)]
    for i, item in enumerate(items[:-1]):
        parts.append(b"\xcf" + (3).to_bytes(8, "big") if i == attempt_at else packer.pack(item))
    non_canonical = b"".join(parts)
    wire = packer.pack_array_header(len(items)) + b"".join(parts[1:])
    wire += packer.pack(key.sign(non_canonical))
    decoded = decode_envelope(wire)
    # Execute
    signed = canonical_of_wire(wire, decoded)
    # Assert: the bytes checked are the canonical ones, so the non-canonical signature fails
    assert signed == canonical_bytes(decoded) != non_canonical
    with pytest.raises(ValueError):
        key.verify_key().verify(signed, decoded.signature)
