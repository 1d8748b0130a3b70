"""Structured JSON logging shared by every fedmq process.

`configure_logging` is called once, from a service's `main.py`. After it, every structlog event
(and every stdlib `logging` record from third-party libraries such as pika or SQLAlchemy) comes
out as one JSON object per line carrying: `timestamp` (ISO 8601, UTC), `level`, `service`, the
event name, its fields, and whatever message context is bound (`job_id`, `task_id`, `trace_id`,
`span_id`, `message_id`). `trace_id`/`span_id` are taken from the current OpenTelemetry span when
the caller did not bind them.

Message context never outlives its message: a thread or asyncio task started inside
`bind_message_context` (or a span) copies the context and would otherwise stamp every later
line -- a link going down an hour later -- with that message's job and trace. So the bound
fields are dropped once their `bind_message_context` block has ended, and an ended span lends
no trace id; fields passed to the log call itself always stay.

Logs carry events with fields, never payloads or keys: as a second line of defence, field names
that usually hold such data (`payload`, `body`, `private_key`, `password`, ...) are replaced by
"[redacted]" before rendering.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from opentelemetry import trace

# Field names whose values must never reach a log line. Matched case-insensitively on the whole
# name; `*_key` names are caught by the suffix rule below (except ids such as `key_id`).
_REDACTED_FIELDS = frozenset(
    {
        "payload",
        "body",
        "data",
        "plaintext",
        "ciphertext",
        "secret",
        "password",
        "private_key",
        "secret_key",
        "signing_key",
        "token",
        "authorization",
    }
)
_REDACTED = "[redacted]"

MESSAGE_CONTEXT_FIELDS = ("job_id", "task_id", "trace_id", "span_id", "message_id")
_SCOPE = "_fedmq_message_scope"
"""The context key of the open `bind_message_context` block that bound the message fields."""


class _MessageScope:
    """One `bind_message_context` block: open until the block ends."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True


def _merge_message_context(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # structlog's merge_contextvars, except that fields bound by a block that has ended (seen
    # from a context copied while it was open) are left out.
    bound = structlog.contextvars.get_contextvars()
    scope = bound.pop(_SCOPE, None)
    if isinstance(scope, _MessageScope) and not scope.open:
        for name in MESSAGE_CONTEXT_FIELDS:
            bound.pop(name, None)
    for name, value in bound.items():
        event_dict.setdefault(name, value)
    return event_dict


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in list(event_dict):
        lowered = name.lower()
        if lowered in _REDACTED_FIELDS or (lowered.endswith("_key") and lowered != "routing_key"):
            event_dict[name] = _REDACTED
    return event_dict


def _add_trace_ids(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Bound context wins: a consumer binds the trace id of the message it handles.
    if "trace_id" in event_dict and "span_id" in event_dict:
        return event_dict
    span = trace.get_current_span()
    if getattr(span, "end_time", None) is not None:
        return event_dict  # ended: current only in a context copied while it ran (see above)
    ctx = span.get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


def _add_service(service: str) -> structlog.types.Processor:
    def processor(
        _: Any, __: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return processor


def configure_logging(
    service: str, level: str = "INFO", json: bool = True, *, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to `stream` (stdout) as JSON lines (or console text).

    Idempotent: calling it again replaces the previous configuration (tests rely on this).
    """
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")
    shared: list[structlog.types.Processor] = [
        _merge_message_context,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
        _add_trace_ids,
        _redact,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_fedmq", False):
            root.removeHandler(old)
    handler._fedmq = True  # type: ignore[attr-defined]  # marks ours for reconfiguration
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # Chatty libraries: their INFO lines are connection noise, not events.
    for noisy in ("pika", "aio_pika", "aiormq", "sqlalchemy.engine", "urllib3"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; `name` shows up as `logger` only for stdlib-originated records."""
    return structlog.get_logger(name)


@contextmanager
def bind_message_context(**fields: str | int | None) -> Iterator[None]:
    """Bind message context (job_id, task_id, trace_id, span_id, message_id, ...) to every log
    event emitted inside the block on this thread/task; `None` values are left out. A thread or
    task that copied the context inside the block stops carrying the fields when it ends."""
    present: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    scope = _MessageScope()
    try:
        with structlog.contextvars.bound_contextvars(**present, **{_SCOPE: scope}):
            yield
    finally:
        scope.open = False
