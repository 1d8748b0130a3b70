"""Worker test helpers: run `python -m fedworker` as a real subprocess and read its JSON logs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.polling import wait_for

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


class WorkerProcess:
    """One `python -m fedworker` process; its stdout JSON lines are collected as they come."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FEDMQ_WORKER_")}
        full_env.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fedworker"],
            env=full_env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.raw.append(line)
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        self.lines.append(json.loads(line))

    def events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [
                line
                for line in self.lines
                if line.get("event") == name and all(line.get(k) == v for k, v in fields.items())
            ]

    def wait_for(self, name: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        """The first `name` event with `fields`, once logged; fails at once if the worker exits."""

        def logged() -> dict[str, Any] | None:
            found = self.events(name, **fields)
            if not found and self.proc.poll() is not None:
                self._reader.join(2)  # the last lines may still be in the pipe
                found = self.events(name, **fields)
                if not found:
                    raise AssertionError(
                        f"worker exited ({self.proc.returncode}) before logging {name}:\n"
                        + self.tail()
                    )
            return found[0] if found else None

        return wait_for(
            logged, timeout, f"the worker to log {name}", interval=0.05, describe=self.tail
        )

    def tail(self, lines: int = 30) -> str:
        """The last lines the worker wrote, for failure messages."""
        with self._lock:
            return "".join(self.raw[-lines:])

    def wait_exit(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        # The reader ends at the pipe's end of file; then the pipe is given back (it stayed
        # open in the test process, one per worker started, until the suite ended).
        self._reader.join(5)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()


StartWorker = Callable[..., WorkerProcess]


@contextlib.contextmanager
def worker_processes(
    cwd: Path, ready_event: str, *, ready_timeout: float = 60.0, **defaults: str
) -> Iterator[StartWorker]:
    """start(**settings) -> a worker process (keys are WorkerSettings field names, on top of
    `defaults`) once it logged `ready_event` (within `ready_timeout` s); every process started
    is killed on exit."""
    started: list[WorkerProcess] = []

    def start(**settings: str) -> WorkerProcess:
        env = {f"FEDMQ_WORKER_{k.upper()}": v for k, v in {**defaults, **settings}.items()}
        env.setdefault("FEDMQ_WORKER_LOG_LEVEL", "INFO")
        # Several workers run at once: no HTTP port unless a test asks for one.
        env.setdefault("FEDMQ_WORKER_HTTP_PORT", "0")
        worker = WorkerProcess(env, cwd)
        started.append(worker)
        worker.wait_for(ready_event, timeout=ready_timeout)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """start_worker(**settings) -> a running worker; keys are WorkerSettings field names."""
    with worker_processes(tmp_path, "worker_started") as start:
        yield start
