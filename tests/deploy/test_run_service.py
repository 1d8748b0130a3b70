"""fedcommon.service.run_service, the shell every service's main() runs in: a real process
(tests/deploy/shell_app.py) that consumes from the bus, probed over HTTP and stopped by signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fedcommon.service import HealthMetricsServer

from fedmq import local
from tests.deploy.helpers import REPO


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:  # not listening yet
        return 0, ""


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


class ShellProcess:
    def __init__(self, out: Path, handler_seconds: float) -> None:
        self.out = out
        self.port = local.free_port()
        self.log = out / "log"
        with self.log.open("wb") as log:
            args = [str(out), str(self.port), str(handler_seconds)]
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.deploy.shell_app", *args],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def handled(self) -> list[str]:
        path = self.out / "handled"
        return path.read_text().splitlines() if path.exists() else []

    def events(self) -> list[str]:
        events = []
        for line in self.log.read_text().splitlines():
            try:
                events.append(json.loads(line)["event"])
            except (ValueError, KeyError):
                continue
        return events


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[ShellProcess]:
    proc = ShellProcess(tmp_path, handler_seconds=1.5)
    yield proc
    if proc.proc.poll() is None:
        proc.proc.kill()
        proc.proc.wait(10)


def test_sigterm_lets_the_in_flight_handler_finish_and_takes_no_new_work(
    shell: ShellProcess,
) -> None:
    # Prepare: the first of two queued messages is being handled
    _wait_for(lambda: "started 1" in shell.handled(), 30, "the first handler")

    # Execute
    shell.proc.send_signal(signal.SIGTERM)
    code = shell.proc.wait(timeout=30)

    # Assert: the handler ran to its end before the process left, cleanly, and the message
    # still queued was left for the next consumer
    assert code == 0, shell.log.read_text()[-2000:]
    assert shell.handled() == ["started 1", "finished 1", "stopped"]
    assert "shell_stopping" in shell.events()


def test_health_and_metrics_answer_while_it_runs(shell: ShellProcess) -> None:
    # Execute
    health = _wait_for(
        lambda: (r := _get(f"http://127.0.0.1:{shell.port}/healthz"))[0] == 200 and r,
        30,
        "/healthz",
    )
    _wait_for(lambda: "finished 1" in shell.handled(), 30, "the first handler")
    status, metrics = _get(f"http://127.0.0.1:{shell.port}/metrics")

    # Assert
    assert json.loads(health[1]) == {"status": "ok"}
    assert status == 200
    assert "shell_pings_handled_total 1.0" in metrics or "shell_pings_handled_total 2.0" in metrics
    # ...and the process announced it was ready, with the port it serves on
    assert "shell_started" in shell.events()


def test_health_says_503_until_the_service_is_ok() -> None:
    # Prepare: a service that is still starting
    state = {"status": "starting"}
    server = HealthMetricsServer("127.0.0.1", 0, health=lambda: state)
    port = server.start()
    try:
        # Execute / Assert
        assert _get(f"http://127.0.0.1:{port}/healthz") == (503, '{"status":"starting"}')
        state["status"] = "ok"
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        # No registry: no metrics page rather than an empty one
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 404
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_a_taken_port_fails_the_start() -> None:
    first = HealthMetricsServer("127.0.0.1", 0, health=lambda: {"status": "ok"})
    port = first.start()
    try:
        with pytest.raises(OSError):
            HealthMetricsServer("127.0.0.1", port, health=lambda: {"status": "ok"}).start()
    finally:
        first.stop()
