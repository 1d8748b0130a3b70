"""Issue #22, end to end: a real Prometheus (Debian's 2.42) with the repository's rule files,
scraping the two-party local stack (`fedmq local`: separate processes, real RabbitMQ, Redis and
PostgreSQL) every 2 s and evaluating every 2 s.

1. A healthy PSI + evaluation job runs: every dashboard expression returns data while it runs
   (or is listed in EVENT_ONLY with the reason it cannot), and no alert fires on the healthy
   stack from Prometheus' start until the job is done and its parties idle again (the ALERTS
   series over that range; FEDMQ_MONITORING_FULL=1 adds the issue's full two idle minutes).
2. Each fault an alert exists for is caused: a failed job, forged signatures, garbage into a
   service queue, a killed gateway, a stopped worker, a silent party and a job left hanging by
   both. Each alert reaches firing within its `for` plus a few intervals of slack
   (docs/observability.md, "Alerts: time to fire"), and after recovery (services back, dead
   letters taken) every state alert resolves. The event alerts (an increase over a window)
   resolve when their window has passed: with FEDMQ_MONITORING_FULL=1 the test waits for that
   too (about 15 minutes), by default it does not.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fedbus import Message, connect
from fedcrypto.signing import SigningKey
from fedgateway import pki
from fedschemas import PartyRef, canonical_bytes, encode_envelope, new_envelope
from fedschemas.payloads import DemoPing

from fedmq import local
from tests.local_stack import GUEST, HOST, PSI_EVAL, Stack, upload_breast
from tests.observability.conftest import SHARED_STACK_ENV, SharedStack
from tests.observability.prometheus_server import (
    INTERVAL_S,
    REPO,
    Prometheus,
    duration_s,
    repository_alert_rules,
    running_prometheus,
    scrape_target_count,
)
from tests.polling import wait_for, wait_until

FULL = os.environ.get("FEDMQ_MONITORING_FULL") == "1"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(1800 if FULL else 600),  # FULL waits 15 min for the event alerts
]
PARTY_TIMEOUT_S = float(SHARED_STACK_ENV["FEDMQ_SCHEDULER_PARTY_TIMEOUT_S"])
JOB_EXPECTED_S = float(SHARED_STACK_ENV["FEDMQ_SCHEDULER_JOB_EXPECTED_S"])
"""The stack's settings: a pipeline that never succeeded here is expected within 20 s (the
healthy job takes a few seconds); the hanging job is overdue then, and fails on its silent
party 10 s later."""
QUICK_FOR_S = 30.0
"""By default an alert whose `for` is longer (FedmqTargetDown's minute) is checked up to
pending, its condition holding within the slack, not up to firing: the minute would add half
to the test's run time. FEDMQ_MONITORING_FULL=1 waits for firing."""
SLACK_S = 4 * INTERVAL_S + 20.0
"""Time to fire beyond an alert's `for`: two scrapes, two evaluations, a loaded host."""

EVENT_ONLY = {
    "fedmq_crypto_": "a PSI job runs no Paillier operation; the crypto series appear with the "
    "first crypto pool job (a hetero_lr job)",
    "fedmq_gateway_connections_refused_total": "a refused TLS connection; a healthy stack has none",
    "fedmq_audit_findings_total": "an audit rule's finding; a healthy job has none, and "
    "fedaudit.metrics creates a rule's series at its first finding",
    "fedmq_serving_": "a prediction request to a bound model; a training job sends none (the "
    "serving stack tests drive these series)",
}
"""Dashboard expressions that may be empty during a healthy PSI job, by a metric they read."""

TESTED_ALERTS = {
    "FedmqJobsFailing",
    "FedmqTasksFailing",
    "FedmqGatewaySignatureRefusals",
    "FedmqDeadLettersIncreasing",
    "FedmqDeadLetterQueueNotEmpty",
    "FedmqTargetDown",
    "FedmqServiceQueueNoConsumer",
    "FedmqJobOverdue",
    "FedmqPartyTimeouts",
}


@pytest.fixture(scope="module")
def stack(shared_stack: SharedStack) -> Iterator[Stack]:
    """The stack test_metrics_local_stack uses too (tests/observability/conftest.py, whose env
    sets PARTY_TIMEOUT_S and JOB_EXPECTED_S); stopped after this module, which restarts two of
    its services."""
    yield shared_stack.get()
    shared_stack.stop()


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Iterator[Prometheus]:
    with running_prometheus(stack.state) as server:
        # Every target answered once (each party's services, RabbitMQ).
        configured = scrape_target_count(stack.state)
        wait_until(
            lambda: server.targets_up() == configured,
            timeout=30,
            what=f"all {configured} targets up",
            interval=0.5,
        )
        yield server


@dataclass
class HealthyRun:
    submitted: float
    done: float
    idle: float
    """When both parties were idle again after the job (the end of the healthy range)."""


@pytest.fixture(scope="module")
def healthy(stack: Stack, prometheus: Prometheus) -> HealthyRun:
    upload_breast(stack)
    submitted = time.time()
    job = stack.guest.submit(PSI_EVAL, job_id=f"alerts-ok-{uuid.uuid4().hex[:6]}")
    result = stack.guest.wait(job.job_id, timeout=120, poll=0.5)
    assert result.state == "success", (result.reason, stack.guest.logs(job.job_id))
    assert stack.host.wait(job.job_id, timeout=60, poll=0.5).state == "success"
    done = time.time()
    # Two more scrapes and evaluations of the idle stack after the job.
    time.sleep(2 * INTERVAL_S + 1)
    if FULL:
        time.sleep(120)  # the two idle minutes
    return HealthyRun(submitted, done, time.time())


def dashboard_expressions() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expression) of every panel target, Grafana variables as "all"."""
    import json

    found = []
    for path in sorted((REPO / "infra" / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = re.sub(r"\$\w+", ".*", target["expr"])
                found.append((board["title"], panel["title"], expr))
    return found


def test_every_dashboard_expression_returns_data_during_a_job(
    healthy: HealthyRun, prometheus: Prometheus
) -> None:
    # Execute: each expression over the job's run and the two scrapes after it (a series born
    # during the job, e.g. of a message type, has a rate from its second sample on)
    empty = [
        (board, panel, expr)
        for board, panel, expr in dashboard_expressions()
        if not prometheus.query_range(expr, healthy.submitted, healthy.idle)
    ]

    # Assert: only the event-only ones may be empty
    unexplained = [e for e in empty if not any(metric in e[2] for metric in EVENT_ONLY)]
    assert not unexplained, "\n".join(
        f"{board} / {panel}: {expr}" for board, panel, expr in unexplained
    )
    assert len(dashboard_expressions()) > 40


def test_no_alert_fires_on_the_healthy_stack(healthy: HealthyRun, prometheus: Prometheus) -> None:
    fired = prometheus.query_range('ALERTS{alertstate="firing"}', prometheus.started, healthy.idle)
    assert [series["metric"] for series in fired] == []


@dataclass(frozen=True)
class Expected:
    alert: str
    labels: dict[str, str]
    caused_at: str
    """Which fault's moment the time to fire counts from (a key of `moments`)."""
    event: bool = False
    """An increase over a window: resolves when the window has passed, not at recovery."""


