"""job.status had four meanings; job.start, job.end, job.heartbeat and job.task_report are one
each. A scheduler reads both forms, so a party still sending job.status (the previous
version, or this one with legacy_job_status) and a party sending the new types run a job
together (the message ids are the same in both forms: the tag, not the type, is part of
an id)."""

from __future__ import annotations

import time
from collections.abc import Callable

from fedscheduler.main import Scheduler

from .conftest import GUEST, HOST, PSI_EVAL, Federation, hold_psi, wait_for

NEW_TYPES = {"job.start", "job.end", "job.heartbeat", "job.task_report"}


def crossed_types(fed: Federation, source: str) -> set[str]:
    return {
        e.type
        for e in fed.relay.crossed
        if e.source.party_id == source and e.type.startswith("job.")
    }


def with_settings(fed: Federation, party: str, **changes: object) -> None:
    """Replace `party`'s (unstarted) scheduler by one with `changes` to its settings."""
    old = fed.schedulers[party]
    old.stop()
    fed.schedulers[party] = Scheduler(old.settings.model_copy(update=changes), bus=fed.buses[party])
    fed.schedulers[party].start()


def test_schedulers_sending_the_new_types_run_a_job_to_success(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare
    fed = federation_factory(legacy_job_status=False)

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-new-types")
    done = fed.wait_state(GUEST, "job-new-types", "success")
    fed.wait_state(HOST, "job-new-types", "success")

    # Assert: the start, the host's task reports and the end crossed in their own types
    assert done["tasks_succeeded"] == 5
    assert {"job.start", "job.end"} <= crossed_types(fed, GUEST)
    assert "job.task_report" in crossed_types(fed, HOST)
    assert fed.relay.of_type("job.status") == []


def test_a_party_still_sending_job_status_runs_a_job_with_one_sending_the_new_types(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: the guest sends job.status (as the previous version does), the host the new
    # types; heartbeats every 0.2 s while psi_0 is held
    fed = federation_factory(
        start=(GUEST,),
        scripts={GUEST: hold_psi},
        party_timeout_s=2.0,
        heartbeat_interval_s=0.2,
    )
    with_settings(fed, HOST, legacy_job_status=False)

    # Execute: the job runs past several heartbeats both ways, then the guest's psi_0 ends
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-mixed")
    wait_for(lambda: "psi_0" in fed.workers[GUEST].components_run("job-mixed"))
    time.sleep(1.0)
    fed.workers[GUEST].report("job-mixed", "psi_0", 0, "success", seq=2, outputs={"data": "x"})

    # Assert: both ends read the other's form; a job.status start and a job.task_report
    # from the host crossed, nothing was dead-lettered, the job succeeded at both
    fed.wait_state(GUEST, "job-mixed", "success")
    fed.wait_state(HOST, "job-mixed", "success")
    assert crossed_types(fed, GUEST) >= {"job.propose", "job.status"}
    assert not crossed_types(fed, GUEST) & NEW_TYPES
    assert {"job.heartbeat", "job.task_report"} <= crossed_types(fed, HOST)
    assert "job.status" not in crossed_types(fed, HOST)
