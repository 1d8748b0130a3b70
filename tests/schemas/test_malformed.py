"""Every kind of bad input is refused with MalformedMessage and a reason naming the problem."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgpack
import pytest
from fedschemas import (
    ENVELOPE_FORMAT,
    ControlHeartbeat,
    DemoPing,
    Envelope,
    MalformedMessage,
    decode_envelope,
    decode_payload,
    encode_envelope,
    encode_payload,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError


def _items(env: Envelope) -> list[Any]:
    items: list[Any] = msgpack.unpackb(encode_envelope(env), raw=False)
    return items


def _pack(items: Any) -> bytes:
    data: bytes = msgpack.packb(items, use_bin_type=True)
    return data


def _refused(data: bytes, **kwargs: Any) -> str:
    with pytest.raises(MalformedMessage) as caught:
        decode_envelope(data, **kwargs)
    return caught.value.reason


# Position of each field in the wire array (0 is the format string).
POS = {
    "message_id": 1,
    "schema_version": 2,
    "type": 3,
    "job_id": 4,
    "task_id": 5,
    "attempt": 6,
    "source.party_id": 7,
    "source.role": 8,
    "destination.party_id": 9,
    "destination.role": 10,
    "tag": 11,
    "iteration": 12,
    "seq": 13,
    "created_at": 14,
    "traceparent": 15,
    "signer_key_id": 16,
    "payload": 17,
    "signature": 18,
}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not valid msgpack"),
        (b"\xc1", "not valid msgpack"),  # 0xc1 is never used in msgpack
        (b"GET / HTTP/1.1\r\n\r\n", "extra bytes after the message"),
        (b"\x91" * 5000, "nested too deeply"),
        (b"\xa2\xff\xfe", "not valid UTF-8"),
        (b"\xdc\xff\xff", "a length is longer than the input"),
        (b"\xd4\x01\x02", "must be a msgpack array, got ExtType"),
        (b"\x81\xa1a\x01", "must be a msgpack array, got dict"),
        (b"\xa5hello", "must be a msgpack array, got str"),
        (b"\x90", "no format string"),
        (_pack(["something.else", 1]), "wrong format string"),
        (_pack(["fedmq.envelope.v2", 1]), "unknown envelope format 'fedmq.envelope.v2'"),
        (_pack([ENVELOPE_FORMAT, 1, 2]), "has 3 elements"),
    ],
    ids=[
        "empty",
        "reserved-byte",
        "http",
        "deep-nesting",
        "bad-utf8",
        "lying-length",
        "ext-type",
        "map",
        "string",
        "empty-array",
        "foreign-format",
        "future-format",
        "short-array",
    ],
)
def test_garbage_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    assert reason in _refused(data)


def test_truncated_envelopes_are_refused(make_envelope: Callable[..., Envelope]) -> None:
    data = encode_envelope(make_envelope())

    for cut in (1, 3, 20, len(data) // 2, len(data) - 1):
        assert "truncated" in _refused(data[:cut])


def test_trailing_bytes_are_refused(make_envelope: Callable[..., Envelope]) -> None:
    data = encode_envelope(make_envelope())

    assert "extra bytes" in _refused(data + b"\x00")


def test_an_extra_element_is_refused(make_envelope: Callable[..., Envelope]) -> None:
    items = _items(make_envelope())

    assert "has 20 elements" in _refused(_pack([*items, "extra"]))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("message_id", 123, "'message_id'"),
        ("message_id", "has spaces in it", "'message_id'"),
        ("schema_version", "1", "'schema_version'"),
        ("attempt", "1", "'attempt'"),
        ("attempt", True, "'attempt'"),
        ("attempt", -1, "'attempt'"),
        ("attempt", 1.0, "'attempt'"),
        ("iteration", -2, "'iteration'"),
        ("seq", None, "'seq'"),
        ("source.party_id", "99 99", "field 'source.party_id'"),
        ("destination.role", "admin", "field 'destination.role'"),
        ("tag", "", "'tag'"),
        ("job_id", b"job-1", "'job_id'"),
        ("created_at", "2026-11-22T07:47:45Z", "'created_at'"),
        ("created_at", 2**62, "'created_at': out of range"),
        ("traceparent", "00-zz", "'traceparent'"),
        ("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "W3C"),
        ("payload", "text, not bin", "'payload'"),
        ("signature", b"\x00" * 63, "'signature'"),
        ("signature", "sig", "'signature'"),
        ("signer_key_id", "", "'signer_key_id'"),
    ],
)
def test_fields_of_the_wrong_type_or_range_are_refused_naming_the_field(
    field: str, value: Any, reason: str, make_envelope: Callable[..., Envelope]
) -> None:
    items = _items(make_envelope())
    items[POS[field]] = value

    assert reason in _refused(_pack(items))


def test_unknown_message_type_is_refused(make_envelope: Callable[..., Envelope]) -> None:
    items = _items(make_envelope())
    items[POS["type"]] = "demo.nonexistent"

    assert "unknown message type 'demo.nonexistent'" in _refused(_pack(items))


@pytest.mark.parametrize("version", [0, 2, 99])
def test_unknown_schema_version_is_refused(
    version: int, make_envelope: Callable[..., Envelope]
) -> None:
    items = _items(make_envelope())
    items[POS["schema_version"]] = version

    reason = _refused(_pack(items))

    assert f"unknown schema version {version} for message type 'demo.ping'" in reason


def test_oversize_input_is_refused_before_parsing(make_envelope: Callable[..., Envelope]) -> None:
    data = encode_envelope(make_envelope())

    reason = _refused(data, max_bytes=len(data) - 1)

    assert f"{len(data)} bytes, over the limit of {len(data) - 1} bytes" in reason
    assert decode_envelope(data, max_bytes=len(data)) is not None


def test_encoding_an_oversize_envelope_fails_at_the_sender(
    make_envelope: Callable[..., Envelope],
) -> None:
    with pytest.raises(MalformedMessage, match="over the limit of 100 bytes"):
        encode_envelope(make_envelope(payload=b"x" * 200), max_bytes=100)


def test_naive_datetimes_are_refused(
    make_envelope: Callable[..., Envelope],
) -> None:
    naive = datetime(2026, 11, 22, 7, 47, 45)

    with pytest.raises(ValidationError, match="naive datetime refused"):
        make_envelope(created_at=naive)
    with pytest.raises(ValidationError, match="naive datetime refused"):
        ControlHeartbeat(party_id="9999", at=naive)


def test_a_msgpack_timestamp_in_place_of_int_micros_is_refused(
    make_envelope: Callable[..., Envelope],
) -> None:
    # msgpack's own timestamp extension is not the wire form; it must not slip through.
    items = _items(make_envelope())
    items[POS["created_at"]] = msgpack.Timestamp(seconds=1_795_333_665)
    data: bytes = msgpack.packb(items, use_bin_type=True, datetime=False)

    assert "'created_at'" in _refused(data)


def _payload_env(make_envelope: Callable[..., Envelope], payload: Any, **kw: Any) -> Envelope:
    raw = payload if isinstance(payload, bytes) else _pack(payload)
    return make_envelope(payload=raw, **kw)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1\xc1", "payload of 'demo.ping' is not valid msgpack"),
        (b"\x82\xa1n", "payload of 'demo.ping' is not valid msgpack"),
        (["hello", 1], "must be a msgpack map"),
        ({"text": "hi"}, "field 'n': Field required"),
        ({"text": "hi", "n": "1"}, "field 'n'"),
        ({"text": "hi", "n": 1.5}, "field 'n'"),
        ({"text": b"hi", "n": 1}, "field 'text'"),
        ({"text": "hi", "n": 1, "admin": True}, "field 'admin': Extra inputs are not permitted"),
    ],
    ids=["garbage", "truncated", "array", "missing", "str-for-int", "float", "bin", "extra"],
)
def test_bad_payloads_are_refused_naming_the_problem(
    payload: Any, reason: str, make_envelope: Callable[..., Envelope]
) -> None:
    env = _payload_env(make_envelope, payload)

    with pytest.raises(MalformedMessage) as caught:
        decode_payload(env)

    assert reason in caught.value.reason


def test_payload_validation_reasons_do_not_echo_payload_values(
    make_envelope: Callable[..., Envelope],
) -> None:
    secret = "s3cr3t-residual-0.123456"
    env = _payload_env(make_envelope, {"text": "hi", "n": secret})

    with pytest.raises(MalformedMessage) as caught:
        decode_payload(env)

    assert secret not in caught.value.reason
    assert secret not in str(caught.value)


def test_a_payload_of_another_type_than_expected_is_refused(
    make_envelope: Callable[..., Envelope],
) -> None:
    env = make_envelope()  # demo.ping

    with pytest.raises(MalformedMessage, match=r"expected a 'control\.heartbeat' message"):
        decode_payload(env, ControlHeartbeat)
    assert decode_payload(env, DemoPing) == DemoPing(text="hello", n=1)


def test_a_payload_that_fits_another_type_is_checked_against_the_envelope_type(
    make_envelope: Callable[..., Envelope],
) -> None:
    # demo.ping bytes under a federation.data envelope: validated as federation.data, refused.
    env = make_envelope(type="federation.data", payload=encode_payload(DemoPing(text="x", n=1)))

    with pytest.raises(MalformedMessage, match=r"federation\.data payload"):
        decode_payload(env)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes_never_raise_anything_but_malformed(data: bytes) -> None:
    try:
        decode_envelope(data)
    except MalformedMessage as exc:
        assert exc.reason
    else:  # pragma: no cover - astronomically unlikely
        pytest.fail("random bytes decoded as an envelope")


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0), new_byte=st.integers(0, 255))
def test_corrupting_one_byte_gives_an_envelope_or_malformed_never_a_crash(
    position: int, new_byte: int, make_envelope: Callable[..., Envelope]
) -> None:
    data = bytearray(encode_envelope(make_envelope()))
    data[position % len(data)] = new_byte

    try:
        env = decode_envelope(bytes(data))
    except MalformedMessage as exc:
        assert exc.reason
        return
    try:
        decode_payload(env)
    except MalformedMessage as exc:
        assert exc.reason
