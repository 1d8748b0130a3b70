"""The scheduler's domain without IO: the job's rules on plain data, with the clock moved by
the test instead of slept through. Timeouts, heartbeats, the forward-only task states, and the
reading of the old job.status as its successor types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fedscheduler import domain
from fedscheduler.domain import (
    Accepted,
    Counted,
    Effect,
    Job,
    Policy,
    StatusHeard,
    TaskReported,
    Tick,
    ToParty,
    ToWorker,
)
from fedscheduler.pipeline import Pipeline
from fedschemas.payloads import (
    JobEnd,
    JobHeartbeat,
    JobStart,
    JobStatus,
    JobStop,
    JobTaskReport,
    TaskCancel,
    TaskRun,
    as_job_status,
    split_job_status,
)

from .conftest import GUEST, HOST, PSI_EVAL

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
TIMEOUT = 120.0
GUEST_POLICY = Policy(party_id=GUEST, party_timeout_s=TIMEOUT, heartbeat_every_s=20.0)
HOST_POLICY = Policy(party_id=HOST, party_timeout_s=TIMEOUT, heartbeat_every_s=20.0)
PSI_LIMITED = PSI_EVAL.replace("    type: psi\n", "    type: psi\n    timeout_s: 600\n")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def parse(job: Job) -> Pipeline:
    return Pipeline.from_yaml(job.pipeline_yaml)


def step(job: Job, event: domain.Event, policy: Policy, seconds: float) -> list[Effect]:
    return domain.apply(job, event, policy, at(seconds), parse)


def running_at_guest(text: str = PSI_EVAL) -> Job:
    """The guest's job once the host accepted at t=1 (reader_0 dispatched at the guest)."""
    job, _ = domain.submit(
        "job-1", text, Pipeline.from_yaml(text), GUEST_POLICY, at(0), own_grant_problem=None
    )
    step(job, Accepted(HOST, HOST), GUEST_POLICY, 1)
    return job


def running_at_host() -> Job:
    """The host's job once the guest's start arrived at t=1 (reader_0 dispatched there)."""
    job, _ = domain.answer_proposal(
        "job-1", GUEST, PSI_EVAL, Pipeline.from_yaml(PSI_EVAL), None, HOST_POLICY, at(0)
    )
    step(job, StatusHeard(GUEST, GUEST, 0, "running", "job.start"), HOST_POLICY, 1)
    return job


def sent(effects: list[Effect], kind: type) -> list[ToParty]:
    return [e for e in effects if isinstance(e, ToParty) and isinstance(e.payload, kind)]


def to_workers(effects: list[Effect], kind: type) -> list[ToWorker]:
    return [e for e in effects if isinstance(e, ToWorker) and isinstance(e.payload, kind)]


def test_every_event_has_a_rule_at_the_initiator_and_at_a_participant() -> None:
    events = [
        domain.Accepted,
        domain.RefusedBy,
        domain.StatusHeard,
        domain.TaskReported,
        domain.StopOrdered,
        domain.RerunOrdered,
        domain.StopRequested,
        domain.RerunRequested,
        domain.AuditStopRequested,
        domain.Tick,
    ]
    assert {(e, side) for e in events for side in (True, False)} == set(domain.TRANSITIONS)


def test_all_accepted_starts_the_job_and_dispatches_the_first_component_once() -> None:
    # Prepare
    job, proposed = domain.submit(
        "job-1", PSI_EVAL, Pipeline.from_yaml(PSI_EVAL), GUEST_POLICY, at(0), own_grant_problem=None
    )

    # Execute
    effects = step(job, Accepted(HOST, HOST), GUEST_POLICY, 1)
    again = step(job, Accepted(HOST, HOST), GUEST_POLICY, 2)

    # Assert
    assert [e.party_id for e in proposed if isinstance(e, ToParty)] == [HOST]
    assert job.state == "running"
    assert [e.party_id for e in sent(effects, JobStart)] == [HOST]
    assert [e.payload.component for e in to_workers(effects, TaskRun)] == ["reader_0"]
    assert again == []


def test_a_silent_party_fails_the_job_after_the_timeout_without_sleeping() -> None:
    # Prepare: the host's last word came at t=1 (its acceptance)
    job = running_at_guest()

    # Execute
    before = step(job, Tick(), GUEST_POLICY, 1 + TIMEOUT)
    after = step(job, Tick(), GUEST_POLICY, 2 + TIMEOUT)

    # Assert: at the limit it still runs (and beats); past it the job fails naming the host
    assert sent(before, JobHeartbeat)
    assert job.state == "failed"
    assert job.reason == (
        "party 10000 sent nothing for 121 s (party_timeout_s=120): its services may be down "
        "or its link cut"
    )
    assert [e.party_id for e in sent(after, JobStop)] == [HOST]
    assert [e.payload.component for e in to_workers(after, TaskCancel)] == ["reader_0"]
    assert Counted("party_timeout", "running") in after


