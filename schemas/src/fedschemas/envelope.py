"""The envelope: routing, identity and integrity fields around one payload.

Wire bytes (`encode_envelope`) are a msgpack array; the signed bytes (`canonical_bytes`) are
the same fields without the signature, under their own format string, with the payload
replaced by its SHA-256 (so signing and verifying a 32 MiB ciphertext hashes it once with
SHA-256, not twice with Ed25519's SHA-512). docs/wire.md lays both out byte by byte and gives
the security argument.
Decoding (`decode_envelope`) refuses anything it cannot vouch for with `MalformedMessage`:
oversize input, bad msgpack, a wrong layout, unknown envelope format, unknown message type or
schema version, a field of the wrong type or out of range, a naive timestamp.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Annotated, Any, Final, Self

import msgpack
from pydantic import Field, ValidationError, field_validator, model_validator

from fedschemas.base import (
    SCHEMA_VERSION,
    PartyRef,
    Timestamp,
    WireModel,
    datetime_to_micros,
    micros_to_datetime,
)
from fedschemas.errors import (
    MalformedMessage,
    describe_msgpack_error,
    reason_from_validation_error,
)
from fedschemas.registry import MESSAGE_TYPES, is_readable, readable_versions

MAX_ENVELOPE_BYTES: Final = 1 << 30
"""Default upper bound on an envelope's wire size (1 GiB); bigger input is refused unread."""

ENVELOPE_FORMAT: Final = "fedmq.envelope.v1"
"""First element of every wire envelope array: names the layout."""

SIGNED_FORMAT: Final = "fedmq.envelope.v1.payload-sha256"
"""First element of the signed bytes (`canonical_bytes`): names what a signature covers and
separates signing domains. It differs from ENVELOPE_FORMAT on purpose: builds before it signed
the wire array minus its signature (the payload itself, under ENVELOPE_FORMAT), so without a
new string the signed bytes of an envelope with payload P would equal the old signed bytes of
the same envelope with the 32-byte payload SHA-256(P), and one signature would vouch for both."""

# Order of the envelope array after the format string. Changing it is a new ENVELOPE_FORMAT.
ENVELOPE_FIELDS: Final[tuple[str, ...]] = (
    "message_id",
    "schema_version",
    "type",
    "job_id",
    "task_id",
    "attempt",
    "source.party_id",
    "source.role",
    "destination.party_id",
    "destination.role",
    "tag",
    "iteration",
    "seq",
    "created_at",
    "traceparent",
    "signer_key_id",
    "payload",
)

MESSAGE_ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,128}$"
# Job and task ids may be empty: control traffic (heartbeats) belongs to no job or task.
SCOPE_ID_PATTERN: Final = r"^[A-Za-z0-9_.:/@+=-]{0,256}$"
TAG_PATTERN: Final = r"^[A-Za-z0-9_.:/@+=-]{1,256}$"
TRACEPARENT_PATTERN: Final = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
SIGNER_KEY_ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,128}$"
ED25519_SIGNATURE_BYTES: Final = 64

_INT64_MAX: Final = 2**63 - 1


