"""Small helpers shared by the runtime and worker tests (polling lives in tests/polling.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from fedschemas import DemoPing, Envelope, PartyRef, new_envelope

GUEST = PartyRef(party_id="9999", role="guest")
HOST = PartyRef(party_id="10000", role="host")


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
