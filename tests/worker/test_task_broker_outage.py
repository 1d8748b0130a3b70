"""Issue #21: a component whose send gave up because the party's broker stayed away longer than
the bus's retry window (fedbus.BrokerUnavailable: a broker restart that took 32 s under load in
the fault suite) does not fail its task: the task stays claimed, its lease lapses, a runner
claims it again and it runs to its end. (Any other error still fails the task:
tests/worker/test_worker_tasks.py::test_a_failing_component_reports_failed_with_the_reason.)

Two workers in-process on memory brokers (tests/worker/test_worker_tasks.Federation2); the
host's noop raises once, as the bus does when a publish gives up."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fedbus import BrokerUnavailable
from fedflow.components.base import ComponentType

from tests.worker.test_worker_tasks import GUEST, HOST, Federation2


@pytest.fixture
def fed2_short_lease(unique_name: str, tmp_path: Path) -> Iterator[Federation2]:
    fed = Federation2(unique_name, tmp_path, task_lease_s=1.0)
    fed.start()
    yield fed
    fed.stop()


def _fail_once_at_host(monkeypatch: pytest.MonkeyPatch, error: Exception) -> dict[str, int]:
    calls = {GUEST: 0, HOST: 0}
    lock = threading.Lock()
    real = ComponentType.run

    def run(self: ComponentType, ctx: Any) -> Mapping[str, Any]:
        if self.name != "noop":
            return real(self, ctx)
        with lock:
            calls[ctx.party_id] += 1
            first = calls[ctx.party_id] == 1
        if ctx.party_id == HOST and first:
            raise error
        return real(self, ctx)

    # On the class: the registry's component objects are built once per process.
    monkeypatch.setattr(ComponentType, "run", run)
    return calls


def test_a_task_whose_send_gave_up_on_the_broker_resumes_instead_of_failing(
    fed2_short_lease: Federation2, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    calls = _fail_once_at_host(
        monkeypatch,
        BrokerUnavailable("publish of 'm-1' gave up after 30.0 s: channel closed"),
    )

    # Execute
    fed2_short_lease.run("job-b", "noop_0", "noop", {}, {})
    ended = fed2_short_lease.wait_final("noop_0")

    # Assert: run again after its lease lapsed, never reported failed
    assert {p: s.state for p, s in ended.items()} == {GUEST: "success", HOST: "success"}
    assert "failed" not in fed2_short_lease.states(HOST, "noop_0")
    assert calls[HOST] == 2
