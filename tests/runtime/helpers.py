"""Small helpers shared by the runtime and worker tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from fedschemas import DemoPing, Envelope, PartyRef, new_envelope

GUEST = PartyRef(party_id="9999", role="guest")
HOST = PartyRef(party_id="10000", role="host")


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def ping(
    seq: int = 0, text: str = "hello", *, source: PartyRef = GUEST, job_id: str = "job-1"
) -> Envelope:
    return new_envelope(
        DemoPing(text=text, n=seq),
        job_id=job_id,
        component="demo",
        task_id="task-1",
        attempt=0,
        source=source,
        destination=HOST,
        tag="demo.ping",
        iteration=-1,
        seq=seq,
        created_at=datetime.now(UTC),
    )
