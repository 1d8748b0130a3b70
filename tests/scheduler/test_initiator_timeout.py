"""A participant does not wait forever for an initiator that is gone: when nothing of a job has
come from its initiator for party_timeout_s, it fails its side of the job naming the initiator
and cancels its tasks. The initiator heartbeats to every party while a job is open, so a long
but healthy job is never timed out there."""

from __future__ import annotations

import time
from collections.abc import Callable

from fedbus import Bus
from fedschemas import decode_payload
from fedschemas.payloads import JobStatus

from .conftest import (
    GUEST,
    HOST,
    PARTY_TIMEOUT_S,
    PSI_EVAL,
    Federation,
    Relay,
    timed_psi_job,
    wait_for,
)

TIMEOUT_S = PARTY_TIMEOUT_S


class OneWayRelay(Relay):
    """Only the gateway path from `src` to `dst`: a link that lost its other direction."""

    def __init__(self, buses: dict[str, Bus], src: str, dst: str) -> None:
        super().__init__(buses)
        self.src, self.dst = src, dst

    def start(self) -> None:
        bus = self.buses[self.src]
        bus.declare(f"out.{self.dst}")
        self._subs.append(bus.subscribe(f"out.{self.dst}", self._forward(self.dst)))


def initiator_timeouts(fed: Federation, party: str) -> float:
    value = fed.schedulers[party].metrics.registry.get_sample_value(
        "fedmq_scheduler_party_timeouts_total", {"phase": "initiator"}
    )
    return value or 0.0


def test_a_participant_fails_its_side_when_the_initiator_goes_silent_naming_it(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: a running job; psi never finishes at either party
    fed = timed_psi_job(federation_factory, "job-orphan")

    # Execute: the initiator's site dies (scheduler and worker)
    failed, took = fed.stop_site_until_failed(GUEST, HOST, "job-orphan", timeout=10 * TIMEOUT_S)

    # Assert: failed after about the timeout, naming the initiator; its running task canceled
    assert failed["reason"].startswith("no word from initiator party 9999 for ")
    assert "party_timeout_s=1" in failed["reason"]
    assert TIMEOUT_S * 0.8 < took < TIMEOUT_S + 3.0
    wait_for(lambda: fed.workers[HOST].cancels, what="task.cancel at the host")
    assert [(c.component, c.job_id) for c in fed.workers[HOST].cancels] == [("psi_0", "job-orphan")]
    psi = next(t for t in fed.client(HOST).list_tasks("job-orphan") if t["component"] == "psi_0")
    assert psi["state"] == "canceled"
    assert initiator_timeouts(fed, HOST) == 1.0
    assert initiator_timeouts(fed, GUEST) == 0.0


def test_an_initiator_whose_messages_are_lost_learns_why_its_participant_gave_up(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: a running job, then the link from the guest to the host breaks one way (the
    # guest's messages queue on its broker; the host's still arrive)
    fed = timed_psi_job(federation_factory, "job-one-way")
    fed.relay.stop()
    host_to_guest = OneWayRelay(fed.buses, HOST, GUEST)
    host_to_guest.start()

    # Execute
    try:
        host_failed = fed.wait_state(HOST, "job-one-way", "failed", timeout=10 * TIMEOUT_S)
        guest_failed = fed.wait_state(GUEST, "job-one-way", "failed", timeout=5 * TIMEOUT_S)
    finally:
        host_to_guest.stop()

    # Assert: the host's report of its canceled task carries the reason to the initiator,
    # which fails the job with it (not with a timeout of its own) and cancels its own psi
    assert host_failed["reason"].startswith("no word from initiator party 9999 for ")
    assert guest_failed["reason"].startswith(
        "party 10000: component psi_0 canceled: no word from initiator party 9999 for "
    )
    reports = [
        decode_payload(e)
        for e in host_to_guest.of_type("job.status")
        if e.tag == "job.status" and e.destination.party_id == GUEST
    ]
    assert any(isinstance(r, JobStatus) and r.task_state == "canceled" for r in reports)
    wait_for(lambda: fed.workers[GUEST].cancels, what="task.cancel at the guest")
    assert [c.component for c in fed.workers[GUEST].cancels] == ["psi_0"]


def test_the_initiators_heartbeats_keep_a_long_job_alive_at_its_participants(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: psi runs for longer than the timeout at both parties, both sites alive
    fed = timed_psi_job(federation_factory, "job-long-host")

    # Execute: three timeouts pass
    time.sleep(3 * TIMEOUT_S)

    # Assert: running on both sides; the initiator's beats reached the host, each its own id
    assert fed.job(HOST, "job-long-host")["state"] == "running"
    assert fed.job(GUEST, "job-long-host")["state"] == "running"
    beats = [
        e
        for e in fed.relay.of_type("job.status")
        if e.tag == "job.heartbeat" and e.source.party_id == GUEST
    ]
    assert len(beats) >= 5
    assert {e.destination.party_id for e in beats} == {HOST}
    assert len({e.message_id for e in beats}) == len(beats)
    assert fed.workers[HOST].cancels == []
    assert initiator_timeouts(fed, HOST) == 0.0


THREE_PARTIES = PSI_EVAL.replace('host: ["10000"]', 'host: ["10000", "10001"]')


def test_a_participant_waiting_for_the_start_fails_its_side_when_the_initiator_dies(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: the host accepted; the second host never answers, so the job waits at the host
    fed = federation_factory(
        (GUEST, HOST, "10001"),
        start=(GUEST, HOST),
        party_timeout_s=TIMEOUT_S,
        heartbeat_interval_s=0.2,
    )
    fed.client(GUEST).submit(THREE_PARTIES, job_id="job-never-started")
    fed.wait_state(HOST, "job-never-started", "waiting")

    # Execute: the initiator's scheduler stops before it could time out the proposal
    fed.schedulers[GUEST].stop()
    failed = fed.wait_state(HOST, "job-never-started", "failed", timeout=10 * TIMEOUT_S)

    # Assert
    assert failed["reason"].startswith("no word from initiator party 9999 for ")
    assert fed.workers[HOST].runs == []
    assert initiator_timeouts(fed, HOST) == 1.0
