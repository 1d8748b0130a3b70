"""The scheduler's timer thread: silence, proposal and task timeouts, and heartbeats.

Every `interval` seconds it looks at the jobs that are waiting or running and runs
`handlers.check_job` (the domain's Tick event) on each, one short transaction per job (the
job's row lock is held only for that job). At the initiator that fails a job whose party
stayed silent longer than party_timeout_s, or whose task ran past its timeout, naming them; at
a participant it fails its side of a job whose initiator stayed silent that long. Each side
also sends the heartbeats that keep the other from timing it out. A failing pass is logged and
retried at the next tick.
"""

from __future__ import annotations

import threading

import structlog
from sqlalchemy.orm import Session, sessionmaker

from fedscheduler.handlers import SchedulerContext, check_job
from fedscheduler.sql_job_repository import SqlJobRepository

log = structlog.get_logger("fedscheduler.timer")


def run_checks(sessions: sessionmaker[Session], ctx: SchedulerContext) -> int:
    """One pass over the open jobs; returns how many were checked."""
    with sessions.begin() as session:
        job_ids = SqlJobRepository(session).open_job_ids()
    for job_id in job_ids:
        with sessions.begin() as session:
            check_job(session, ctx, job_id)
    return len(job_ids)


class Timer:
    """A daemon thread calling `run_checks` every `interval` seconds until `stop`."""

    def __init__(
        self, sessions: sessionmaker[Session], ctx: SchedulerContext, interval: float
    ) -> None:
        self._sessions = sessions
        self._ctx = ctx
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"scheduler-timer-{self._ctx.party_id}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                run_checks(self._sessions, self._ctx)
            except Exception as exc:  # the broker or the database is away: next tick
                log.warning("timer_pass_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
