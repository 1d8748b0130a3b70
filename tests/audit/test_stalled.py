"""algorithm.stalled: training that stops progressing while its parties stay alive.

The observing party is the guest (9999) of a two-party hetero_lr job with the host (10000), as in
tests/audit/test_rules.py; the audit's clock is the `now` each message is observed at and each
timer tick (`Auditor.silent`) runs at, so an interval of minutes takes no time here."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fedaudit.auditor import Auditor
from fedaudit.rules import Finding
from fedaudit.rules.state import AuditPolicy
from fedflow.pipeline import Pipeline, PipelineError
from fedschemas import Envelope
from fedschemas.payloads import JobHeartbeat, TaskStatus

from tests.audit.test_rules import findings
from tests.audit.traffic import GUEST, HOST, KEY_BITS, PIPELINE, Traffic

STALL = 30.0


def policy(**settings: float) -> AuditPolicy:
    # The worker's heartbeats are not in these cases' traffic: control.worker_silent is kept
    # out of them (tests/audit/test_timer_findings.py checks it).
    defaults = {"stalled_after_s": STALL, "worker_silent_after_s": 3600.0}
    return AuditPolicy(party_id=GUEST, min_key_bits=KEY_BITS, **{**defaults, **settings})


def status(traffic: Traffic, state: str) -> Envelope:
    """This party's worker reporting its hetero_lr task (its claim, its progress, its end)."""
    payload = TaskStatus(
        job_id=traffic.job_id,
        component=traffic.component,
        attempt=0,
        party_id=GUEST,
        state=state,  # type: ignore[arg-type]
    )
    return traffic.envelope(payload, GUEST, GUEST, "task_status")


def heartbeat(traffic: Traffic) -> Envelope:
    """The host's scheduler beating for the job (what keeps control.silent_party quiet)."""
    beat = JobHeartbeat(
        job_id=traffic.job_id, party_id=HOST, attempt=0, state="running", at=datetime.now(UTC)
    )
    return traffic.envelope(beat, HOST, GUEST, "heartbeat", component="job", sender_role="host")


def stalled(found: list[tuple[str, Finding]]) -> list[tuple[str, str, str]]:
    return [(job, f.rule, f.party) for job, f in found if f.rule == "algorithm.stalled"]


def start(auditor: Auditor, traffic: Traffic, pipeline: str = PIPELINE) -> None:
    """At t=100 s: the job approved, this party's task running, both keys in, and the guest's
    first encrypted residuals sent to the host (whose answer is next)."""
    envelopes = [
        traffic.propose(pipeline),
        traffic.task_run(),
        status(traffic, "running"),
        traffic.public_key(GUEST),
        traffic.public_key(HOST),
        traffic.ciphertexts("residual", GUEST, 0),
    ]
    assert findings(auditor, traffic, envelopes, now=100.0) == []


def test_a_peer_that_keeps_beating_but_sends_no_data_is_reported_once_per_stall() -> None:
    # Prepare: the host's scheduler beats every 10 s, but no answer to the residuals comes
    auditor, traffic = Auditor(policy()), Traffic()
    start(auditor, traffic)
    for at in range(110, 200, 10):
        findings(auditor, traffic, [heartbeat(traffic)], now=float(at))

    # Execute: the timer ticks before, past and again past the interval
    early = auditor.silent(100.0 + STALL - 1)
    late = auditor.silent(100.0 + STALL + 1)
    again = auditor.silent(190.0)

    # Assert: the host, which owes the next step, named once; no party was silent
    assert early == []
    assert stalled(late) == [(traffic.job_id, "algorithm.stalled", HOST)]
    assert [f.rule for _, f in late] == ["algorithm.stalled"]
    assert late[0][1].severity == "warn"
    assert "no message crossing and no progress for 31 s" in late[0][1].detail
    assert again == []


def test_the_next_message_re_arms_it() -> None:
    # Prepare: a stall reported at t=131 s
    auditor, traffic = Auditor(policy()), Traffic()
    start(auditor, traffic)
    assert stalled(auditor.silent(131.0))

    # Execute: the host's answer comes at 140 s, then nothing again
    findings(auditor, traffic, [traffic.ciphertexts("host_scores", HOST, 0)], now=140.0)
    quiet, second = auditor.silent(140.0 + STALL - 1), auditor.silent(140.0 + STALL + 1)

    # Assert: a second stall, reported on its own; this time the guest owes the next step
    assert quiet == []
    assert stalled(second) == [(traffic.job_id, "algorithm.stalled", GUEST)]


