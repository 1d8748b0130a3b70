"""Liveness of what the audit itself stands on: the party's broker and its database.

control.service_silent watches the party's scheduler, workers and gateway through the messages
they send; the broker and the database send none, and when either is down the audit records
nothing at all. So the audit's timer probes them itself: the database with `SELECT 1` on the
audit's own engine, the broker with a TCP connection to its AMQP port (the bus URL's host and
port; no probe for an in-memory bus). Each probe runs on its own thread under `timeout_s`, so a
hung connection never holds the timer; a probe still running from an earlier tick counts as
down.

A dependency that has not answered for `down_after_s` is reported at once, where the report
can still go: the log (an `audit_dependency_down` event), the metric
`fedmq_audit_dependency_up{dependency}` (0; Prometheus' FedmqAuditDependencyDown) and the alert
webhook. When it answers again the outage becomes a control.dependency_down finding in the
audit's own log (the database may have been the one away), naming when it began, how long it
lasted and the open jobs it spanned.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine

Probe = Callable[[], None]
"""Returns when the dependency answers; raises (any exception) when it does not."""

AMQP_PORTS = {"amqp": 5672, "amqps": 5671}


def database_probe(engine: Engine) -> Probe:
    def probe() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    return probe


def tcp_probe(host: str, port: int, timeout_s: float = 2.0) -> Probe:
    def probe() -> None:
        socket.create_connection((host, port), timeout=timeout_s).close()

    return probe


def broker_probe(bus_url: str, timeout_s: float = 2.0) -> Probe | None:
    """A TCP probe of an AMQP broker's port (None for a bus with no broker, memory://)."""
    parts = urlsplit(bus_url)
    if parts.scheme not in AMQP_PORTS or not parts.hostname:
        return None
    return tcp_probe(parts.hostname, parts.port or AMQP_PORTS[parts.scheme], timeout_s)


@dataclass
class Outage:
    dependency: str
    since: float
    error: str
    until: float | None = None


@dataclass
class _Dependency:
    name: str
    probe: Probe
    running: Future[None] | None = None
    outage: Outage | None = None
    reported: bool = False


@dataclass
class Liveness:
    """The probes and what each last showed. `check` is called by the audit's timer."""

    probes: dict[str, Probe]
    down_after_s: float = 10.0
    timeout_s: float = 3.0
    _deps: list[_Dependency] = field(default_factory=list)
    _pool: ThreadPoolExecutor | None = None

    def __post_init__(self) -> None:
        self._deps = [_Dependency(name, probe) for name, probe in self.probes.items()]
        if self._deps:
            self._pool = ThreadPoolExecutor(len(self._deps), thread_name_prefix="audit-probe")

    def check(self, now: float) -> tuple[list[Outage], list[Outage]]:
        """Probe each dependency once: (outages to report now, reported outages that ended)."""
        if self._pool is None:
            return [], []
        for dep in self._deps:
            if dep.running is None or dep.running.done():
                dep.running = self._pool.submit(dep.probe)
        # One deadline for all of them: a hung probe costs the timer timeout_s once per tick.
        wait([d.running for d in self._deps if d.running is not None], timeout=self.timeout_s)
        down, back = [], []
        for dep in self._deps:
            assert dep.running is not None
            error = _failure(dep.running, self.timeout_s)
            if error is None:
                if dep.outage is not None and dep.reported:
                    dep.outage.until = now
                    back.append(dep.outage)
                dep.outage, dep.reported = None, False
                continue
            if dep.outage is None:
                dep.outage = Outage(dep.name, now, error)
            if not dep.reported and now - dep.outage.since >= self.down_after_s:
                dep.reported = True
                dep.outage.error = error
                down.append(dep.outage)
        return down, back

    def is_up(self, name: str) -> bool:
        """Whether `name`'s last probe answered."""
        return any(d.name == name and d.outage is None for d in self._deps)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _failure(running: Future[None], timeout_s: float) -> str | None:
    """None when the probe answered; else why not (the deadline has passed already)."""
    if not running.done():
        return f"no answer within {timeout_s:g} s"
    exc = running.exception()
    if exc is None:
        return None
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"
