"""The scheduler's timer thread: silence, proposal and task timeouts, and heartbeats.

Every `interval` seconds it looks at the jobs that are waiting or running and runs
`handlers.check_job` (the domain's Tick event) on each, one short transaction per job (the
job's row lock is held only for that job). At the initiator that fails a job whose party
stayed silent longer than party_timeout_s, or whose task ran past its timeout, naming them; at
a participant it fails its side of a job whose initiator stayed silent that long. Each side
also sends the heartbeats that keep the other from timing it out. A failing pass is logged and
retried at the next tick.

`job_age` is the other half of stuck-job detection: the task timeouts catch a task that runs
too long, the job age a job that makes no progress at all (a stopped worker leaves its task
waiting in svc.worker, never started, so no task timer runs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Final

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker

from fedscheduler.domain import OPEN, SUCCESS
from fedscheduler.handlers import SchedulerContext, check_job
from fedscheduler.models import Job
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


HISTORY_RUNS: Final = 10
"""How many of a pipeline's latest successful runs at this party set its expected duration."""
HISTORY_FACTOR: Final = 3.0
"""A job is overdue past this many times the longest of those runs ..."""
HISTORY_FLOOR_S: Final = 60.0
"""... and never before a minute: a pipeline that took seconds must not page on a busy host."""


def expected_duration(session: Session, pipeline_yaml: str, default_s: float) -> float:
    """How long a job of this pipeline is expected to take at most: HISTORY_FACTOR times the
    longest of its last HISTORY_RUNS successful runs here (at least HISTORY_FLOOR_S), or
    `default_s` (the job_expected_s setting) for a pipeline that never succeeded here."""
    runs = session.execute(
        sa.select(Job.created_at, Job.ended_at)
        .where(Job.state == SUCCESS, Job.pipeline_yaml == pipeline_yaml, Job.ended_at.is_not(None))
        .order_by(Job.ended_at.desc())
        .limit(HISTORY_RUNS)
    ).all()
    if not runs:
        return default_s
    longest = max((ended - created).total_seconds() for created, ended in runs if ended)
    return max(HISTORY_FLOOR_S, HISTORY_FACTOR * longest)


def job_age(
    sessions: sessionmaker[Session], now: Callable[[], datetime], default_s: float
) -> tuple[float, float]:
    """(age, expected duration) in seconds of the open job furthest past its pipeline's
    expected duration (the highest age/expected ratio); (0, 0) with no open job. Read at
    each scrape (fedmq_scheduler_job_age_seconds, fedmq_scheduler_job_expected_seconds)."""
    with sessions() as session:
        open_jobs = session.execute(
            sa.select(Job.created_at, Job.pipeline_yaml).where(Job.state.in_(OPEN))
        ).all()
        expected: dict[str, float] = {}
        worst = (0.0, 0.0)
        at = now()
        for created_at, pipeline_yaml in open_jobs:
            if pipeline_yaml not in expected:
                expected[pipeline_yaml] = expected_duration(session, pipeline_yaml, default_s)
            pair = (max(0.0, (at - created_at).total_seconds()), expected[pipeline_yaml])
            if worst == (0.0, 0.0) or pair[0] / pair[1] > worst[0] / worst[1]:
                worst = pair
    return worst


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
