"""A CPU-clock profile of every thread of a service, written when it stops (issue #15).

`run_service` profiles the whole process when the service's settings name a folder
(`profile_out`, read from FEDMQ_PROFILE_OUT by every service's settings): each thread gets its
own cProfile profiler timed with `time.thread_time` -- the thread's own CPU, so the time a
thread spends waiting for a core on a loaded machine (or blocked in a socket read) is not
counted, and attributions do not depend on the machine's load. At exit the threads' profiles
are merged into one pstats file, `<folder>/<service>-<party>-<pid>.prof`
(`python -m pstats FILE`, or `pstats.Stats(FILE).sort_stats("tottime")`).

Threads started before `start()` other than the calling one are not profiled (a service builds
its threads after the shell starts the profile). Unset, nothing is installed: no cost.
cProfile roughly doubles the CPU of Python code, so read the shares, not the absolute times.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any


class ThreadProfiles:
    """cProfile on the calling thread and on every thread started after `start()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: list[cProfile.Profile] = []
        self._running = False

    def _new(self) -> cProfile.Profile:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self._profiles.append(profile)
        return profile

    def _on_thread_start(self, _frame: FrameType, _event: str, _arg: Any) -> None:
        # threading calls this once, in the new thread, before its target runs: the thread's
        # own profiler replaces this hook (sys.setprofile) from here on.
        if self._running:
            self._new().enable()

    def start(self) -> None:
        self._running = True
        threading.setprofile(self._on_thread_start)
        self._new().enable()

    def stop(self, path: Path) -> Path:
        """Stop profiling new threads and write every thread's stats merged into `path`.

        Another thread's profiler cannot be switched off from here (cProfile hooks the thread
        that enabled it); its stats are read as they stand, the calls still running left out."""
        self._running = False
        threading.setprofile(None)  # type: ignore[arg-type,unused-ignore]  # None: no hook
        with self._lock:
            profiles = list(self._profiles)
        profiles[0].disable()
        merged: pstats.Stats | None = None
        for profile in profiles:
            profile.snapshot_stats()
            if not getattr(profile, "stats", None):
                continue
            if merged is None:
                merged = pstats.Stats(profile)
            else:
                merged.add(profile)
        path.parent.mkdir(parents=True, exist_ok=True)
        if merged is None:
            path.write_bytes(b"")
        else:
            merged.dump_stats(str(path))
        return path


def profile_path(folder: str | Path, service: str, party_id: str) -> Path:
    """Where `service`'s profile goes: one file per process."""
    return Path(folder) / f"{service}-{party_id}-{os.getpid()}.prof"


def summary(path: str | Path, limit: int = 40, sort: str = "tottime") -> str:
    """The top `limit` functions of a profile file as text (what `python -m pstats` prints)."""
    import io

    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats(sort).print_stats(limit)
    return out.getvalue()


if __name__ == "__main__":  # python -m fedcommon.profiling FILE [LIMIT]
    print(summary(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40))
