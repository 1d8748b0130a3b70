"""Building blocks shared by the envelope and every payload model.

`WireModel` fixes the pydantic configuration every wire model uses: extra fields forbidden,
frozen, strict types (no "5" -> 5 coercion on the wire). `Timestamp` is an aware UTC datetime
that travels as int microseconds since the Unix epoch. `PartyRef` names a party and its role.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.functional_validators import PlainValidator

SCHEMA_VERSION: Final = 1
"""The version a message type starts at; each payload model states its own `payload_version`."""

PartyRole = Literal["guest", "host", "arbiter"]
"""The roles a pipeline gives parties, and the roles a component's protocol names."""
Role = Literal[PartyRole, "local"]
"""A party's role in a message: one of PartyRole, or "local" for a party acting on its own
(its scheduler and workers talking among themselves)."""
PARTY_ROLES: Final[tuple[str, ...]] = get_args(PartyRole)
ROLES: Final[tuple[str, ...]] = get_args(Role)

PARTY_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"

PartyId = Annotated[str, Field(pattern=PARTY_ID_PATTERN)]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch, exact (no float rounding)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def micros_to_datetime(micros: int) -> datetime:
    """Inverse of `datetime_to_micros`; raises OverflowError outside datetime's range."""
    return _EPOCH + timedelta(microseconds=micros)


def _validate_timestamp(value: Any) -> datetime:
    # Wire form: int microseconds (never bool, which is an int subclass in Python).
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return micros_to_datetime(value)
        except OverflowError as exc:
            raise ValueError("timestamp is out of range") from exc
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime refused: timestamps must be timezone-aware (UTC)")
        return value.astimezone(UTC)
    raise ValueError("timestamp must be an aware datetime or int microseconds since the epoch")


Timestamp = Annotated[
    datetime,
    PlainValidator(_validate_timestamp),
    PlainSerializer(datetime_to_micros, return_type=int, when_used="always"),
    WithJsonSchema({"type": "integer", "description": "microseconds since the Unix epoch, UTC"}),
]
"""An aware datetime, normalised to UTC; on the wire, int microseconds since the epoch."""


class WireModel(BaseModel):
    """Base of every model that crosses the wire."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )


class Payload(WireModel):
    """Base of every payload model. `payload_version` is the model's schema version."""

    payload_version: ClassVar[int] = SCHEMA_VERSION


class PartyRef(WireModel):
    """A party and the role it plays in a job."""

    party_id: PartyId
    role: Role
