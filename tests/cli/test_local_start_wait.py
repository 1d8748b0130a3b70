"""The launcher's start-up wait (`local.wait_healthy`, used by `fedmq local up`): a service that
exits fails the wait at once with its log's last lines; one that is alive and busy (its CPU time
grows, as a gateway importing its modules on a loaded machine) is waited for past the
no-progress bound; one that is alive but idle and silent fails after that bound, not at the
long limit.

Each "service" is a small real process the test starts as the launcher does (pid file, log
file, the party's /healthz port); no broker is needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedmq import local

pytestmark = pytest.mark.timeout(60)

PARTY = "9999"

SLOW_STARTER = textwrap.dedent(
    """
    import http.server, sys, time
    busy_until = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < busy_until:  # imports on a loaded machine: CPU, no port yet
        sum(range(10_000))
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
    """
)


def _launch(state: local.LocalState, code: str, *args: str) -> subprocess.Popen[bytes]:
    """Start `code` as the party's gateway, the way start_service does (pid file, log file)."""
    log_path = local.log_file(state, PARTY, "gateway")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path = local._pid_file(state, PARTY, "gateway")
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=log, stderr=subprocess.STDOUT
        )
    pid_path.write_text(str(proc.pid))
    local._children[proc.pid] = proc
    return proc


@pytest.fixture
def state(tmp_path: Path) -> local.LocalState:
    return local.plan([PARTY], tmp_path / "local")


def test_a_service_that_exits_fails_the_wait_at_once_with_its_log(state: local.LocalState) -> None:
    proc = _launch(state, "import sys; print('bad setting: FEDMQ_GATEWAY_X'); sys.exit(3)")
    try:
        start = time.monotonic()
        with pytest.raises(local.LauncherError) as failed:
            local.wait_healthy(state, PARTY, timeout=30)
        took = time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()
    message = str(failed.value)
    assert "gateway of party 9999 exited (status 3)" in message, message
    assert "bad setting: FEDMQ_GATEWAY_X" in message, message
    assert took < 10, took  # not the 30 s bound: as soon as the exit is seen (load-bound start)


def test_a_busy_slow_starter_is_waited_for_past_the_no_progress_bound(
    state: local.LocalState,
) -> None:
    port = state.parties[PARTY].http_port
    proc = _launch(state, SLOW_STARTER, str(port), "5")
    try:
        start = time.monotonic()
        local.wait_healthy(state, PARTY, timeout=2, limit=40)  # 2 s without CPU would fail
        took = time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()
    assert took >= 4, took  # it was healthy only after its 5 s of work, well past 2 s


def test_an_idle_silent_service_fails_after_the_no_progress_bound(
    state: local.LocalState,
) -> None:
    proc = _launch(state, "import time; print('waiting', flush=True); time.sleep(60)")
    try:
        start = time.monotonic()
        with pytest.raises(local.LauncherError) as failed:
            local.wait_healthy(state, PARTY, timeout=2, limit=40)
        took = time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()
    message = str(failed.value)
    assert "gateway of party 9999 not healthy" in message, message
    assert "no CPU time used for 2 s" in message and "waiting" in message, message
    assert took < 15, took  # the no-progress bound, not the 40 s limit
