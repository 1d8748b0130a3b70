"""The one error a receiver gets for bytes it cannot accept.

Anything wrong with incoming wire bytes (bad encoding, truncation, unknown message type or
schema version, oversize, a field of the wrong type, an extra field, a refused array dtype)
surfaces as `MalformedMessage`. Its `reason` is one short sentence naming the problem; the bus
dead-letters the message with that reason, so it must never contain payload contents or keys.
"""

from __future__ import annotations

import msgpack
from pydantic import ValidationError

# Bound on how long a reason may grow: reasons travel in dead-letter headers.
_MAX_REASON_CHARS = 300


class MalformedMessage(ValueError):
    """Wire bytes that do not decode to a valid, known message; `reason` says why."""

    def __init__(self, reason: str) -> None:
        if len(reason) > _MAX_REASON_CHARS:
            reason = reason[: _MAX_REASON_CHARS - 3] + "..."
        super().__init__(reason)
        self.reason = reason


def reason_from_validation_error(what: str, exc: ValidationError, loc_prefix: str = "") -> str:
    """One sentence from a pydantic error: where the first problem is and what it is.

    pydantic's own messages can echo the offending input; only the location and the message
    template are used here, so a reason never carries payload values.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:  # pragma: no cover - pydantic always reports at least one error
        return f"invalid {what}"
    first = errors[0]
    parts = [loc_prefix] if loc_prefix else []
    loc = ".".join([*parts, *(str(part) for part in first["loc"])])
    msg = str(first["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    where = f"field '{loc}': " if loc else ""  # model-level checks have no field
    return f"invalid {what}: {where}{msg}{more}"


def describe_msgpack_error(exc: Exception) -> str:
    """A few words on why msgpack refused some bytes (never the bytes themselves)."""
    if isinstance(exc, msgpack.ExtraData):
        return "extra bytes after the message"
    if isinstance(exc, msgpack.exceptions.StackError):
        return "nested too deeply"
    if isinstance(exc, msgpack.exceptions.FormatError):
        return "invalid msgpack type byte"
    text = str(exc)
    if "incomplete input" in text:
        return "input ends early, truncated"
    if "exceeds max_" in text:  # a length header larger than the remaining input
        return "a length is longer than the input, truncated"
    if isinstance(exc, UnicodeDecodeError):
        return "a string is not valid UTF-8"
    return type(exc).__name__