def forged_envelope(stack: Stack) -> Message:
    """A message the guest's gateway relays to the host as the guest's, signed by a key that
    is not the guest's (the key id is the guest's real one)."""
    identity = pki.PartyIdentity.load(stack.state.party_dir(GUEST) / "identity")
    envelope = new_envelope(
        DemoPing(text="forged", n=1),
        job_id=f"forged-{uuid.uuid4().hex[:6]}",
        component="alerts-test",
        task_id="forged",
        attempt=0,
        source=PartyRef(party_id=GUEST, role="guest"),
        destination=PartyRef(party_id=HOST, role="host"),
        tag="ping",
        iteration=-1,
        seq=1,
        created_at=dt.datetime.now(dt.UTC),
    ).model_copy(update={"signer_key_id": identity.key_id})
    envelope = envelope.model_copy(
        update={"signature": SigningKey.generate().sign(canonical_bytes(envelope))}
    )
    return Message(
        topic=f"out.{HOST}", body=encode_envelope(envelope), message_id=envelope.message_id
    )


def firing_since(
    prometheus: Prometheus, start: float, alert: str, labels: dict[str, str], states: str
) -> float:
    """The first time since `start` the alert with these labels was in one of `states` (a
    regex: "firing", "pending|firing"); inf: never."""
    selector = ", ".join(f'{k}="{v}"' for k, v in {"alertname": alert, **labels}.items())
    series = prometheus.query_range(
        f'ALERTS{{alertstate=~"{states}", {selector}}}', start, time.time()
    )
    times = [float(t) for s in series for t, _ in s["values"]]
    return min(times) if times else float("inf")


