"""The audit process takes its configured CPU priority (FEDMQ_AUDIT_NICE) before any thread
starts, so every thread it runs has it; it never raises a priority it was started with."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fedaudit.settings import DEFAULT_NICE, AuditSettings
from pydantic import ValidationError

PROBE = """
import os, threading
from fedaudit.priority import lower_priority
lower_priority({nice})
seen = []
thread = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))
thread.start()
thread.join()
print(os.getpriority(os.PRIO_PROCESS, 0), seen[0])
"""


def _priorities(nice: int, started_at: int = 0) -> list[int]:
    command = [sys.executable, "-c", PROBE.format(nice=nice)]
    if started_at:
        command = ["nice", "-n", str(started_at), *command]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    return [int(x) for x in out.stdout.split()]


@pytest.mark.skipif(sys.platform != "linux", reason="Linux nice values")
def test_the_audit_lowers_its_priority_and_its_threads_inherit_it() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)  # 0 unless the test run itself is niced
    # The process and a thread it starts afterwards both run at the configured value.
    assert _priorities(DEFAULT_NICE) == [max(base, DEFAULT_NICE)] * 2
    assert _priorities(0) == [base, base]
    # Started lower than configured: it stays lower.
    assert _priorities(2, started_at=9) == [min(19, base + 9)] * 2


def test_nice_is_a_linux_nice_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMQ_AUDIT_PARTY_ID", "9999")
    assert AuditSettings().nice == DEFAULT_NICE
    monkeypatch.setenv("FEDMQ_AUDIT_NICE", "19")
    assert AuditSettings().nice == 19
    for bad in ("-1", "20"):
        monkeypatch.setenv("FEDMQ_AUDIT_NICE", bad)
        with pytest.raises(ValidationError, match="nice"):
            AuditSettings()
