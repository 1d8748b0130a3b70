"""The audit timer's findings (control.silent_party, control.service_silent,
control.worker_silent, algorithm.stalled) go where a message's findings go: into the hash chain
as a record of their own, the alerts listing, the webhook, and for a critical one a stop request
to the schedulers, once per episode. A worker whose heartbeats stop while it runs a job's task
stops the job at both parties within a second of the detection; so does a stall a pipeline
raised to critical. And the real worker sends those heartbeats while a task runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fedaudit import handlers
from fedaudit.main import Audit
from fedaudit.report import job_report
from fedaudit.settings import AuditSettings
from fedaudit.store import export_lines, iter_records, list_findings
from fedaudit.verify import parse_export, verify_export
from fedbus import Delivery, Message, connect
from fedcrypto.signing import SigningKey
from fedschemas import Envelope, decode_envelope, decode_payload, encode_envelope, topics
from fedschemas.payloads import AuditStop, JobHeartbeat, TaskMetrics, TaskRun, TaskStatus

from tests.audit.traffic import GUEST, HOST, KEY_BITS, PIPELINE, Traffic
from tests.polling import wait_for
from tests.scheduler.conftest import Federation
from tests.worker.test_worker_tasks import Federation2, start_fed2

__all__ = ["start_fed2"]

COMPONENT = "hetero_lr_0"
TIMER_RULES = [
    "control.silent_party",
    "control.service_silent",
    "control.worker_silent",
    "algorithm.stalled",
]


def worker_status(traffic: Traffic, state: str) -> Envelope:
    payload = TaskStatus(
        job_id=traffic.job_id,
        component=COMPONENT,
        attempt=0,
        party_id=GUEST,
        state=state,  # type: ignore[arg-type]
    )
    return traffic.envelope(payload, GUEST, GUEST, f"task.status.{state}")


def worker_beat(traffic: Traffic) -> Envelope:
    """What the guest's worker sends each lease/3 while it runs the task (fedworker)."""
    payload = TaskMetrics(job_id=traffic.job_id, component=COMPONENT, attempt=0, party_id=GUEST)
    seq = int(time.time() * 1e6)
    return traffic.envelope(payload, GUEST, GUEST, "task.heartbeat", seq=seq)


def scheduler_beat(traffic: Traffic) -> Envelope:
    beat = JobHeartbeat(
        job_id=traffic.job_id, party_id=GUEST, attempt=0, state="running", at=datetime.now(UTC)
    )
    return traffic.envelope(beat, GUEST, HOST, "heartbeat", component="job")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def audit(tmp_path: Path, unique_name: str) -> Iterator[tuple[Audit, Clock, list[Any]]]:
    """The guest's audit, not started: the test drives its deliveries and its timer on a clock
    of its own; alerts collected as the webhook would get them."""
    settings = AuditSettings(
        party_id=GUEST,
        bus_url=f"memory://{unique_name}",
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        signing_key=SigningKey.generate().to_bytes().hex(),
        http_port=-1,
        log_json=False,
        min_key_bits=KEY_BITS,
        silent_after_s=10,
        service_silent_after_s=20,
        worker_silent_after_s=30,
        stalled_after_s=40,
        checkpoint_every=3,
    )
    bus = connect(f"memory://{unique_name}")
    made = Audit(settings, bus=bus)
    clock, alerts = Clock(), []
    made.ctx.clock = clock
    made.ctx.alert = alerts.extend
    handlers.load(made.ctx)
    try:
        yield made, clock, alerts
    finally:
        made.engine.dispose()
        bus.close()


def deliver(audit: Audit, traffic: Traffic, envelopes: list[Envelope]) -> None:
    for envelope in envelopes:
        handlers.handle_delivery(audit.ctx, traffic.delivery(envelope))


def stop_requests(audit: Audit) -> list[AuditStop]:
    got: list[AuditStop] = []

    def take(delivery: Delivery) -> None:
        got.append(decode_payload(decode_envelope(delivery.body), AuditStop))

    audit.bus.subscribe(topics.SCHEDULER, take)
    return got


def timed(finding: dict[str, Any]) -> bool:
    return str(finding["message_id"]).startswith("timer:")


