"""Makes `tests.runtime.helpers` importable however pytest is started."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


# --- one two-party stack for the modules that only need a running one ---------------------------

import contextlib  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.local_stack import Stack, two_parties  # noqa: E402

SHARED_STACK_ENV = {
    # test_prometheus_alerts' hanging job: overdue after 20 s, failed on its silent party 10 s
    # later; a healthy PSI job takes a few seconds.
    "FEDMQ_SCHEDULER_PARTY_TIMEOUT_S": "30",
    "FEDMQ_SCHEDULER_JOB_EXPECTED_S": "20",
}


class SharedStack:
    """`fedmq local`'s two parties, started by the first module that asks (`get`) and stopped by
    `stop` or at the end of the session: starting and purging a stack costs a minute or two of
    the suite's time on a loaded host, so test_metrics_local_stack and test_prometheus_alerts
    share one. A module that leaves it changed (services restarted) stops it; the next `get`
    starts a fresh one. While it runs, the cwd and the environment are two_parties' (its
    scratch directory, the API token, SHARED_STACK_ENV)."""

    def __init__(self, amqp_url: str, redis_url: str, pg_admin_url: str) -> None:
        self._urls = {"amqp_url": amqp_url, "redis_url": redis_url, "pg_admin_url": pg_admin_url}
        self._running: contextlib.ExitStack | None = None
        self._stack: Stack | None = None

    def get(self) -> Stack:
        if self._stack is None:
            running = contextlib.ExitStack()
            self._stack = running.enter_context(
                two_parties(
                    **self._urls,
                    token=f"observability-{uuid.uuid4().hex}",
                    label="observability",
                    env=SHARED_STACK_ENV,
                    wait_for_workers=True,
                )
            )
            self._running = running
        return self._stack

    def stop(self) -> None:
        if self._running is not None:
            running, self._running, self._stack = self._running, None, None
            running.close()


@pytest.fixture(scope="session")
def shared_stack(amqp_url: str, redis_url: str, pg_admin_url: str) -> Iterator[SharedStack]:
    shared = SharedStack(amqp_url, redis_url, pg_admin_url)
    yield shared
    shared.stop()
