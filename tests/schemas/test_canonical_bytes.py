"""canonical_bytes: what a signature covers; fixed layout, independent of how it was built."""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgpack
import pytest
from fedschemas import (
    DemoPing,
    DemoPong,
    Envelope,
    PartyRef,
    canonical_bytes,
    decode_envelope,
    encode_envelope,
    encode_payload,
)
from fedschemas.envelope import ENVELOPE_FORMAT, SIGNED_FORMAT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

GUEST = PartyRef(party_id="9999", role="guest")
HOST = PartyRef(party_id="10000", role="host")
CREATED = datetime(2026, 11, 22, 7, 47, 45, 123456, tzinfo=UTC)


def _mp_str(s: str) -> bytes:
    raw = s.encode()
    if len(raw) < 32:
        return bytes([0xA0 | len(raw)]) + raw
    assert len(raw) < 256
    return b"\xd9" + bytes([len(raw)]) + raw


def _mp_uint(n: int) -> bytes:
    if n < 128:
        return bytes([n])
    if n < 2**8:
        return b"\xcc" + struct.pack(">B", n)
    if n < 2**16:
        return b"\xcd" + struct.pack(">H", n)
    if n < 2**32:
        return b"\xce" + struct.pack(">I", n)
    return b"\xcf" + struct.pack(">Q", n)


def _mp_bin(b: bytes) -> bytes:
    assert len(b) < 256
    return b"\xc4" + bytes([len(b)]) + b


def test_layout_matches_the_byte_by_byte_description_in_docs(
    make_envelope: Callable[..., Envelope],
) -> None:
    # Prepare: the envelope and, independently of msgpack, the bytes docs/wire.md describes.
    env = make_envelope()
    micros = 1795333665123456  # 2026-11-22T07:47:45.123456Z
    expected = (
        b"\xdc\x00\x12"  # array16 with 18 elements
        + _mp_str("fedmq.envelope.v1.payload-sha256")
        + _mp_str(env.message_id)
        + _mp_uint(1)
        + _mp_str("demo.ping")
        + _mp_str("job-202611220747")
        + _mp_str("job-202611220747:lr_0")
        + _mp_uint(2)
        + _mp_str("9999")
        + _mp_str("guest")
        + _mp_str("10000")
        + _mp_str("host")
        + _mp_str("lr.gradient")
        + _mp_uint(7)
        + _mp_uint(3)
        + _mp_uint(micros)
        + _mp_str(env.traceparent or "")
        + _mp_str("9999-k1")
        + _mp_bin(hashlib.sha256(env.payload).digest())  # the payload by its SHA-256
    )

    # Execute
    actual = canonical_bytes(env)

    # Assert
    assert actual == expected


def test_optional_fields_left_empty_are_msgpack_nil(
    make_envelope: Callable[..., Envelope],
) -> None:
    env = make_envelope(traceparent=None, signer_key_id=None, iteration=-1)

    data = canonical_bytes(env)

    # iteration -1 is the negative fixint 0xff (then seq 3); the two absent optionals are nil
    # (0xc0) just before the payload digest's bin8 header.
    assert b"lr.gradient\xff\x03" in data
    assert data.endswith(b"\xc0\xc0" + b"\xc4\x20" + hashlib.sha256(env.payload).digest())


