"""The serving service of each party on the local two-party stack (tests/local_stack.py).

`fedmq local up` starts it with the rest of each party (`two_parties(serving=True)`) and makes
each gateway expose `svc.serving` to its peer; `LaunchedServing` kills and restarts the one
the launcher started. `ServingProcess` runs one by hand beside a stack launched without it,
with settings of its own per party (bench/serving)."""

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
"""Both gateways let their peer call svc.serving (the launcher's gateway settings say so
already; kept for callers that pass it)."""


class LaunchedServing:
    """The serving service `fedmq local` started for one party: kill it, start it again."""

    def __init__(self, state: local.LocalState, party: str) -> None:
        self.state, self.party = state, party

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.state.parties[self.party].serving_http_port}"

    def kill(self) -> None:
        """SIGKILL (a crash): the launcher's pid file goes with it."""
        assert local.stop_service(self.state, self.party, "serving", kill=True), "not running"

    def start(self, timeout: float = 60.0) -> None:
        local.start_service(self.state, self.party, "serving")
        local.wait_healthy(self.state, self.party, timeout, service="serving")

    def stop(self) -> None:
        local.stop_service(self.state, self.party, "serving")

    def tail(self, chars: int = 3000) -> str:
        try:
            return local.log_file(self.state, self.party, "serving").read_text()[-chars:]
        except OSError:
            return ""

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text


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
        # The port is picked before the process binds it, so another process can take it in
        # between: a start that fails on a taken port goes again on a fresh one (as `local.up`).
        for attempt in range(local.PORT_TRIES):
            since = self.log_path.stat().st_size if self.log_path.exists() else 0
            self.launch()
            try:
                self.wait_healthy(timeout)
                return
            except RuntimeError:
                with open(self.log_path, "rb") as log:
                    log.seek(since)
                    taken = local.PORT_TAKEN.encode() in log.read()
                if attempt == local.PORT_TRIES - 1 or not taken:
                    raise
            self.port = local.free_port()
            self.env["FEDMQ_SERVING_HTTP_PORT"] = str(self.port)

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