def test_each_fault_fires_its_alert_in_time_and_recovery_resolves_it(
    stack: Stack, prometheus: Prometheus, healthy: HealthyRun
) -> None:
    state = stack.state
    guest, host = state.parties[GUEST], state.parties[HOST]
    rules = repository_alert_rules()
    moments: dict[str, float] = {}

    # Execute 1: a job whose guest table does not exist fails at the guest's reader.
    bad = PSI_EVAL.replace("table: breast_hetero_guest", "table: no_such_table_here")
    moments["failed_job"] = time.time()
    failed = stack.guest.submit(bad, job_id=f"alerts-bad-{uuid.uuid4().hex[:6]}")
    assert stack.guest.wait(failed.job_id, timeout=90, poll=0.5).state == "failed"

    # Execute 2: a forged message relayed to the host, garbage into the guest's worker queue.
    bus = connect(guest.bus_url)
    try:
        moments["forged"] = moments["garbage"] = time.time()
        bus.publish(forged_envelope(stack))
        bus.publish(Message(topic="svc.worker", body=b"\x00garbage", message_id="garbage-1"))
        # Both counted and scraped before the services that counted them go down.
        for counted in (
            'fedmq_gateway_refused_total{reason="bad_signature"}',
            'fedmq_bus_messages_dead_lettered_total{job="worker", reason="malformed"}',
            f'rabbitmq_queue_messages{{queue="out.{HOST}.dlq"}}',
        ):
            wait_until(
                lambda counted=counted: prometheus.query(f"{counted} > 0"),
                timeout=30,
                what=f"Prometheus seeing {counted}",
                interval=0.5,
            )

        # Execute 3: the host's gateway is killed, the guest's worker stopped, and a job is
        # submitted that can neither reach the host nor run at the guest.
        moments["killed_gateway"] = time.time()
        local.stop_service(state, HOST, "gateway", kill=True)
        moments["stopped_worker"] = time.time()
        local.stop_service(state, GUEST, "worker")
        stuck_pipeline = PSI_EVAL.replace("name: psi-eval", "name: psi-eval-stuck")
        moments["stuck_job"] = time.time()
        stack.guest.submit(stuck_pipeline, job_id=f"alerts-stuck-{uuid.uuid4().hex[:6]}")

        expected = [
            Expected(
                "FedmqJobsFailing",
                {"instance": f"127.0.0.1:{guest.scheduler_http_port}"},
                "failed_job",
                event=True,
            ),
            Expected("FedmqTasksFailing", {"component": "reader"}, "failed_job", event=True),
            Expected(
                "FedmqGatewaySignatureRefusals",
                {"instance": f"127.0.0.1:{host.http_port}", "reason": "bad_signature"},
                "forged",
                event=True,
            ),
            Expected(
                "FedmqDeadLettersIncreasing",
                {"job": "worker", "topic": "svc.worker", "reason": "malformed"},
                "garbage",
                event=True,
            ),
            Expected(
                "FedmqDeadLetterQueueNotEmpty",
                {"vhost": guest.vhost, "queue": "svc.worker.dlq"},
                "garbage",
            ),
            Expected(
                "FedmqDeadLetterQueueNotEmpty",
                {"vhost": guest.vhost, "queue": f"out.{HOST}.dlq"},
                "forged",
            ),
            Expected(
                "FedmqTargetDown",
                {"job": "gateway", "instance": f"127.0.0.1:{host.http_port}"},
                "killed_gateway",
            ),
            Expected(
                "FedmqServiceQueueNoConsumer",
                {"vhost": host.vhost, "queue": "svc.gateway"},
                "killed_gateway",
            ),
            Expected(
                "FedmqTargetDown",
                {"job": "worker", "instance": f"127.0.0.1:{guest.worker_http_port}"},
                "stopped_worker",
            ),
            Expected(
                "FedmqServiceQueueNoConsumer",
                {"vhost": guest.vhost, "queue": "svc.worker"},
                "stopped_worker",
            ),
            Expected(
                "FedmqJobOverdue",
                {"instance": f"127.0.0.1:{guest.scheduler_http_port}"},
                "stuck_job",
            ),
            Expected("FedmqPartyTimeouts", {"phase": "proposal"}, "party_timeout", event=True),
        ]
        if "FedmqPeerLinkDown" in rules:
            expected.append(Expected("FedmqPeerLinkDown", {"peer": HOST}, "killed_gateway"))
        # The stuck job's own delays are the scheduler's settings, not the alert's.
        moments["party_timeout"] = moments["stuck_job"] + PARTY_TIMEOUT_S
        delay = {"FedmqJobOverdue": JOB_EXPECTED_S}

        def awaited(e: Expected) -> str:
            rule_for = duration_s(rules[e.alert].get("for"))
            return "firing" if FULL or rule_for <= QUICK_FOR_S else "pending|firing"

        def deadline(e: Expected) -> float:
            rule_for = duration_s(rules[e.alert].get("for"))
            if awaited(e) != "firing":
                rule_for = 0.0
            return moments[e.caused_at] + delay.get(e.alert, 0.0) + rule_for + SLACK_S

        def reached(e: Expected) -> float:
            return firing_since(prometheus, moments[e.caused_at], e.alert, e.labels, awaited(e))

        def late() -> list[str]:
            return [f"{e.alert}{e.labels}" for e in expected if reached(e) > deadline(e)]

        # Assert 1: each alert fired within its documented time (FedmqTargetDown: see
        # QUICK_FOR_S).
        wait_until(
            lambda: all(reached(e) < float("inf") for e in expected),
            timeout=max(deadline(e) for e in expected) - time.time(),
            what="every alert firing",
            interval=1.0,
            describe=lambda: {"late": late(), "firing": prometheus.firing()},
        )
        assert late() == []
        for e in expected:  # shown with -s: what docs/benchmarks.md records
            took = reached(e) - moments[e.caused_at]
            print(f"time to {awaited(e)}: {e.alert}{e.labels} {took:.1f} s")

        # Execute 4: recovery. The services come back; an operator takes the dead letters.
        local.start_service(state, HOST, "gateway")
        local.start_service(state, GUEST, "worker")
        local.wait_healthy(state, HOST, timeout=60)
        local.wait_healthy(state, GUEST, timeout=60, service="worker")
        for topic in ("svc.worker", f"out.{HOST}"):
            wait_for(lambda topic=topic: bus.dead_letters(topic), what=f"{topic}'s dead letters")
    finally:
        bus.close()

    # Assert 2: every state alert resolves; the event alerts stay until their window passed.
    def still_firing(events: bool) -> list[str]:
        now_firing = prometheus.firing()
        return [
            f"{e.alert}{e.labels}"
            for e in expected
            if e.event == events
            and any(
                f["alertname"] == e.alert and all(f.get(k) == v for k, v in e.labels.items())
                for f in now_firing
            )
        ]

    wait_until(
        lambda: not still_firing(events=False),
        timeout=60 + SLACK_S,
        what="the state alerts resolved",
        interval=1.0,
        describe=lambda: still_firing(events=False),
    )
    if FULL:
        wait_until(
            lambda: not still_firing(events=True),
            timeout=15 * 60 + SLACK_S,
            what="the event alerts resolved after their windows",
            interval=5.0,
            describe=lambda: still_firing(events=True),
        )


def test_the_documented_times_to_fire_are_the_rules() -> None:
    """docs/observability.md's table of times to fire gives each alert it names the rule's
    `for`, and names every alert this module causes."""
    doc = (REPO / "docs" / "observability.md").read_text()
    rows = dict(re.findall(r"^\| `(Fedmq\w+)` \| ([^|]+) \|", doc, re.MULTILINE))
    rules = repository_alert_rules()
    assert set(rows) >= TESTED_ALERTS, TESTED_ALERTS - set(rows)
    for name, text in rows.items():
        assert name in rules, f"docs/observability.md names {name}, which no rule defines"
        assert (rules[name].get("for") or "0s") in text, (name, text)