def test_signed_bytes_stay_small_for_a_large_payload(
    make_envelope: Callable[..., Envelope],
) -> None:
    # Prepare: 4 MiB of payload, and the same envelope with one payload byte changed
    payload = bytearray(random.Random(3).randbytes(4 << 20))
    big = make_envelope(payload=bytes(payload))
    payload[len(payload) // 2] ^= 1
    flipped = make_envelope(payload=bytes(payload))

    # Execute
    signed, signed_flipped = canonical_bytes(big), canonical_bytes(flipped)

    # Assert: what Ed25519 hashes is a few hundred bytes, and it still commits to every byte
    assert len(signed) < 400
    assert signed != signed_flipped


def test_signed_bytes_are_in_their_own_domain(make_envelope: Callable[..., Envelope]) -> None:
    # Prepare: the envelope whose payload is this one's digest, as builds before the payload
    # digest signed it (the wire array minus the signature, under ENVELOPE_FORMAT)
    env = make_envelope()
    digest = hashlib.sha256(env.payload).digest()
    as_before = msgpack.unpackb(encode_envelope(env.model_copy(update={"payload": digest})))[:-1]

    # Execute
    items = msgpack.unpackb(canonical_bytes(env))

    # Assert: the same elements but the first, so no signature can vouch for both
    assert SIGNED_FORMAT != ENVELOPE_FORMAT
    assert items[0] == SIGNED_FORMAT and as_before[0] == ENVELOPE_FORMAT
    assert items[1:] == as_before[1:]


def test_same_fields_built_in_any_order_give_the_same_bytes(
    envelope_kwargs: Callable[..., dict[str, Any]],
) -> None:
    # Prepare: one field set, passed in several random orders and through dict validation.
    fields = envelope_kwargs()
    rng = random.Random(7)
    orders = []
    for _ in range(5):
        names = list(fields)
        rng.shuffle(names)
        orders.append({name: fields[name] for name in names})

    # Execute
    from_kwargs = [canonical_bytes(Envelope(**order)) for order in orders]
    as_dicts = {
        **{k: v for k, v in fields.items() if k not in ("source", "destination")},
        "destination": {"role": "host", "party_id": "10000"},
        "source": {"role": "guest", "party_id": "9999"},
    }
    from_validate = canonical_bytes(Envelope.model_validate(as_dicts, strict=False))

    # Assert
    assert len(set(from_kwargs)) == 1
    assert from_validate == from_kwargs[0]


def test_the_same_instant_in_another_timezone_gives_the_same_bytes(
    make_envelope: Callable[..., Envelope],
) -> None:
    tokyo = timezone(timedelta(hours=9))

    utc_bytes = canonical_bytes(make_envelope(created_at=CREATED))
    tokyo_bytes = canonical_bytes(make_envelope(created_at=CREATED.astimezone(tokyo)))

    assert tokyo_bytes == utc_bytes


def test_bytes_survive_a_wire_round_trip(make_envelope: Callable[..., Envelope]) -> None:
    env = make_envelope()

    decoded = decode_envelope(encode_envelope(env))

    assert canonical_bytes(decoded) == canonical_bytes(env)


# One changed value per signed field: every one of them must change the signed bytes.
SIGNED_CHANGES: dict[str, Any] = {
    "message_id": "0123456789abcdef0123456789abcdee",
    "type": "demo.pong",
    "job_id": "job-202611220748",
    "task_id": "job-202611220747:lr_1",
    "attempt": 3,
    "source": PartyRef(party_id="9998", role="guest"),
    "destination": PartyRef(party_id="10000", role="arbiter"),
    "tag": "lr.hessian",
    "iteration": 8,
    "seq": 4,
    "created_at": CREATED + timedelta(microseconds=1),
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    "signer_key_id": "9999-k2",
    "payload": encode_payload(DemoPing(text="hello", n=2)),
    "deadline": CREATED + timedelta(seconds=1),
}


def test_every_envelope_field_except_signature_is_covered() -> None:
    # schema_version is checked in test_versioning (demo.ping has only version 1).
    covered = set(SIGNED_CHANGES) | {"schema_version", "signature"}

    assert covered == set(Envelope.model_fields)


@pytest.mark.parametrize("field", sorted(SIGNED_CHANGES))
def test_changing_a_signed_field_changes_the_bytes(
    field: str, make_envelope: Callable[..., Envelope]
) -> None:
    # Prepare
    original = make_envelope()
    overrides: dict[str, Any] = {field: SIGNED_CHANGES[field]}
    if field == "type":
        overrides["payload"] = encode_payload(DemoPong(text="hello", n=1))

    # Execute
    changed = make_envelope(**overrides)

    # Assert
    assert canonical_bytes(changed) != canonical_bytes(original)


def test_party_role_and_id_swaps_change_the_bytes(
    make_envelope: Callable[..., Envelope],
) -> None:
    forward = make_envelope(source=GUEST, destination=HOST)
    backward = make_envelope(source=HOST, destination=GUEST)

    assert canonical_bytes(forward) != canonical_bytes(backward)


def test_signature_is_not_covered_but_travels_on_the_wire(
    make_envelope: Callable[..., Envelope],
) -> None:
    signed = make_envelope(signature=b"\x01" * 64)
    other = make_envelope(signature=b"\x02" * 64)
    unsigned = make_envelope(signature=None)

    assert canonical_bytes(signed) == canonical_bytes(other) == canonical_bytes(unsigned)
    assert encode_envelope(signed) != encode_envelope(other)
    assert decode_envelope(encode_envelope(signed)).signature == b"\x01" * 64
    assert decode_envelope(encode_envelope(unsigned)).signature is None


_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True)
_party = st.builds(
    PartyRef,
    party_id=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    role=st.sampled_from(["guest", "host", "arbiter", "local"]),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    message_id=_ids,
    job_id=_ids,
    tag=_ids,
    attempt=st.integers(0, 2**63 - 1),
    iteration=st.integers(-1, 2**63 - 1),
    seq=st.integers(0, 2**40),
    source=_party,
    destination=_party,
    micros=st.integers(-(2**50), 2**52),
    payload=st.binary(max_size=300),
    signature=st.none() | st.binary(min_size=64, max_size=64),
)
def test_any_valid_envelope_round_trips_with_identical_signed_bytes(
    envelope_kwargs: Callable[..., dict[str, Any]],
    message_id: str,
    job_id: str,
    tag: str,
    attempt: int,
    iteration: int,
    seq: int,
    source: PartyRef,
    destination: PartyRef,
    micros: int,
    payload: bytes,
    signature: bytes | None,
) -> None:
    # Prepare
    env = Envelope(
        **envelope_kwargs(
            message_id=message_id,
            job_id=job_id,
            task_id="",
            tag=tag,
            attempt=attempt,
            iteration=iteration,
            seq=seq,
            source=source,
            destination=destination,
            created_at=CREATED + timedelta(microseconds=micros),
            payload=payload,
            signature=signature,
        )
    )

    # Execute
    decoded = decode_envelope(encode_envelope(env))

    # Assert
    assert decoded == env
    assert canonical_bytes(decoded) == canonical_bytes(env)


def test_replace_revalidates_the_copy(make_envelope: Callable[..., Envelope]) -> None:
    env = make_envelope(signature=None)

    signed = env.replace(signature=b"\x05" * 64, signer_key_id="9999-k2")

    assert signed.signature == b"\x05" * 64
    assert env.signature is None
    with pytest.raises(ValidationError, match="traceparent"):
        env.replace(traceparent="not-a-trace")
    with pytest.raises(ValidationError, match="signature"):
        env.replace(signature=b"short")