def test_each_timer_finding_is_chained_listed_alerted_once_per_episode_and_a_critical_one_stops(
    audit: tuple[Audit, Clock, list[Any]],
) -> None:
    # Prepare: at t0 the job is approved, the guest's worker claims its task and beats, its
    # scheduler beats, the host's key comes in and the guest's residuals go out
    made, clock, alerts = audit
    stops = stop_requests(made)
    traffic = Traffic(component=COMPONENT)
    t0 = clock.now
    deliver(
        made,
        traffic,
        [
            traffic.propose(),
            traffic.task_run(),
            worker_status(traffic, "running"),
            worker_beat(traffic),
            scheduler_beat(traffic),
            traffic.public_key(HOST),
            traffic.public_key(GUEST),
            traffic.ciphertexts("residual", GUEST, 0),
        ],
    )

    # Execute: the timer past every interval, then again (same episode), then the worker beats
    # again and goes silent once more (a new episode)
    clock.now = t0 + 41
    handlers.tick(made.ctx)
    clock.now = t0 + 100
    handlers.tick(made.ctx)
    clock.now = t0 + 110
    deliver(made, traffic, [worker_beat(traffic)])
    clock.now = t0 + 141
    handlers.tick(made.ctx)
    wait_for(lambda: stops, timeout=5, describe=lambda: "no stop request")

    # Assert: in the chain, each silence once for the first episode (the worker, scheduler and
    # gateway each control.service_silent), nothing at the second tick, and the worker's
    # second silence once more
    with made.engine.connect() as conn:
        timer = [r for r in iter_records(conn) if r["topic"] == handlers.TIMER_TOPIC]
        listed = list_findings(conn, job_id=traffic.job_id)
        export = list(export_lines(conn, GUEST, made.public_key_hex))
        report = job_report(conn, made.ctx.auditor.policy, traffic.job_id, made.public_key_hex)
    rules = [r["findings"][0]["rule"] for r in timer]
    first = [*TIMER_RULES, "control.service_silent", "control.service_silent"]
    second = ["control.service_silent", "control.worker_silent"]
    assert sorted(rules) == sorted(first + second), rules
    assert sorted(r["findings"][0]["rule"] for r in timer[len(first) :]) == second
    assert all(len(r["findings"]) == 1 and r["job_id"] == traffic.job_id for r in timer)
    worker = [r for r in timer if r["tag"] == "control.worker_silent"]
    assert [r["component"] for r in worker] == [COMPONENT, COMPONENT]
    assert "task hetero_lr_0 (attempt 0)" in worker[0]["findings"][0]["detail"]
    # ...the chain with them verifies, and the job's report shows them
    assert verify_export(parse_export(iter(export))) == []
    assert report["chain_ok"], report["chain_problems"]
    # (the worker's claim said no code hash: control.component_unreported, a message's)
    assert sorted(f["rule"] for f in report["findings_live"] if timed(f)) == sorted(rules)
    # ...the alerts listing and the webhook have each
    assert sorted(f["rule"] for f in listed if timed(f)) == sorted(rules)
    webhook = [a for a in alerts if a["annotations"]["message_id"].startswith("timer:")]
    assert sorted(a["labels"]["rule"] for a in webhook) == sorted(rules)
    assert {a["labels"]["job_id"] for a in webhook} == {traffic.job_id}
    # ...and the critical one (the worker's) asked the scheduler to stop the job, once
    time.sleep(0.1)
    assert [(s.rule, s.party_id, s.job_id) for s in stops] == [
        ("control.worker_silent", GUEST, traffic.job_id)
    ]
    assert stops[0].message_id == worker[0]["message_id"]
    assert [f["stop_requested"] for f in listed if f["rule"] == "control.worker_silent"] == [
        True,
        False,
    ]


def test_a_beating_worker_and_one_whose_task_ended_are_not_reported_silent(
    audit: tuple[Audit, Clock, list[Any]],
) -> None:
    # Prepare: one job whose worker beats every 5 s, another whose task ended
    made, clock, alerts = audit
    beating, ended = Traffic(component=COMPONENT), Traffic(job_id="job-ended", component=COMPONENT)
    t0 = clock.now
    for traffic in (beating, ended):
        deliver(made, traffic, [traffic.propose(), traffic.task_run()])
        deliver(made, traffic, [worker_status(traffic, "running")])
    deliver(made, ended, [worker_status(ended, "success")])

    # Execute: 60 s of the timer, the first job's worker beating every 5 s
    for step in range(1, 13):
        clock.now = t0 + 5 * step
        deliver(made, beating, [worker_beat(beating)])
        handlers.tick(made.ctx)

    # Assert
    found = [a["labels"]["rule"] for a in alerts]
    assert "control.worker_silent" not in found, found


