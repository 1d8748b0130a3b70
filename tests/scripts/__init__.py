"""Python programs the tests run in a child process, as files (not `python -c` strings).

A test that must really kill a process -- a consumer that committed but has not acked, a
handler that holds a message -- runs one of these scripts with `kill_after_line`: the script
prints a marker line at the moment the test wants, and the test SIGKILLs it there (no ack, no
clean close; the broker sees the connection drop). Scripts take their inputs from argv and
print to stdout; their log lines may come first, so the marker is searched for.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent


def script_path(name: str) -> Path:
    """The path of tests/scripts/<name>; fails the test if there is no such script."""
    path = SCRIPTS / name
    assert path.is_file(), f"no test script {path}"
    return path


def run_script(name: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a script to its end in a fresh interpreter; its output is captured as text."""
    return subprocess.run(
        [sys.executable, str(script_path(name)), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def kill_after_line(name: str, *args: str, marker: str, timeout: float = 60.0) -> str:
    """Run a script, SIGKILL it once it prints a line starting with `marker`, return that line.

    Returns "" when the script exited, or `timeout` s passed, without printing the marker; the
    caller asserts on the line, with its own message. The process is always killed and reaped.
    """
    proc = subprocess.Popen(
        [sys.executable, str(script_path(name)), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        # readline() blocks; a thread lets the timeout hold even when the script prints nothing.
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")  # end of output

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if not line or line.startswith(marker):
                return line
        return ""
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