def test_a_heartbeat_in_time_keeps_the_job_running() -> None:
    # Prepare
    job = running_at_guest()

    # Execute: the host beats at t=100, the timer looks at t=200
    step(job, StatusHeard(HOST, HOST, 0, "running", "job.heartbeat"), GUEST_POLICY, 100)
    effects = step(job, Tick(), GUEST_POLICY, 200)

    # Assert
    assert job.state == "running"
    assert [e.party_id for e in sent(effects, JobHeartbeat)] == [HOST]


def test_heartbeats_go_out_once_per_interval_each_with_its_own_seq() -> None:
    # Prepare
    job = running_at_guest()

    # Execute: ticks every 5 s for a minute, the host beating along
    beats: list[ToParty] = []
    for second in range(2, 62, 5):
        step(job, StatusHeard(HOST, HOST, 0, "running", "job.heartbeat"), GUEST_POLICY, second)
        beats += sent(step(job, Tick(), GUEST_POLICY, second), JobHeartbeat)

    # Assert: one beat per 20 s, numbered 1, 2, 3
    assert [b.seq for b in beats] == [1, 2, 3]


def test_an_unanswered_proposal_fails_the_job_naming_the_party() -> None:
    # Prepare
    job, _ = domain.submit(
        "job-1", PSI_EVAL, Pipeline.from_yaml(PSI_EVAL), GUEST_POLICY, at(0), own_grant_problem=None
    )

    # Execute
    quiet = step(job, Tick(), GUEST_POLICY, TIMEOUT)
    effects = step(job, Tick(), GUEST_POLICY, TIMEOUT + 1)

    # Assert
    assert quiet == []  # nobody accepted: no heartbeat either
    assert job.state == "failed"
    assert (
        job.reason == "party 10000 did not answer the job proposal within 120 s (party_timeout_s)"
    )
    assert job.parties[HOST].state == "failed"
    assert Counted("party_timeout", "proposal") in effects


def test_silence_is_counted_from_the_schedulers_own_start() -> None:
    # Prepare: the guest's scheduler restarted at t=500, long after the host's last word
    job = running_at_guest()
    restarted = Policy(
        party_id=GUEST, party_timeout_s=TIMEOUT, heartbeat_every_s=20.0, started_at=at(500)
    )

    # Execute
    step(job, Tick(), restarted, 600)

    # Assert
    assert job.state == "running"


def test_a_task_past_its_pipeline_timeout_fails_the_job_naming_it() -> None:
    # Prepare: psi_0 (limit 600 s) became ready at the host when reader_0 succeeded there
    job = running_at_guest(PSI_LIMITED)
    step(job, TaskReported(HOST, HOST, "reader_0", 0, "success"), GUEST_POLICY, 10)

    # Execute: the host keeps beating, psi_0 is never reported
    for second in (300, 600):
        step(job, StatusHeard(HOST, HOST, 0, "running", "job.heartbeat"), GUEST_POLICY, second)
    step(job, Tick(), GUEST_POLICY, 610)
    running = job.state
    effects = step(job, Tick(), GUEST_POLICY, 611)

    # Assert
    assert running == "running"
    assert job.state == "failed"
    assert job.reason == (
        "component psi_0 at party 10000 did not finish within 600 s (timeout_s in the "
        "pipeline): it may hang"
    )
    assert Counted("task_timeout", "psi_0") in effects


def test_a_participant_fails_its_side_when_the_initiator_goes_silent() -> None:
    # Prepare: the host runs reader_0 since t=1, the guest's last word
    job = running_at_host()

    # Execute
    effects = step(job, Tick(), HOST_POLICY, 1 + TIMEOUT + 1)

    # Assert: its open tasks are canceled (the running one at its worker too) and reported
    # to the initiator with the reason
    assert job.state == "failed"
    assert job.reason is not None
    assert job.reason.startswith("no word from initiator party 9999 for 121 s")
    assert [e.payload.component for e in to_workers(effects, TaskCancel)] == ["reader_0"]
    reports = [r.payload for r in sent(effects, JobTaskReport)]
    assert sorted((r.component, r.task_state) for r in reports) == [
        ("psi_0", "canceled"),
        ("reader_0", "canceled"),
    ]
    assert all(r.reason == job.reason for r in reports)


def test_task_states_only_move_forward() -> None:
    # Prepare: reader_0 succeeded at the guest
    job = running_at_guest()
    step(job, TaskReported(GUEST, GUEST, "reader_0", 0, "success", local=True), GUEST_POLICY, 5)

    # Execute: a late "running" and a "failed" for the same task
    late = step(
        job, TaskReported(GUEST, GUEST, "reader_0", 0, "running", local=True), GUEST_POLICY, 6
    )
    failed = step(
        job, TaskReported(GUEST, GUEST, "reader_0", 0, "failed", "x", local=True), GUEST_POLICY, 7
    )

    # Assert
    assert late == [] and failed == []
    assert job.tasks[("reader_0", 0, GUEST)].state == "success"
    assert job.state == "running"


