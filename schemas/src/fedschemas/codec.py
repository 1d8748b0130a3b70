"""Payload bytes: typed models to msgpack and back, with version upgrades on the way in.

A payload is a msgpack map of the model's fields (keys sorted at every level, so equal
models give equal bytes whatever order their dicts were filled in). Optional fields that
default to None are left out while None, so a sender that does not use a field added later in
the same version still talks to receivers that predate it. Arrays use the `NDArray` map.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar, overload

import msgpack
from pydantic import BaseModel, ValidationError

from fedschemas.base import PartyRef, Payload
from fedschemas.envelope import Envelope, make_message_id
from fedschemas.errors import (
    MalformedMessage,
    describe_msgpack_error,
    reason_from_validation_error,
)
from fedschemas.ndarray import CONTEXT_MAX_ARRAY_BYTES, CONTEXT_WIRE, MAX_ARRAY_BYTES
from fedschemas.registry import MESSAGE_TYPES, UPGRADES, current_version, payload_type

P = TypeVar("P", bound=Payload)


def encode_payload(model: BaseModel) -> bytes:
    """msgpack bytes of a payload model of a registered type, at its current version."""
    if not isinstance(model, Payload):
        raise TypeError(f"{type(model).__qualname__} is not a payload model")
    type_name = payload_type(type(model))
    if MESSAGE_TYPES[type_name] is not type(model):
        raise ValueError(
            f"{type(model).__qualname__} is an old version of {type_name!r}; "
            "senders always send the current version"
        )
    dumped = model.model_dump(mode="python", context={CONTEXT_WIRE: True})
    return msgpack.packb(_wire_form(model, dumped), use_bin_type=True)  # type: ignore[no-any-return]


def _wire_form(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    """Drop None-valued optional fields (default None) at every model level; sort dict keys."""
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and not info.is_required() and info.default is None:
            continue
        out[name] = _nested(value, dumped[name])
    return dict(sorted(out.items()))


def _nested(value: Any, dumped: Any) -> Any:
    if isinstance(value, BaseModel):
        return _wire_form(value, dumped)
    if isinstance(value, list | tuple) and isinstance(dumped, list | tuple):
        return [_nested(v, d) for v, d in zip(value, dumped, strict=True)]
    if isinstance(dumped, dict):
        values = value if isinstance(value, Mapping) else {}
        return {k: _nested(values.get(k), dumped[k]) for k in sorted(dumped)}
    return dumped


@overload
def decode_payload(env: Envelope, *, max_array_bytes: int = ...) -> Payload: ...
@overload
def decode_payload(env: Envelope, expected: type[P], *, max_array_bytes: int = ...) -> P: ...
def decode_payload(
    env: Envelope,
    expected: type[Payload] | None = None,
    *,
    max_array_bytes: int = MAX_ARRAY_BYTES,
) -> Payload:
    """The typed payload of `env`, upgraded to the current version of its type.

    Validates the payload against the model registered for `env.type` at
    `env.schema_version`; old versions go through their upgrade functions. With `expected`,
    also checks the message is of that model's type. MalformedMessage for anything wrong.
    """
    type_name = env.type
    if type_name not in MESSAGE_TYPES:
        raise MalformedMessage(f"unknown message type {type_name!r}")
    if expected is not None and payload_type(expected) != type_name:
        raise MalformedMessage(f"expected a {payload_type(expected)!r} message, got {type_name!r}")
    current = current_version(type_name)
    version = env.schema_version
    if version == current:
        model: type[Payload] = MESSAGE_TYPES[type_name]
    elif (type_name, version) in UPGRADES and version < current:
        model = UPGRADES[(type_name, version)].model
    else:
        raise MalformedMessage(f"unknown schema version {version} for message type {type_name!r}")
    try:
        data = msgpack.unpackb(env.payload, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise MalformedMessage(
            f"payload of {type_name!r} is not valid msgpack ({describe_msgpack_error(exc)})"
        ) from exc
    if not isinstance(data, dict):
        raise MalformedMessage(f"payload of {type_name!r} must be a msgpack map")
    try:
        value = model.model_validate(data, context={CONTEXT_MAX_ARRAY_BYTES: max_array_bytes})
    except ValidationError as exc:
        raise MalformedMessage(reason_from_validation_error(f"{type_name} payload", exc)) from exc
    while version < current:
        upgraded = UPGRADES[(type_name, version)].to_next(value)
        version += 1
        target = (
            MESSAGE_TYPES[type_name] if version == current else UPGRADES[(type_name, version)].model
        )
        if type(upgraded) is not target:
            raise TypeError(  # a bug in an upgrade function, not in the message
                f"upgrade of {type_name!r} to version {version} returned "
                f"{type(upgraded).__qualname__}, not {target.__qualname__}"
            )
        value = upgraded
    return value


def new_envelope(
    payload: Payload,
    *,
    job_id: str,
    component: str,
    task_id: str,
    attempt: int,
    source: PartyRef,
    destination: PartyRef,
    tag: str,
    iteration: int,
    seq: int,
    created_at: datetime,
    chunk: int | None = None,
    traceparent: str | None = None,
) -> Envelope:
    """An unsigned envelope around `payload` with its deterministic message id.

    `created_at` is an argument, not read from the clock here, so a sender that resends after
    a crash can rebuild the same envelope from its saved state.
    """
    type_name = payload_type(type(payload))
    return Envelope(
        message_id=make_message_id(
            job_id, component, attempt, tag, iteration, seq, source, destination, chunk
        ),
        schema_version=type(payload).payload_version,
        type=type_name,
        job_id=job_id,
        task_id=task_id,
        attempt=attempt,
        source=source,
        destination=destination,
        tag=tag,
        iteration=iteration,
        seq=seq,
        created_at=created_at,
        traceparent=traceparent,
        payload=encode_payload(payload),
    )
