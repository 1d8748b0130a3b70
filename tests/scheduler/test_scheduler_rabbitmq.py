"""Two parties' schedulers and gateways as real processes (`fedmq local`) on RabbitMQ (a vhost
per party), PostgreSQL and Redis: a job proposed, accepted and run to success through the
gateways' signed site link; then a party whose services stop fails the next job, by name,
after the configured timeout. The workers are in-process fakes on each party's broker (they
consume svc.worker as the worker service does), so the test checks the scheduling, not the
components."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fedbus import Bus, connect
from fedflow.tables import TableStore
from fedscheduler.rpc import SchedulerClient
from fedschemas.payloads import TaskRun

from fedmq import local

from .conftest import EXAMPLE_DATA, GUEST, HOST, PSI_EVAL, FakeWorker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTY_TIMEOUT_S = 6.0


def hold_psi_of_held_jobs(run: TaskRun) -> tuple[str, str | None] | None:
    return None if run.component == "psi_0" and run.job_id.startswith("held") else ("success", None)


@pytest.fixture
def stack(
    amqp_url: str, redis_url: str, pg_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[local.LocalState, Path]]:
    # Reaches the scheduler processes through the launcher's environment.
    monkeypatch.setenv("FEDMQ_SCHEDULER_PARTY_TIMEOUT_S", str(PARTY_TIMEOUT_S))
    monkeypatch.setenv("FEDMQ_SCHEDULER_HEARTBEAT_INTERVAL_S", "1")
    monkeypatch.setenv("FEDMQ_SCHEDULER_TIMER_INTERVAL_S", "0.2")
    root = Path(tempfile.mkdtemp(prefix="fedmq-sched-test-"))
    prefix = f"fedmqs{uuid.uuid4().hex[:8]}"
    try:
        state = local.up(
            [GUEST, HOST],
            root,
            services=("gateway", "scheduler"),
            prefix=prefix,
            federation="test",
            amqp_url=amqp_url.rsplit("/", 1)[0],
            redis_url=redis_url.rsplit("/", 1)[0],
            pg_admin_url=pg_admin_url,
        )
        yield state, root
    finally:
        if (root / local.STATE_FILE).exists():
            local.down(root, purge=True)
        shutil.rmtree(root, ignore_errors=True)


def test_a_job_runs_across_two_party_processes_and_a_stopped_party_fails_the_next_by_name(
    stack: tuple[local.LocalState, Path],
) -> None:
    # Prepare: a fake worker per party on its broker; the host grants its table to the guest
    state, root = stack
    buses: dict[str, Bus] = {p: connect(state.parties[p].bus_url) for p in (GUEST, HOST)}
    workers: dict[str, FakeWorker] = {}
    try:
        for party, bus in buses.items():
            tables = TableStore(
                sa.create_engine(f"sqlite:///{root / party / 'tables.db'}"), root / party / "t"
            )
            name = "breast_hetero_guest" if party == GUEST else "breast_hetero_host"
            tables.upload(
                name, EXAMPLE_DATA / f"{name}.csv", label_column="y" if party == GUEST else None
            )
            workers[party] = FakeWorker(party, bus, tables, hold_psi_of_held_jobs)
            workers[party].start()
        guest = SchedulerClient(buses[GUEST], GUEST, timeout=20)
        host = SchedulerClient(buses[HOST], HOST, timeout=20)
        host.grant_add("breast_hetero_host", GUEST, ["psi"])

        # Execute 1: a job through both gateways
        guest.submit(PSI_EVAL, job_id="job-e2e")
        done = wait_for(
            lambda: (v := guest.status("job-e2e"))["state"] in ("success", "failed") and v,
            timeout=60,
            what="job-e2e to end",
        )
        host_view = wait_for(
            lambda: (v := host.status("job-e2e"))["state"] == "success" and v, timeout=30
        )

        # Assert 1
        assert done["state"] == "success", done
        assert done["tasks_succeeded"] == 5
        assert host_view["tasks_succeeded"] == 2
        assert workers[HOST].components_run("job-e2e") == ["reader_0", "psi_0"]
        assert workers[HOST].tables.reads("breast_hetero_host") == 1

        # Execute 2: a job held in psi; the host's scheduler and gateway stop
        guest.submit(PSI_EVAL, job_id="held-1")
        wait_for(lambda: "psi_0" in workers[HOST].components_run("held-1"), timeout=60)
        # The host goes silent when its scheduler is signalled (a graceful stop sends no more
        # heartbeats), so the guest's party timeout runs from there, not from when both
        # processes have finished exiting (seconds later on a loaded machine).
        stopped_at = time.monotonic()
        local.stop_service(state, HOST, "scheduler")
        local.stop_service(state, HOST, "gateway")
        failed = wait_for(
            lambda: (v := guest.status("held-1"))["state"] == "failed" and v,
            timeout=PARTY_TIMEOUT_S + 30,
            what="held-1 to fail",
        )
        took = time.monotonic() - stopped_at

        # Assert 2
        assert failed["reason"].startswith("party 10000 sent nothing for "), failed
        assert took >= PARTY_TIMEOUT_S - 2.0  # heartbeats sent just before the stop still count
        wait_for(lambda: workers[GUEST].cancels, timeout=10, what="task.cancel at the guest")
        assert [c.component for c in workers[GUEST].cancels] == ["psi_0"]
    finally:
        for worker in workers.values():
            worker.stop()
        for bus in buses.values():
            bus.close()
