"""Crypto pool test helpers: `python -m fedworker` crypto replicas as real subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


class ReplicaProcess:
    """One `python -m fedworker` process; its JSON log lines are collected as they come."""

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

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [line for line in self.lines if line.get("event") == name]

    def wait_for(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if found:
                return found[0]
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(
                    f"replica exited ({self.proc.returncode}) before logging {name}:\n"
                    + "".join(self.raw[-30:])
                )
            time.sleep(0.02)
        raise AssertionError(f"replica did not log {name} in {timeout} s:\n" + "".join(self.raw))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


StartReplica = Callable[..., ReplicaProcess]


@pytest.fixture
def start_replica(tmp_path: Path) -> Iterator[StartReplica]:
    """start_replica(**settings) -> a running crypto-only worker (WorkerSettings field names)."""
    started: list[ReplicaProcess] = []

    def start(**settings: str) -> ReplicaProcess:
        env = {f"FEDMQ_WORKER_{k.upper()}": v for k, v in settings.items()}
        env.setdefault("FEDMQ_WORKER_LOG_LEVEL", "INFO")
        env.setdefault("FEDMQ_WORKER_CRYPTO_ONLY", "true")
        # Several replicas run at once: no HTTP port unless a test asks for one.
        env.setdefault("FEDMQ_WORKER_HTTP_PORT", "0")
        replica = ReplicaProcess(env, tmp_path)
        started.append(replica)
        replica.wait_for("crypto_replica_started")
        return replica

    yield start
    for replica in started:
        replica.kill()
