"""configure_logging: one JSON object per line with service, level, timestamp and bound message
context; payload- and key-like fields never reach the output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from fedcommon.logging import bind_message_context, configure_logging

from tests.runtime.helpers import captured_log


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    with captured_log("worker", "INFO") as out:
        yield out


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_event_is_one_json_line_with_service_level_and_timestamp(stream: io.StringIO) -> None:
    structlog.get_logger("t").info("round_done", iteration=3)

    (line,) = lines(stream)
    assert line["event"] == "round_done"
    assert line["iteration"] == 3
    assert line["service"] == "worker"
    assert line["level"] == "info"
    assert str(line["timestamp"]).endswith("Z")


def test_bound_message_context_is_merged_and_unbound_after(stream: io.StringIO) -> None:
    log = structlog.get_logger("t")

    with bind_message_context(job_id="j1", task_id="t1", message_id="m1", trace_id=None):
        log.info("inside")
    log.info("outside")

    inside, outside = lines(stream)
    assert (inside["job_id"], inside["task_id"], inside["message_id"]) == ("j1", "t1", "m1")
    assert "trace_id" not in inside
    assert "job_id" not in outside


def test_payload_and_key_fields_are_redacted(stream: io.StringIO) -> None:
    structlog.get_logger("t").info(
        "oops", payload=b"secret bytes", private_key="k", password="p", key_id="kid-1"
    )

    (line,) = lines(stream)
    assert line["payload"] == line["private_key"] == line["password"] == "[redacted]"
    assert line["key_id"] == "kid-1"
    assert "secret bytes" not in stream.getvalue()


def test_level_filters_debug(stream: io.StringIO) -> None:
    structlog.get_logger("t").debug("noise")

    assert stream.getvalue() == ""


def test_stdlib_records_come_out_as_json_too(stream: io.StringIO) -> None:
    logging.getLogger("some.library").warning("connection reset")

    (line,) = lines(stream)
    assert line["event"] == "connection reset"
    assert line["level"] == "warning"
    assert line["service"] == "worker"


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("worker", "LOUD")
