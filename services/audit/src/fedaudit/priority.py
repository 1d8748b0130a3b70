"""The audit process's CPU priority (AuditSettings.nice), taken in `python -m fedaudit` before
anything else runs. Light on purpose: nothing of the service is imported here."""

from __future__ import annotations

import os


def lower_priority(nice: int) -> None:
    """Take CPU priority `nice` (never raise it: a process started lower stays lower). Before
    any thread starts: on Linux each thread has its own nice value, and new threads inherit
    their creator's."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
