"""A component that hangs does not keep its job running forever: the initiator fails the job
when a task has not finished within its limit (the component's `timeout_s` in the pipeline,
else the scheduler's task_timeout_s), naming the component, the party and the limit, and the
stop path cancels the open tasks everywhere. The limit is per task, not per job."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fedscheduler.rpc import SchedulerCommandFailed
from fedschemas.payloads import TaskRun

from .conftest import GUEST, HOST, PSI_EVAL, Federation, Script, wait_for

PSI_WITH_TIMEOUT = PSI_EVAL.replace("    type: psi\n", "    type: psi\n    timeout_s: 1\n")


def hold(component: str) -> Script:
    def script(run: TaskRun) -> tuple[str, str | None] | None:
        return None if run.component == component else ("success", None)

    return script


def task_timeouts(fed: Federation, party: str) -> float:
    value = fed.schedulers[party].metrics.registry.get_sample_value(
        "fedmq_scheduler_task_timeouts_total"
    )
    return value or 0.0


def test_a_remote_task_past_its_pipeline_timeout_fails_the_job_naming_it(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: psi_0 may take 1 s; it hangs at the host (its worker never reports)
    fed = federation_factory(scripts={HOST: hold("psi_0")})

    # Execute
    fed.client(GUEST).submit(PSI_WITH_TIMEOUT, job_id="job-hung-host")
    wait_for(lambda: "psi_0" in fed.workers[HOST].components_run("job-hung-host"))
    dispatched_at = time.monotonic()
    failed = fed.wait_state(GUEST, "job-hung-host", "failed", timeout=10.0)
    took = time.monotonic() - dispatched_at
    host_view = fed.wait_state(HOST, "job-hung-host", "failed")

    # Assert: the reason names the component, the party and the limit; the host's task is
    # canceled through job.stop; nobody timed out a party
    assert failed["reason"] == (
        "component psi_0 at party 10000 did not finish within 1 s (timeout_s in the "
        "pipeline): it may hang"
    )
    assert 0.8 < took < 4.0
    assert host_view["reason"] == failed["reason"]
    wait_for(lambda: fed.workers[HOST].cancels, what="task.cancel at the host")
    assert [c.component for c in fed.workers[HOST].cancels] == ["psi_0"]
    assert task_timeouts(fed, GUEST) == 1.0
    assert (
        fed.schedulers[GUEST].metrics.registry.get_sample_value(
            "fedmq_scheduler_party_timeouts_total", {"phase": "running"}
        )
        == 0  # the series exists from start-up (issue #22); no party timed out
    )


def test_an_own_task_past_the_default_task_timeout_fails_the_job_and_is_canceled(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: no timeout_s in the pipeline; task_timeout_s=1; psi_0 hangs at the guest
    fed = federation_factory(scripts={GUEST: hold("psi_0")}, task_timeout_s=1.0)

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-hung-guest")
    failed = fed.wait_state(GUEST, "job-hung-guest", "failed", timeout=10.0)

    # Assert
    assert failed["reason"] == (
        "component psi_0 at party 9999 did not finish within 1 s (task_timeout_s): it may hang"
    )
    wait_for(lambda: fed.workers[GUEST].cancels, what="task.cancel at the guest")
    assert [c.component for c in fed.workers[GUEST].cancels] == ["psi_0"]
    stops = fed.relay.of_type("job.stop")
    assert [e.destination.party_id for e in stops] == [HOST]
    fed.wait_state(HOST, "job-hung-guest", "failed")
    assert task_timeouts(fed, GUEST) == 1.0


def test_the_limit_is_per_task_so_a_job_longer_than_it_succeeds(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: every guest task takes 1 s, the limit is 2.5 s a task; the guest's three tasks
    # run one after another, so the job takes longer than the limit. (1.5 s of headroom a
    # task: with 0.6 s of it, a loaded CI machine's report and dispatch delays crossed it.)
    def slow(_run: TaskRun) -> tuple[str, str | None]:
        time.sleep(1.0)
        return ("success", None)

    fed = federation_factory(scripts={GUEST: slow}, task_timeout_s=2.5)

    # Execute
    started = time.monotonic()
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-slow-steps")
    done = fed.wait_state(GUEST, "job-slow-steps", "success", timeout=30.0)

    # Assert
    assert time.monotonic() - started > 2.5
    assert done["reason"] is None
    assert fed.workers[GUEST].cancels == []
    assert task_timeouts(fed, GUEST) == 0.0


@pytest.mark.parametrize("value", ["0", "-5", "soon", "true"])
def test_a_pipeline_with_a_bad_timeout_is_refused_at_submission(
    federation_factory: Callable[..., Federation], value: str
) -> None:
    fed = federation_factory()
    pipeline = PSI_EVAL.replace("    type: psi\n", f"    type: psi\n    timeout_s: {value}\n")

    with pytest.raises(SchedulerCommandFailed, match="component psi_0: timeout_s must be"):
        fed.client(GUEST).submit(pipeline, job_id="job-bad-timeout")
