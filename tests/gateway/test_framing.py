"""The link's frame format: round trips, and refusal of what a hostile peer could send."""

from __future__ import annotations

import pytest
from fedgateway import framing
from fedgateway.framing import FrameType, ProtocolError
from hypothesis import given, settings
from hypothesis import strategies as st


def test_a_data_frame_round_trips_with_its_id_headers_and_untouched_body():
    # Prepare
    body = bytes(range(256)) * 4
    prefix = framing.encode_data_prefix(7, "abc:c1", {"x-fedmq-chunk-of": "abc"})

    # Execute
    frame = framing.decode_data(prefix + body)

    # Assert
    assert (frame.seq, frame.message_id, dict(frame.headers), frame.body) == (
        7,
        "abc:c1",
        {"x-fedmq-chunk-of": "abc"},
        body,
    )


def test_hello_ack_and_refused_round_trip():
    hello = framing.Hello(party_id="9999", certificates=(b"cert-a", b"cert-b"))
    assert framing.decode_hello(framing.encode_hello(hello)) == hello
    assert framing.decode_ack(framing.encode_ack([1, 2, 2**63])) == (1, 2, 2**63)
    assert framing.decode_refused(framing.encode_refused(9, "bad_signature")) == (
        9,
        "bad_signature",
    )


def test_headers_announce_type_and_length_and_refuse_oversize_or_unknown_frames():
    header = framing.frame_header(FrameType.DATA, 1000)
    assert framing.parse_header(header, max_frame_bytes=1000) == (FrameType.DATA, 1000)
    with pytest.raises(ProtocolError, match="exceeds"):
        framing.parse_header(header, max_frame_bytes=999)
    with pytest.raises(ProtocolError, match="exceeds"):
        # control frames are capped far below the DATA limit
        framing.parse_header(
            framing.frame_header(FrameType.ACK, framing.MAX_CONTROL_FRAME + 1),
            max_frame_bytes=1 << 30,
        )
    with pytest.raises(ProtocolError, match="unknown frame type"):
        framing.parse_header(b"\x00\x00\x00\x01\x63", max_frame_bytes=10)


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00" * 11, b"\x00" * 8 + b"\x00\x00\x10\x00" + b"\x80"],
    ids=["empty", "short", "meta-past-end"],
)
def test_malformed_data_frames_are_protocol_errors(body):
    with pytest.raises(ProtocolError):
        framing.decode_data(body)


def test_a_hello_of_another_protocol_version_is_refused():
    raw = framing.encode_hello(framing.Hello(party_id="9999", certificates=(), version=2))
    with pytest.raises(ProtocolError, match="version"):
        framing.decode_hello(raw)


@settings(max_examples=50, deadline=None)
@given(
    seq=st.integers(min_value=0, max_value=2**64 - 1),
    message_id=st.text(max_size=64),
    headers=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5),
    body=st.binary(max_size=4096),
)
def test_any_data_frame_round_trips(seq, message_id, headers, body):
    prefix = framing.encode_data_prefix(seq, message_id, headers)
    frame = framing.decode_data(prefix + body)
    assert (frame.seq, frame.message_id, dict(frame.headers), frame.body) == (
        seq,
        message_id,
        headers,
        body,
    )


@settings(max_examples=50, deadline=None)
@given(rid=st.integers(min_value=0, max_value=2**64 - 1), body=st.binary(max_size=4096))
def test_request_and_reply_frames_round_trip(rid, body):
    assert framing.decode_request(framing.encode_request_prefix(rid) + body) == (rid, body)
    for outcome in framing.ReplyOutcome:
        raw = framing.encode_reply_prefix(rid, outcome) + body
        assert framing.decode_reply(raw) == (rid, outcome, body)


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (framing.decode_request, b"\x00" * 7),
        (framing.decode_reply, b"\x00" * 8),
        (framing.decode_reply, b"\x00" * 8 + b"\x07"),  # no such outcome
    ],
    ids=["short-request", "short-reply", "unknown-outcome"],
)
def test_malformed_request_and_reply_frames_are_protocol_errors(decode, body):
    with pytest.raises(ProtocolError):
        decode(body)


def test_the_rpc_feature_is_announced_and_its_frames_may_carry_an_envelope():
    assert framing.FEATURE_RPC in framing.Hello(party_id="9999", certificates=()).features
    header = framing.frame_header(FrameType.REPLY, 2 << 20)
    assert framing.parse_header(header, max_frame_bytes=4 << 20) == (FrameType.REPLY, 2 << 20)