def test_a_party_may_not_report_for_another() -> None:
    job = running_at_guest()
    with pytest.raises(domain.Refused, match="party 10000 may not report for party 9999"):
        step(job, TaskReported(GUEST, HOST, "reader_0", 0, "success"), GUEST_POLICY, 5)


def test_the_job_succeeds_when_every_task_of_every_party_succeeded() -> None:
    # Prepare
    job = running_at_guest()

    # Execute: the guest's tasks succeed in order, the host reports its two
    effects: list[Effect] = []
    for component in ("reader_0", "psi_0", "eval_0"):
        effects += step(
            job, TaskReported(GUEST, GUEST, component, 0, "success", local=True), GUEST_POLICY, 5
        )
    for component in ("reader_0", "psi_0"):
        effects += step(job, TaskReported(HOST, HOST, component, 0, "success"), GUEST_POLICY, 6)

    # Assert
    assert job.state == "success"
    assert [e.party_id for e in sent(effects, JobEnd)] == [HOST]
    dispatched = [e.payload.component for e in to_workers(effects, TaskRun)]
    assert dispatched == ["psi_0", "eval_0"]


def test_an_old_job_status_reads_as_the_message_it_stood_for() -> None:
    # Prepare
    base = {"job_id": "job-1", "party_id": GUEST, "attempt": 0, "at": T0}

    # Execute
    start = split_job_status(JobStatus(state="running", **base))  # type: ignore[arg-type]
    end = split_job_status(JobStatus(state="success", **base))  # type: ignore[arg-type]
    waiting = split_job_status(JobStatus(state="waiting", **base))  # type: ignore[arg-type]
    report = split_job_status(
        JobStatus(state="running", component="psi_0", task_state="failed", reason="r", **base)  # type: ignore[arg-type]
    )

    # Assert: each maps to its successor, and back to the same job.status
    assert isinstance(start, JobHeartbeat) and start.state == "running"
    assert isinstance(end, JobEnd)
    assert isinstance(waiting, JobHeartbeat) and waiting.state == "waiting"
    assert isinstance(report, JobTaskReport) and report.task_state == "failed"
    assert as_job_status(report, "running") == JobStatus(
        state="running",
        component="psi_0",
        task_state="failed",
        reason="r",
        **base,  # type: ignore[arg-type]
    )
    assert as_job_status(JobStart(**base), "running") == JobStatus(state="running", **base)  # type: ignore[arg-type]
    assert as_job_status(end, "success") == JobStatus(state="success", **base)  # type: ignore[arg-type]


def test_a_rerun_runs_again_what_did_not_succeed_and_what_follows_it() -> None:
    # Prepare: reader_0 succeeded at both parties, psi_0 failed at the host
    job = running_at_guest()
    step(job, TaskReported(GUEST, GUEST, "reader_0", 0, "success", local=True), GUEST_POLICY, 5)
    step(job, TaskReported(HOST, HOST, "reader_0", 0, "success"), GUEST_POLICY, 6)
    step(job, TaskReported(HOST, HOST, "psi_0", 0, "failed", "oom"), GUEST_POLICY, 7)

    # Execute
    effects = step(job, domain.RerunRequested(), GUEST_POLICY, 8)

    # Assert: attempt 1 of psi_0 and eval_0 only, told to the host; psi_0 starts at once
    assert (job.state, job.attempt) == ("running", 1)
    reruns = [e for e in effects if isinstance(e, ToParty) and e.tag == "job.rerun"]
    assert [(e.party_id, e.payload.components) for e in reruns] == [(HOST, ["psi_0", "eval_0"])]
    assert [e.payload.component for e in to_workers(effects, TaskRun)] == ["psi_0"]
    assert sorted(c for (c, a, _p) in job.tasks if a == 1) == ["eval_0", "psi_0", "psi_0"]


def test_commands_are_refused_where_they_cannot_apply() -> None:
    # Prepare
    running = running_at_guest()
    at_host = running_at_host()

    # Execute / Assert
    with pytest.raises(domain.CommandError, match="only a failed or canceled job is rerun"):
        step(running, domain.RerunRequested(), GUEST_POLICY, 5)
    with pytest.raises(domain.CommandError, match="initiated by party 9999: stop it there"):
        step(at_host, domain.StopRequested(), HOST_POLICY, 5)
    step(running, domain.StopRequested("enough"), GUEST_POLICY, 6)
    assert (running.state, running.reason) == ("canceled", "enough")
    with pytest.raises(domain.CommandError, match="has already ended"):
        step(running, domain.StopRequested(), GUEST_POLICY, 7)


def test_a_stop_from_anyone_but_the_initiator_is_refused() -> None:
    job = running_at_host()
    with pytest.raises(domain.Refused, match=r"only the initiator \(9999\) stops job job-1"):
        step(job, domain.StopOrdered("10001", 0, "failed", "forged"), HOST_POLICY, 5)
    assert job.state == "running"