class Envelope(WireModel):
    """One message: who sends what to whom, for which job, task attempt, tag and iteration.

    `payload` is `encode_payload(model)` of the model registered for `type` at
    `schema_version`. `signature` is Ed25519 over `canonical_bytes(envelope)`, made by the
    source party's key `signer_key_id` (when the party has several, e.g. during rotation).
    """

    message_id: Annotated[str, Field(pattern=MESSAGE_ID_PATTERN)]
    schema_version: Annotated[int, Field(ge=0, le=_INT64_MAX)] = SCHEMA_VERSION
    type: Annotated[str, Field(max_length=128)]
    job_id: Annotated[str, Field(pattern=SCOPE_ID_PATTERN)]
    task_id: Annotated[str, Field(pattern=SCOPE_ID_PATTERN)]
    attempt: Annotated[int, Field(ge=0, le=_INT64_MAX)]
    source: PartyRef
    destination: PartyRef
    tag: Annotated[str, Field(pattern=TAG_PATTERN)]
    iteration: Annotated[int, Field(ge=-1, le=_INT64_MAX)]
    """-1 for messages that belong to no iteration."""
    seq: Annotated[int, Field(ge=0, le=_INT64_MAX)]
    created_at: Timestamp
    traceparent: Annotated[str | None, Field(pattern=TRACEPARENT_PATTERN)] = None
    """W3C trace context of the span that published the message."""
    signature: Annotated[
        bytes | None,
        Field(min_length=ED25519_SIGNATURE_BYTES, max_length=ED25519_SIGNATURE_BYTES),
    ] = None
    signer_key_id: Annotated[str | None, Field(pattern=SIGNER_KEY_ID_PATTERN)] = None
    payload: bytes
    deadline: Timestamp | None = None
    """Optional (added within v1): after this instant the message is worthless and must be
    dropped, never delivered late. Set on cross-site request/reply (rpc.*); None elsewhere,
    and while None the envelope's bytes are exactly those of an envelope without the field."""

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied and validated again.

        Prefer this to `model_copy(update=...)`, which skips validation: a copy with, say, a
        malformed traceparent would only be caught by the receiver.
        """
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**fields, **changes})

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in MESSAGE_TYPES:
            raise ValueError(f"unknown message type {value!r}")
        return value

    @field_validator("traceparent")
    @classmethod
    def _valid_traceparent(cls, value: str | None) -> str | None:
        # W3C Trace Context: version ff is invalid, and all-zero trace or span ids are invalid.
        if value is not None:
            version, trace_id, span_id, _flags = value.split("-")
            if version == "ff" or set(trace_id) == {"0"} or set(span_id) == {"0"}:
                raise ValueError("traceparent is not a valid W3C trace context")
        return value

    @model_validator(mode="after")
    def _known_version(self) -> Self:
        if not is_readable(self.type, self.schema_version):
            raise ValueError(
                f"unknown schema version {self.schema_version} for message type {self.type!r}"
                f" (this build reads {readable_versions(self.type)})"
            )
        return self


def make_message_id(
    job_id: str,
    component: str,
    attempt: int,
    tag: str,
    iteration: int,
    seq: int,
    source: PartyRef,
    destination: PartyRef,
    chunk: int | None = None,
) -> str:
    """The deterministic id of a message: same inputs, same id; any field changed, new id.

    sha256 over a length-prefixed encoding of the fields (so no choice of separators can make
    two field lists collide), truncated to 128 bits as 32 lower-case hex characters. A chunk
    of a large message gets its parent's id plus ":c<index>" (see `chunk_message_id`).
    """
    fields: list[str | int] = [
        job_id,
        component,
        attempt,
        tag,
        iteration,
        seq,
        source.party_id,
        source.role,
        destination.party_id,
        destination.role,
    ]
    h = hashlib.sha256(b"fedmq.message_id.v1")
    for value in fields:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"message id fields are str or int, got {type(value).__name__}")
        # Tag each field with its kind so "1" and 1 differ; ints as signed 8-byte big-endian.
        raw = value.encode("utf-8") if isinstance(value, str) else struct.pack(">q", value)
        h.update(b"s" if isinstance(value, str) else b"i")
        h.update(struct.pack(">I", len(raw)))
        h.update(raw)
    message_id = h.hexdigest()[:32]
    return message_id if chunk is None else chunk_message_id(message_id, chunk)


def chunk_message_id(message_id: str, index: int) -> str:
    """The id of chunk `index` of the message `message_id`."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError("chunk index must be a non-negative int")
    return f"{message_id}:c{index}"


def _fields(env: Envelope, layout: str, payload: bytes) -> list[Any]:
    # `deadline` is appended only when set: envelopes without one keep the 18-element layout
    # (and so their wire bytes) of every earlier build.
    deadline = [] if env.deadline is None else [datetime_to_micros(env.deadline)]
    return [
        layout,
        env.message_id,
        env.schema_version,
        env.type,
        env.job_id,
        env.task_id,
        env.attempt,
        env.source.party_id,
        env.source.role,
        env.destination.party_id,
        env.destination.role,
        env.tag,
        env.iteration,
        env.seq,
        datetime_to_micros(env.created_at),
        env.traceparent,
        env.signer_key_id,
        payload,
        *deadline,
    ]


def canonical_bytes(env: Envelope, *, payload_sha256: bytes | None = None) -> bytes:
    """The bytes a signature covers: every envelope field except `signature`, fixed layout,
    the payload by its SHA-256.

    `payload_sha256`: the payload's SHA-256 (32 bytes) when the caller hashed it already
    (the audit records it too): saves a pass over a large payload. The caller vouches that it
    is SHA-256(env.payload); anything other than 32 bytes is a ValueError.

    A msgpack array of 18 elements: SIGNED_FORMAT, then ENVELOPE_FIELDS in order with
    `payload` replaced by the 32-byte SHA-256 of the payload bytes (bin8); 19 when the
    optional `deadline` is set (appended last). msgpack's shortest encodings throughout, so
    the result depends only on the field values, never on how the envelope was built or
    decoded. A few hundred bytes whatever the payload's size: Ed25519 signs and verifies them
    in microseconds, and a large payload costs one SHA-256 pass. docs/wire.md gives the
    layout byte by byte.
    """
    if payload_sha256 is None:
        payload_sha256 = hashlib.sha256(env.payload).digest()
    elif len(payload_sha256) != hashlib.sha256().digest_size:
        raise ValueError(f"payload_sha256 is {len(payload_sha256)} bytes, not 32")
    signed = _fields(env, SIGNED_FORMAT, payload_sha256)
    return msgpack.packb(signed, use_bin_type=True)  # type: ignore[no-any-return]


