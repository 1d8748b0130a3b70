"""The audit watches the party's broker and database: one that stops answering is alerted while
it is down, and once back its outage is a control.dependency_down finding of the open job.

The audit's PostgreSQL is reached through a TCP forwarder the test can cut (the database
itself is never stopped: other tests share it), and its broker's port is a listening socket the
test closes, as a broker that died leaves it."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedaudit.store import list_findings
from fedbus import Message, connect
from fedcrypto.signing import SigningKey
from fedschemas import encode_envelope

from tests.audit.traffic import GUEST, Traffic
from tests.polling import wait_for


class Port:
    """A listening port on loopback that can be closed and opened again (the same number).
    With `upstream`, each connection is forwarded there; without, accepted and left open."""

    def __init__(self, upstream: tuple[str, int] | None = None) -> None:
        self.upstream = upstream
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.open()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._open = self._open, []
        for sock in [s for s in (listener,) if s is not None] + sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._open.append(client)
            if self.upstream is not None:
                server = socket.create_connection(self.upstream)
                with self._lock:
                    self._open.append(server)
                for a, b in ((client, server), (server, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def through(port: Port, url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{port.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def up(audit: Audit, dependency: str) -> float | None:
    return audit.metrics.registry.get_sample_value(
        "fedmq_audit_dependency_up", {"dependency": dependency}
    )


def test_a_broker_or_database_that_stops_answering_is_alerted_and_then_recorded(
    pg_url: str, tmp_path: Path
) -> None:
    # Prepare: the audit's database behind a forwarder, its "broker" a port we hold, a job open
    pg = urlsplit(pg_url)
    database = Port(upstream=(pg.hostname or "127.0.0.1", pg.port or 5432))
    broker = Port()
    settings = AuditSettings(
        party_id=GUEST,
        bus_url=f"amqp://guest:guest@127.0.0.1:{broker.port}/%2F",
        database_url=through(database, pg_url),
        signing_key=SigningKey.generate().to_bytes().hex(),
        http_port=-1,
        log_json=False,
        timer_interval_s=0.2,
        dependency_down_after_s=0.5,
        probe_timeout_s=1.0,
    )
    bus = connect(f"memory://liveness-{tmp_path.name}")
    audit = Audit(settings, bus=bus)
    alerts: list[dict[str, Any]] = []
    audit.ctx.alert = alerts.extend
    audit.start()
    traffic = Traffic()
    proposal = traffic.propose()
    bus.publish(
        Message(
            topic="svc.scheduler",
            body=encode_envelope(proposal),
            message_id=proposal.message_id,
        )
    )
    try:
        wait_for(lambda: traffic.job_id in audit.ctx.auditor.jobs or None)
        wait_for(lambda: (up(audit, "database"), up(audit, "broker")) == (1.0, 1.0) or None)

        # Execute: both stop answering, then come back
        database.close()
        broker.close()
        down = wait_for(
            lambda: (
                {
                    a["labels"]["dependency"]
                    for a in alerts
                    if a["labels"]["alertname"] == "FedmqAuditDependencyDown"
                }
                == {"database", "broker"}
                or None
            ),
            timeout=15,
        )
        gauges_down = (up(audit, "database"), up(audit, "broker"))
        database.open()
        broker.open()

        # Assert: alerted while down (gauge 0), then a finding of the open job for each
        assert down and gauges_down == (0.0, 0.0)
        engine = sa.create_engine(pg_url)
        try:

            def recorded() -> list[dict[str, Any]] | None:
                with engine.connect() as conn:
                    found = list_findings(conn, job_id=traffic.job_id)
                return found if len(found) == 2 else None

            findings = wait_for(recorded, timeout=15)
        finally:
            engine.dispose()
        assert {f["rule"] for f in findings} == {"control.dependency_down"}
        details = sorted(f["detail"] for f in findings)
        assert details[0].startswith("this party's broker did not answer from ")
        assert details[1].startswith("this party's database did not answer from ")
        wait_for(lambda: (up(audit, "database"), up(audit, "broker")) == (1.0, 1.0) or None)
    finally:
        audit.stop()
        database.close()
        broker.close()
