"""A tiny service run by fedcommon.service.run_service, for tests/deploy/test_run_service.py.

    python -m tests.deploy.shell_app <dir> <http_port> <handler_seconds>

It consumes demo.ping from a memory bus with the fedbus runtime (as every service does), and
queues two pings to itself at start. The handler appends "started <n>" to <dir>/handled, sleeps
<handler_seconds>, then appends "finished <n>"; the test sends SIGTERM while the first is in
flight and reads the file to see what the shutdown let finish.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedbus import connect
from fedbus.in_memory_inbox import InMemoryInbox
from fedbus.inbox import InboxTransaction
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher
from fedcommon.service import HttpEndpoint, run_service
from fedcommon.settings import ServiceSettings
from fedschemas import DemoPing, Envelope, PartyRef, Payload, new_envelope
from prometheus_client import CollectorRegistry, Counter

TOPIC = "svc.shell-test"
ME = PartyRef(party_id="9999", role="local")


class ShellSettings(ServiceSettings):
    service_name = "shell"


class ShellApp:
    def __init__(self, out: Path, seconds: float, handled: Counter) -> None:
        self.out = out
        self.seconds = seconds
        self.handled = handled
        self.started = threading.Event()
        self.stopping = threading.Event()
        self.bus = connect("memory://shell-test")
        self.consumer = EnvelopeConsumer(
            self.bus, TOPIC, {"demo.ping": self.on_ping}, InMemoryInbox(), prefetch=1
        )

    def on_ping(self, _env: Envelope, payload: Payload, _tx: InboxTransaction) -> None:
        assert isinstance(payload, DemoPing)
        self._note(f"started {payload.n}")
        time.sleep(self.seconds)
        self._note(f"finished {payload.n}")
        self.handled.inc()

    def _note(self, line: str) -> None:
        with (self.out / "handled").open("a") as f:
            f.write(line + "\n")

    def start(self) -> None:
        self.consumer.start()
        publisher = EnvelopePublisher(self.bus, ME)
        for seq in (1, 2):
            publisher.send(TOPIC, ping(seq))
        self.started.set()

    def stop(self) -> None:
        self.stopping.set()
        self.consumer.stop()
        self.bus.close()
        self._note("stopped")

    def health(self) -> Mapping[str, Any]:
        if self.stopping.is_set():
            return {"status": "stopping"}
        return {"status": "ok" if self.started.is_set() else "starting"}


def ping(seq: int) -> Envelope:
    return new_envelope(
        DemoPing(text="shell", n=seq),
        job_id="shell",
        component="shell",
        task_id="shell:shell",
        attempt=0,
        source=ME,
        destination=ME,
        tag="ping",
        iteration=0,
        seq=seq,
        created_at=datetime.now(UTC),
    )


def main() -> int:
    out, port, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    registry = CollectorRegistry()
    handled = Counter("shell_pings_handled", "Pings handled.", registry=registry)
    settings = ShellSettings()
    return run_service(
        "shell",
        settings,
        lambda: ShellApp(out, seconds, handled),
        http=HttpEndpoint("127.0.0.1", port),
        registry=registry,
        ready_event="shell_started",
    )


if __name__ == "__main__":
    raise SystemExit(main())