def test_a_critical_timer_finding_stops_the_job_while_the_audits_database_is_away(
    audit: tuple[Audit, Clock, list[Any]], tmp_path: Path
) -> None:
    # Prepare: the guest's worker claimed its task, then the audit's database went away
    made, clock, alerts = audit
    stops = stop_requests(made)
    traffic = Traffic(component=COMPONENT)
    deliver(
        made, traffic, [traffic.propose(), traffic.task_run(), worker_status(traffic, "running")]
    )
    made.ctx.engine = sa.create_engine(f"sqlite:///{tmp_path / 'gone' / 'audit.db'}")

    # Execute: the timer past the worker's interval
    clock.now += 31
    handlers.tick(made.ctx)

    # Assert: not chained, but alerted and the stop asked for
    wait_for(lambda: stops, timeout=5)
    assert [s.rule for s in stops] == ["control.worker_silent"]
    assert "control.worker_silent" in [a["labels"]["rule"] for a in alerts]


def _held_lr_job(
    federation_factory: Callable[..., Federation],
    tmp_path: Path,
    job_id: str,
    pipeline: str,
    **audit_settings: Any,
) -> tuple[Federation, Audit]:
    """A hetero_lr job whose hetero_lr_0 runs and holds at both parties (fake workers, real
    schedulers), the guest's audit watching (its key the schedulers trust)."""

    def hold(run: TaskRun) -> tuple[str, str | None] | None:
        return None if run.component == COMPONENT else ("success", None)

    policy = tmp_path / "policy.yaml"
    policy.write_text(f"min_key_bits: {KEY_BITS}\nallow_insecure_short_keys: true\n")
    key = SigningKey.generate()  # the schedulers trust its public half
    fed = federation_factory(
        policy_file=str(policy),
        scripts={GUEST: hold, HOST: hold},
        audit_public_key=key.verify_key().to_bytes().hex(),
        grants=[(HOST, "breast_hetero_host", GUEST, ["hetero_lr"])],
    )
    audit = Audit(
        AuditSettings(
            party_id=GUEST,
            bus_url="memory://unused",
            database_url=f"sqlite:///{tmp_path / 'audit-guest.db'}",
            signing_key=key.to_bytes().hex(),
            http_port=-1,
            log_json=False,
            min_key_bits=KEY_BITS,
            timer_interval_s=0.05,
            **audit_settings,
        ),
        bus=fed.buses[GUEST],
    )
    audit.start()
    fed.client(GUEST).submit(pipeline, job_id=job_id)
    wait_for(
        lambda: COMPONENT in fed.workers[HOST].components_run(job_id),
        describe=lambda: fed.job(GUEST, job_id)["reason"],
    )
    wait_for(lambda: COMPONENT in fed.workers[GUEST].components_run(job_id))
    return fed, audit


def _failed_at_both(fed: Federation, job_id: str) -> tuple[dict[str, Any], float, float]:
    """The guest's failed view, and when (time.time()) each party was first seen failed."""
    seen: dict[str, float] = {}

    def both() -> bool:
        for party in (GUEST, HOST):
            if party not in seen and fed.job(party, job_id)["state"] == "failed":
                seen[party] = time.time()
        return len(seen) == 2

    wait_for(both, timeout=10, interval=0.02)
    return fed.job(GUEST, job_id), seen[GUEST], seen[HOST]


def _detected_at(audit: Audit, job_id: str, rule: str) -> float:
    with audit.engine.connect() as conn:
        found = [f for f in list_findings(conn, job_id=job_id) if f["rule"] == rule]
    assert found, f"no {rule}"
    return datetime.fromisoformat(found[0]["at"]).timestamp()