def test_a_long_local_step_with_progress_reports_is_no_stall() -> None:
    # Prepare: no message crosses for 90 s, but this party's worker reports progress every 20 s
    auditor, traffic = Auditor(policy()), Traffic()
    start(auditor, traffic)
    for at in (120.0, 140.0, 160.0, 180.0):
        findings(auditor, traffic, [status(traffic, "running")], now=at)

    # Execute
    found = auditor.silent(190.0)

    # Assert
    assert found == []


def test_an_honest_run_moving_every_few_seconds_never_trips_it() -> None:
    # Prepare: an honest hetero_lr run, a message every 5 s (the stall interval: 6 s)
    auditor, traffic = Auditor(policy(stalled_after_s=6.0)), Traffic()
    envelopes = traffic.honest(iterations=3)
    envelopes.insert(2, status(traffic, "running"))

    # Execute: the timer ticks every second
    found: list[tuple[str, Finding]] = []
    for i, envelope in enumerate(envelopes):
        assert findings(auditor, traffic, [envelope], now=100.0 + 5 * i) == []
        found += [f for t in range(5) for f in auditor.silent(100.0 + 5 * i + t)]

    # Assert
    assert found == []


def test_a_component_whose_tasks_ended_or_whose_job_ended_is_not_watched() -> None:
    # Prepare: the same start in two jobs; in one this party's task succeeded at 110 s, the
    # other ended at 110 s
    auditor = Auditor(policy())
    ended_task, ended_job = Traffic(job_id="job-task-ended"), Traffic(job_id="job-ended")
    for traffic in (ended_task, ended_job):
        start(auditor, traffic)
    findings(auditor, ended_task, [status(ended_task, "success")], now=110.0)
    auditor.jobs[ended_job.job_id].ended = True

    # Execute
    found = auditor.silent(500.0)

    # Assert
    assert stalled(found) == []


@pytest.mark.parametrize(
    ("asked", "max_s", "quiet_at", "reported_at"),
    [
        (5, 3600.0, 104.0, 106.0),  # a pipeline may watch its job closer
        (10_000, 600.0, 699.0, 701.0),  # ...and longer only up to the operator's maximum
    ],
)
def test_a_pipeline_sets_its_jobs_interval_within_the_operators_maximum(
    asked: int, max_s: float, quiet_at: float, reported_at: float
) -> None:
    # Prepare
    auditor, traffic = Auditor(policy(stalled_after_max_s=max_s)), Traffic()
    start(auditor, traffic, PIPELINE + f"audit: {{stalled_after_s: {asked}}}\n")

    # Execute
    quiet, late = auditor.silent(quiet_at), auditor.silent(reported_at)

    # Assert
    assert stalled(quiet) == []
    assert stalled(late) == [(traffic.job_id, "algorithm.stalled", HOST)]


def test_a_pipeline_sets_its_severity_within_the_operators_floor() -> None:
    # Prepare: one job asks for critical; another asks for info where the operator's floor
    # is warn
    auditor = Auditor(policy())
    raised, lowered = Traffic(job_id="job-raised"), Traffic(job_id="job-lowered")
    start(auditor, raised, PIPELINE + "audit: {severities: {algorithm.stalled: critical}}\n")
    start(auditor, lowered, PIPELINE + "audit: {severities: {algorithm.stalled: info}}\n")

    # Execute
    found = auditor.silent(200.0)

    # Assert
    assert sorted((job, f.severity) for job, f in found if f.rule == "algorithm.stalled") == [
        ("job-lowered", "warn"),
        ("job-raised", "critical"),
    ]


def test_the_post_hoc_audit_does_not_judge_time() -> None:
    # Prepare: the records of a stalled job, replayed as the post-hoc audit does (no clock)
    traffic = Traffic()
    envelopes = [*traffic.honest(iterations=0), status(traffic, "running")]
    auditor = Auditor(policy())

    # Execute
    assert findings(auditor, traffic, envelopes) == []
    found = auditor.silent(10_000.0)

    # Assert: nothing armed without a clock
    assert stalled(found) == []


@pytest.mark.parametrize("bad", ["0", "-5", ".inf", ".nan", "true", "soon"])
def test_a_pipeline_asking_for_an_interval_that_is_no_positive_number_is_refused(
    bad: str,
) -> None:
    with pytest.raises(PipelineError, match=r"audit\.stalled_after_s: must be"):
        Pipeline.from_yaml(PIPELINE + f"audit: {{stalled_after_s: {bad}}}\n")
