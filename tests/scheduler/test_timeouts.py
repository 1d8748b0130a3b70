"""Only the scheduler fails a job, and never by hanging: a party that goes silent (no heartbeat,
no status) longer than party_timeout_s fails the job with a message naming the party; so does a
proposal left unanswered. Heartbeats keep a long but healthy job alive."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fedscheduler.main import Scheduler
from fedscheduler.rpc import SchedulerCommandFailed

from .conftest import (
    GUEST,
    HOST,
    PARTY_TIMEOUT_S,
    PSI_EVAL,
    Federation,
    hold_psi,
    timed_psi_job,
    wait_for,
)

TIMEOUT_S = PARTY_TIMEOUT_S


def test_a_party_whose_services_stop_fails_the_job_after_the_timeout_naming_it(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: a running job; psi never finishes at either party
    fed = timed_psi_job(federation_factory, "job-silent")

    # Execute: the host's scheduler and worker stop
    failed, took = fed.stop_site_until_failed(HOST, GUEST, "job-silent", timeout=10 * TIMEOUT_S)

    # Assert
    assert failed["reason"].startswith("party 10000 sent nothing for ")
    assert "party_timeout_s=1" in failed["reason"]
    assert TIMEOUT_S * 0.8 < took < TIMEOUT_S + 3.0
    assert [c.component for c in fed.workers[GUEST].cancels] == ["psi_0"]
    stops = fed.relay.of_type("job.stop")
    assert [e.destination.party_id for e in stops] == [HOST]


def test_heartbeats_keep_a_long_running_job_alive(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: psi runs for longer than the timeout at both parties, both schedulers alive
    fed = timed_psi_job(federation_factory, "job-long")

    # Execute: three timeouts pass
    time.sleep(3 * TIMEOUT_S)

    # Assert
    assert fed.job(GUEST, "job-long")["state"] == "running"
    beats = [e for e in fed.relay.of_type("job.status") if e.tag == "job.heartbeat"]
    assert len(beats) >= 5
    assert len({e.message_id for e in beats}) == len(beats)  # each its own id: none deduped


def test_a_proposal_left_unanswered_fails_the_job_naming_the_party(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: the host's scheduler never starts
    fed = federation_factory(start=(GUEST,), party_timeout_s=TIMEOUT_S)

    # Execute
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-unanswered")
    failed = fed.wait_state(GUEST, "job-unanswered", "failed", timeout=10 * TIMEOUT_S)

    # Assert
    assert failed["reason"] == (
        "party 10000 did not answer the job proposal within 1 s (party_timeout_s)"
    )
    assert fed.workers[GUEST].runs == []
    with pytest.raises(SchedulerCommandFailed, match="party 10000 did not accept"):
        fed.client(GUEST).rerun("job-unanswered")


def test_a_restarted_initiator_counts_silence_from_its_own_start(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: a running job; the guest's scheduler is down for longer than the timeout while
    # the host keeps sending heartbeats (they queue on the guest's broker). The host is more
    # patient with its initiator than the outage lasts, or it would fail its side of the job.
    fed = federation_factory(
        scripts={GUEST: hold_psi, HOST: hold_psi},
        start=(GUEST,),
        party_timeout_s=TIMEOUT_S,
        heartbeat_interval_s=0.2,
    )
    unstarted = fed.schedulers[HOST]
    unstarted.stop()
    patient = unstarted.settings.model_copy(update={"party_timeout_s": 30.0})
    fed.schedulers[HOST] = Scheduler(patient, bus=fed.buses[HOST])
    fed.schedulers[HOST].start()
    fed.client(GUEST).submit(PSI_EVAL, job_id="job-restart")
    wait_for(lambda: "psi_0" in fed.workers[HOST].components_run("job-restart"))
    guest = fed.schedulers[GUEST]
    guest.stop()
    time.sleep(2 * TIMEOUT_S)

    # Execute: a new scheduler process for the guest on the same database and broker
    fed.schedulers[GUEST] = Scheduler(guest.settings, bus=fed.buses[GUEST])
    fed.schedulers[GUEST].start()
    time.sleep(2 * TIMEOUT_S)

    # Assert: the queued heartbeats and the live ones keep the job running
    assert fed.job(GUEST, "job-restart")["state"] == "running"
