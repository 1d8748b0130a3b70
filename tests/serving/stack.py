"""The serving service of each party as a process beside the local two-party stack
(tests/local_stack.py): the parties' gateways expose `svc.serving` to their peer, and each
party's serving service runs on the party's vhost, database, Redis and tables folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fedmq import local

SERVING_RPC_ENV = {"FEDMQ_GATEWAY_RPC_SERVICES": json.dumps({"svc.serving": ["*"]})}
"""Both gateways let their peer call svc.serving (what the gateway's rpc_services says)."""


class ServingProcess:
    """`python -m fedserving` for one party of a local stack; start, kill, start again."""

    def __init__(self, state: local.LocalState, party: str, log_dir: Path, **settings: str) -> None:
        self.party = party
        self.port = local.free_port()
        p = state.parties[party]
        self.env = {
            **os.environ,
            "FEDMQ_SERVING_PARTY_ID": party,
            "FEDMQ_SERVING_BUS_URL": p.bus_url,
            "FEDMQ_SERVING_DATABASE_URL": p.database_url,
            "FEDMQ_SERVING_REDIS_URL": p.redis_url,
            "FEDMQ_SERVING_REDIS_PREFIX": f"{state.prefix}:{party}:serving:",
            "FEDMQ_SERVING_TABLES_DIR": p.tables_dir,
            "FEDMQ_SERVING_HTTP_PORT": str(self.port),
            "FEDMQ_SERVING_LOG_JSON": "true",
            **{f"FEDMQ_SERVING_{k.upper()}": v for k, v in settings.items()},
        }
        self.log_path = log_dir / f"serving-{party}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_healthy(timeout)

    def launch(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fedserving"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serving {self.party} exited: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"serving {self.party} not healthy in {timeout} s: {self.tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text()[-chars:]
        except OSError:
            return ""

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text
