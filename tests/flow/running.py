"""Tasks run party by party in this process, and the crashes the resume tests inflict on them.

Shared by tests/flow/test_resume.py (iter_sum) and tests/lr (hetero_lr): a task runs on its own
thread through its party's runtime; a crash is an exception raised at a chosen point (after a
checkpoint, or after the n-th send and before that step's checkpoint), standing in for the
process dying there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fedflow.runner import TaskResult
from fedflow.standalone import LocalWorld
from fedflow.task import TaskSpec


class SimulatedCrash(Exception):
    """Stands in for the process dying at this point."""


@dataclass
class Running:
    thread: threading.Thread
    cancel: threading.Event
    join_timeout: float
    result: list[TaskResult] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(self.join_timeout if timeout is None else timeout)
        assert not self.thread.is_alive(), "task did not finish"


def start_task(
    world: LocalWorld, spec: TaskSpec, *, recv_timeout: float, join_timeout: float, **kwargs: Any
) -> Running:
    """Runs `spec` at its party on a thread; its result or error lands on the returned Running."""
    cancel = threading.Event()
    running: Running

    def target() -> None:
        try:
            running.result.append(
                world.parties[spec.party_id].runtime.run_task(
                    spec, cancel=cancel, recv_timeout=recv_timeout, **kwargs
                )
            )
        except BaseException as exc:  # inspected by the test
            running.error.append(exc)

    running = Running(threading.Thread(target=target, daemon=True), cancel, join_timeout)
    running.thread.start()
    return running


def crash_on_progress(after: int, steps: int, unit: str = "round") -> Callable[[float], None]:
    """Dies right after the checkpoint of step `after` of `steps` (progress is reported after
    the checkpoint)."""

    def on_progress(fraction: float) -> None:
        if round(fraction * steps) == after + 1:
            raise SimulatedCrash(f"after the checkpoint of {unit} {after}")

    return on_progress


def crash_after_sends(
    world: LocalWorld, party: str, sends: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`party` dies right after its `sends`-th message was published, before that step's
    checkpoint; the restarted task sends normally."""
    endpoint = world.parties[party].endpoint
    original = endpoint.send_recorded
    count = {"n": 0}

    def send_then_die(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        count["n"] += 1
        if count["n"] == sends:
            monkeypatch.setattr(endpoint, "send_recorded", original)
            raise SimulatedCrash(f"after send {sends}")

    monkeypatch.setattr(endpoint, "send_recorded", send_then_die)


def crash_and_restart(
    start: Callable[..., Running],
    world: LocalWorld,
    tasks: dict[str, TaskSpec],
    party: str,
    **doomed: Any,
) -> tuple[Running, Running]:
    """Runs the two-party job with the `party` role's task crashing (by `doomed`'s on_progress
    or a crash set up before) and started again; both finish without error. Returns the
    restarted task and its peer."""
    other = "guest" if party == "host" else "host"
    peer = start(world, tasks[other])
    crashed = start(world, tasks[party], **doomed)
    crashed.join()
    assert isinstance(crashed.error[0], SimulatedCrash)
    again = start(world, tasks[party])
    again.join()
    peer.join()
    assert not again.error and not peer.error, (again.error, peer.error)
    return again, peer