def test_a_worker_whose_heartbeats_stop_mid_job_stops_it_at_both_parties_within_a_second(
    federation_factory: Callable[..., Federation],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # Prepare: hetero_lr_0 runs at both parties; the guest's worker beats every 0.2 s
    job_id = "timer-worker-silent"
    fed, audit = _held_lr_job(
        federation_factory, tmp_path, job_id, PIPELINE, worker_silent_after_s=1.0
    )
    request.addfinalizer(audit.stop)
    traffic = Traffic(job_id=job_id, component=COMPONENT)
    bus = fed.buses[GUEST]

    def beat() -> float:
        envelope = worker_beat(traffic)
        bus.publish(Message(topics.SCHEDULER, encode_envelope(envelope), envelope.message_id))
        return time.time()

    last = 0.0
    for _ in range(8):  # 1.6 s of beats: longer than the interval, nothing fires
        last = beat()
        time.sleep(0.2)
    assert fed.job(GUEST, job_id)["state"] == "running"

    # Execute: the heartbeats stop
    failed, guest_at, host_at = _failed_at_both(fed, job_id)

    # Assert: control.worker_silent named, detected once the interval passed, and the job
    # failed at both parties within a second of the detection
    detected = _detected_at(audit, job_id, "control.worker_silent")
    assert "rule control.worker_silent broken by party 9999" in failed["reason"], failed["reason"]
    assert "hetero_lr_0" in failed["reason"]
    print(
        f"last beat -> detected {detected - last:.2f} s; detected -> failed guest "
        f"{guest_at - detected:.2f} s, host {host_at - detected:.2f} s"
    )
    assert detected - last >= 1.0, f"detected {detected - last:.2f} s after the last beat"
    assert guest_at - detected < 1.0 and host_at - detected < 1.0, (
        f"{guest_at - detected:.2f} s, {host_at - detected:.2f} s"
    )
    assert "rule control.worker_silent" in fed.job(HOST, job_id)["reason"]


STALL_CRITICAL = PIPELINE + (
    "audit:\n  stalled_after_s: 1\n  severities: {algorithm.stalled: critical}\n"
)


def test_a_stall_the_pipeline_raised_to_critical_stops_the_job_at_both_parties(
    federation_factory: Callable[..., Federation],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # Prepare: the operator keeps algorithm.stalled a warning (no floor: a pipeline may raise
    # it); the pipeline asks for critical after 1 s; nothing crosses once hetero_lr_0 runs
    job_id = "timer-stalled"
    fed, audit = _held_lr_job(
        federation_factory,
        tmp_path,
        job_id,
        STALL_CRITICAL,
        severities={"algorithm.stalled": "warn"},
    )
    request.addfinalizer(audit.stop)

    # Execute: the component stays still
    failed, guest_at, host_at = _failed_at_both(fed, job_id)

    # Assert
    detected = _detected_at(audit, job_id, "algorithm.stalled")
    print(f"detected -> failed guest {guest_at - detected:.2f} s, host {host_at - detected:.2f} s")
    assert "rule algorithm.stalled" in failed["reason"], failed["reason"]
    assert "component hetero_lr_0" in failed["reason"]
    assert guest_at - detected < 1.0 and host_at - detected < 1.0, (
        f"{guest_at - detected:.2f} s, {host_at - detected:.2f} s"
    )


def test_the_worker_beats_while_its_task_runs_and_not_after(
    start_fed2: Callable[..., Federation2],
) -> None:
    # Prepare: leases of 0.6 s (a keeper round, hence a beat, every 0.2 s)
    fed2 = start_fed2(task_lease_s=0.6)
    fed2.run_readers("job-beat")

    # Execute: a task of ~1.6 s logging a metric per round (a round in two has nothing new
    # to send: it beats), then a pause
    fed2.run(
        "job-beat",
        "sum_0",
        "iter_sum",
        {"common": {"rounds": 4, "round_delay_s": 0.4}},
        {"data": "reader_0.data"},
    )
    fed2.wait_final("sum_0", timeout=30)
    time.sleep(0.3)  # a keeper round that took the task in just before it ended may still send

    def beats() -> int:
        with fed2.lock:
            sent = [m for m in fed2.parties[GUEST].metrics if m.component == "sum_0"]
        return sum(1 for m in sent if not m.metrics and not m.curves)

    during = beats()
    time.sleep(0.6)  # three more keeper rounds

    # Assert: beats (task.metrics with no values) came while it ran, none once it ended
    assert during >= 2, during
    assert beats() == during