def encode_envelope(env: Envelope, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> bytes:
    """Wire bytes: ENVELOPE_FORMAT, ENVELOPE_FIELDS in order (the payload itself), the
    deadline if set, and the signature (or nil) as the last element (element 19, or 20 with a
    deadline)."""
    fields = _fields(env, ENVELOPE_FORMAT, env.payload)
    data: bytes = msgpack.packb([*fields, env.signature], use_bin_type=True)
    if len(data) > max_bytes:
        raise MalformedMessage(
            f"envelope is {len(data)} bytes, over the limit of {max_bytes} bytes"
        )
    return data


_WIRE_LEN: Final = len(ENVELOPE_FIELDS) + 2  # format string + fields + signature
_WIRE_LEN_WITH_DEADLINE: Final = _WIRE_LEN + 1  # ... + deadline before the signature


def decode_envelope(
    data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_ENVELOPE_BYTES
) -> Envelope:
    """Parse and validate wire bytes; MalformedMessage (with a reason) for anything wrong."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"envelope must be bytes, got {type(data).__name__}")
    size = memoryview(data).nbytes
    if size > max_bytes:
        raise MalformedMessage(f"envelope is {size} bytes, over the limit of {max_bytes} bytes")
    try:
        items = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise MalformedMessage(
            f"envelope is not valid msgpack ({describe_msgpack_error(exc)})"
        ) from exc
    return _from_items(items)


def _from_items(items: Any) -> Envelope:
    if not isinstance(items, list):
        raise MalformedMessage(f"envelope must be a msgpack array, got {type(items).__name__}")
    if not items or not isinstance(items[0], str):
        raise MalformedMessage("not a fedmq envelope: no format string")
    if items[0] != ENVELOPE_FORMAT:
        if items[0].startswith("fedmq.envelope."):
            raise MalformedMessage(
                f"unknown envelope format {items[0][:40]!r} (this build reads {ENVELOPE_FORMAT})"
            )
        raise MalformedMessage("not a fedmq envelope: wrong format string")
    # nil is not a valid deadline: an absent one is encoded by leaving the element out, so
    # each envelope has exactly one encoding (canonical bytes stay canonical).
    with_deadline = (
        len(items) == _WIRE_LEN_WITH_DEADLINE
        and isinstance(items[-2], int)
        and not isinstance(items[-2], bool)
    )
    if len(items) != _WIRE_LEN and not with_deadline:
        raise MalformedMessage(
            f"envelope array has {len(items)} elements, {ENVELOPE_FORMAT} has {_WIRE_LEN}"
            f" ({_WIRE_LEN_WITH_DEADLINE} with an int deadline before the signature)"
        )
    deadline: Any = None
    if with_deadline:
        deadline = items[-2]
        try:
            deadline = micros_to_datetime(deadline)
        except OverflowError as exc:
            raise MalformedMessage("invalid envelope: field 'deadline': out of range") from exc
    values = dict(zip(ENVELOPE_FIELDS, items[1 : 1 + len(ENVELOPE_FIELDS)], strict=True))
    created_at = values["created_at"]
    if isinstance(created_at, int) and not isinstance(created_at, bool):
        try:
            created_at = micros_to_datetime(created_at)
        except OverflowError as exc:
            raise MalformedMessage("invalid envelope: field 'created_at': out of range") from exc
    fields = {
        name: value for name, value in values.items() if "." not in name and name != "created_at"
    }
    try:
        return Envelope(
            **fields,
            created_at=created_at,
            deadline=deadline,
            source=_party(values, "source"),
            destination=_party(values, "destination"),
            signature=items[-1],
        )
    except ValidationError as exc:
        raise MalformedMessage(reason_from_validation_error("envelope", exc)) from exc


def _party(values: dict[str, Any], which: str) -> PartyRef:
    try:
        return PartyRef(party_id=values[f"{which}.party_id"], role=values[f"{which}.role"])
    except ValidationError as exc:
        raise MalformedMessage(reason_from_validation_error("envelope", exc, which)) from exc
