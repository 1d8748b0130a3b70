"""Small helpers shared by the runtime and worker tests (polling lives in tests/polling.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import structlog
from fedcommon.logging import configure_logging
from fedschemas import DemoPing, Envelope, PartyRef, Payload, new_envelope

GUEST = PartyRef(party_id="9999", role="guest")
HOST = PartyRef(party_id="10000", role="host")


def demo_envelope(
    payload: Payload,
    tag: str,
    seq: int = 0,
    *,
    source: PartyRef = GUEST,
    destination: PartyRef = HOST,
    job_id: str = "job-1",
) -> Envelope:
    """An envelope of the demo component (task-1, attempt 0) carrying `payload`."""
    return new_envelope(
        payload,
        job_id=job_id,
        component="demo",
        task_id="task-1",
        attempt=0,
        source=source,
        destination=destination,
        tag=tag,
        iteration=-1,
        seq=seq,
        created_at=datetime.now(UTC),
    )


def ping(
    seq: int = 0, text: str = "hello", *, source: PartyRef = GUEST, job_id: str = "job-1"
) -> Envelope:
    """A demo.ping from `source` (the guest) to the host."""
    return demo_envelope(DemoPing(text=text, n=seq), "demo.ping", seq, source=source, job_id=job_id)


@contextmanager
def captured_log(service: str, level: str) -> Iterator[io.StringIO]:
    """The process's JSON log lines (configure_logging) during the block; structlog's defaults
    are back after it."""
    stream = io.StringIO()
    configure_logging(service, level, stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()


def events(stream: io.StringIO, name: str) -> list[dict[str, object]]:
    """The JSON log lines of event `name` written to `stream` (the log_lines fixture)."""
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]
