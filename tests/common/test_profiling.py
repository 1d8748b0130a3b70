"""fedcommon.profiling: the CPU profile a service writes when FEDMQ_PROFILE_OUT names a folder."""

from __future__ import annotations

import pstats
import threading
import time
from pathlib import Path

import pytest
from fedcommon.profiling import ThreadProfiles, profile_path
from fedcommon.settings import ServiceSettings


def burn_cpu(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def sleep_a_while(seconds: float) -> None:
    time.sleep(seconds)


def by_name(stats: pstats.Stats) -> dict[str, tuple[int, float]]:
    """function name -> (calls, cumulative seconds)."""
    found: dict[str, tuple[int, float]] = {}
    for (_file, _line, name), (_cc, calls, _tt, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        found[name] = (calls, cum)
    return found


def test_threads_started_after_start_are_profiled_on_their_own_cpu_clock(tmp_path: Path) -> None:
    # Prepare
    profiles = ThreadProfiles()
    profiles.start()
    # Execute: one thread burns CPU, another only sleeps, the caller burns a little
    workers = [
        threading.Thread(target=burn_cpu, args=(0.2,)),
        threading.Thread(target=sleep_a_while, args=(0.3,)),
    ]
    for worker in workers:
        worker.start()
    burn_cpu(0.05)
    for worker in workers:
        worker.join()
    written = profiles.stop(tmp_path / "out.prof")
    # Assert: the burning thread's function is there with its CPU; the sleep costs no CPU
    found = by_name(pstats.Stats(str(written)))
    calls, cpu = found["burn_cpu"]
    assert calls == 2
    assert cpu >= 0.2
    assert found["sleep_a_while"][1] < 0.05


def test_profile_out_is_one_variable_for_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    class WorkerLike(ServiceSettings):
        model_config = {**ServiceSettings.model_config, "env_prefix": "FEDMQ_WORKERLIKE_"}

    assert WorkerLike().profile_out is None
    monkeypatch.setenv("FEDMQ_PROFILE_OUT", "/tmp/profiles")
    assert WorkerLike().profile_out == "/tmp/profiles"
    monkeypatch.setenv("FEDMQ_PROFILE_OUT", "")
    assert WorkerLike().profile_out is None


def test_one_file_per_process() -> None:
    path = profile_path("/tmp/p", "serving", "10000")
    assert path.parent == Path("/tmp/p")
    assert path.name.startswith("serving-10000-") and path.suffix == ".prof"
