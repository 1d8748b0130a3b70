"""The audit on the local two-party stack over RabbitMQ (`fedmq local`, separate processes):
an honest hetero_lr job breaks no rule at either party although the guest's audit is SIGKILLed
in the middle of it, and both logs then hold every message that crossed between the parties;
so does the hetero_secureboost example (its trees cut to two); a message a party's worker
should never send stops the job at both parties."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import yaml
from fedaudit import test_hooks
from fedaudit.verify import Export, parse_export, verify_export, verify_pair
from fedbus import connect
from fedschemas import PartyRef

from fedmq import local
from tests.local_stack import GUEST, HOST, REPO, Stack, stack_fixture, upload_breast
from tests.polling import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

UNAPPROVED = "ab" * 32
"""The only statistics code both parties' audits approve: not the code their workers run."""
stack = stack_fixture(
    "audit", env={"FEDMQ_AUDIT_APPROVED_CODE": json.dumps({"statistics": [UNAPPROVED]})}
)

STATISTICS = f"""
name: audit-statistics
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
  - name: statistics_0
    type: statistics
    inputs: {{data: reader_0.data}}
"""


def pipeline(epochs: int) -> str:
    return f"""
name: audit-hetero-lr
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: hetero_lr_0
    type: hetero_lr
    inputs: {{data: psi_0.data}}
    params:
      common: {{epochs: {epochs}, batch_size: 128, learning_rate: 0.5, seed: 1}}
"""


def audit_api(stack: Stack, party: str, path: str, **params: Any) -> Any:
    client = stack.guest if party == GUEST else stack.host
    response = httpx.get(
        f"{client.base_url}/api/v1/audit{path}",
        params=params,
        headers=client._headers,
        timeout=60,
    )
    response.raise_for_status()
    return response.json() if path != "/export" else response.text


def crossed(
    stack: Stack, party: str, job_id: str, direction: str, tag: str | None = None
) -> set[str]:
    """Ids of the job's federation messages in `party`'s log that went `direction`."""
    events = audit_api(stack, party, f"/jobs/{job_id}/events", limit=10_000)["data"]
    return {
        e["message_id"]
        for e in events
        if e["direction"] == direction
        and e["type"] == "federation.data"
        and (tag is None or e["tag"] == tag)
    }


def tail_logs(state: local.LocalState) -> str:
    """The end of each party's audit log (for a failed wait's message)."""
    return "\n".join(
        f"{party}: {local.log_file(state, party, 'audit').read_text()[-3000:]}"
        for party in (GUEST, HOST)
    )


@pytest.fixture(scope="module")
def ready(stack: Stack) -> Stack:
    upload_breast(stack)
    stack.host.grant("breast_hetero_host", GUEST, ["psi", "hetero_lr", "statistics"])
    return stack


def test_an_honest_job_with_its_audit_killed_midway_breaks_no_rule_and_loses_nothing(
    ready: Stack,
) -> None:
    stack, state = ready, ready.state
    # Prepare: an honest job, and the guest's audit SIGKILLed once federation data flows
    job = stack.guest.submit(pipeline(epochs=1), job_id="audit-clean")
    wait_for(
        lambda: len(crossed(stack, GUEST, job.job_id, "out")) >= 2 or None,
        timeout=300,
        describe=lambda: (stack.guest.job(job.job_id).state, tail_logs(state)),
    )
    assert local.stop_service(state, GUEST, "audit", kill=True)

    # Execute: the job goes on without it; the audit comes back and catches up
    local.start_service(state, GUEST, "audit")
    local.wait_healthy(state, GUEST, service="audit", timeout=60)
    ended = stack.guest.wait(job.job_id, timeout=300)

    # Assert: the job succeeded, and neither party's audit found anything above info
    assert ended.state == "success", ended.reason
    for party in (GUEST, HOST):
        assert audit_api(stack, party, "/alerts", job_id=job.job_id)["data"] == []
    # ...and each party's worker reported to it over the party's broker (svc.audit.reports,
    # as the worker's own broker user): the key holder's decryptions and the table it read
    for party in (GUEST, HOST):
        events = audit_api(stack, party, f"/jobs/{job.job_id}/events", limit=10_000)["data"]
        reported = {e["type"] for e in events if e["direction"] == "local"}
        assert {"report.decrypt_check", "report.column_stats"} <= reported, (party, reported)
    # Every message that left one party is in the other's log as received, and vice versa
    wait_for(
        lambda: (
            crossed(stack, GUEST, job.job_id, "out") == crossed(stack, HOST, job.job_id, "in")
            or None
        ),
        timeout=30,
    )
    assert crossed(stack, HOST, job.job_id, "out") == crossed(stack, GUEST, job.job_id, "in")
    # ...and the guest's chain has nothing missing after the kill
    report = audit_api(stack, GUEST, f"/jobs/{job.job_id}/report")
    assert report["chain_ok"], report["chain_problems"]
    assert verify_export(parse_export(audit_api(stack, GUEST, "/export").splitlines())) == []
    # Each party's audit received the other's signed statement of the job through the two
    # gateways, and it agrees with its own log; the two exports agree with each other
    exports = {
        party: wait_for(
            lambda p=party: statement_held(audit_api(stack, p, "/export"), job.job_id),
            timeout=60,
            describe=lambda: tail_logs(state),
        )
        for party in (GUEST, HOST)
    }
    for export in exports.values():
        held = [c for c in export.peer_checkpoints if c["statement"]]
        assert [c["problem"] for c in held] == [""], held
    assert verify_pair(exports[GUEST], exports[HOST]) == []
    assert verify_pair(exports[HOST], exports[GUEST]) == []


def statement_held(text: str, job_id: str) -> Export | None:
    """The export if it holds the peer's statement of `job_id`."""
    export = parse_export(text.splitlines())
    for held in export.peer_checkpoints:
        if held["statement"] and json.loads(held["statement"])["job_id"] == job_id:
            return export
    return None


def test_a_key_of_the_wrong_width_from_the_host_stops_the_job_at_both_parties(
    ready: Stack,
) -> None:
    stack, state = ready, ready.state
    job = stack.guest.submit(pipeline(epochs=50), job_id="audit-malicious")
    # The host's real key is in: the cheat below comes on top of an honest exchange
    wait_for(lambda: crossed(stack, GUEST, job.job_id, "in", "public_key") or None, timeout=300)

    # Execute: the host's worker (its broker user) announces a 2049-bit key for hetero_lr,
    # through the service's malicious-party harness
    envelope = test_hooks.forged(
        test_hooks.ATTACKS["key_2049"](),
        job_id=job.job_id,
        component="hetero_lr_0",
        sender=PartyRef(party_id=HOST, role="host"),
        receiver=PartyRef(party_id=GUEST, role="guest"),
        tag="public_key",
        attempt=9,  # another message id than the real key's
    )
    with connect(local.service_bus_url(state, HOST, "worker")) as bus:
        sent = time.monotonic()
        test_hooks.inject(bus, envelope)
    ended = stack.guest.wait(job.job_id, timeout=60, poll=0.2)
    took = time.monotonic() - sent

    # Assert: failed at the guest by its audit's request, naming the rule and the party
    assert ended.state == "failed"
    assert "rule data.key_" in (ended.reason or "") and f"broken by party {HOST}" in (
        ended.reason or ""
    ), ended.reason
    assert stack.host.wait(job.job_id, timeout=60, poll=0.2).state == "failed"
    alerts = audit_api(stack, GUEST, "/alerts", job_id=job.job_id)["data"]
    assert {a["rule"] for a in alerts} >= {"data.key_width"}
    print(f"injected -> failed at the guest in {took:.2f} s (poll 0.2 s)")


def test_a_component_whose_code_is_not_the_approved_one_stops_the_job_at_both_parties(
    ready: Stack,
) -> None:
    # Prepare: both audits approve only UNAPPROVED as statistics' code (the module's stack),
    # so each party's worker runs code its party did not approve, as a swapped module would
    stack = ready

    # Execute
    job = stack.guest.submit(STATISTICS, job_id="audit-code")
    ended = stack.guest.wait(job.job_id, timeout=120, poll=0.2)

    # Assert: stopped at both parties by an audit, naming the rule; the worker's report that
    # broke it is in the log with the hash it ran
    assert ended.state == "failed"
    assert "rule control.component_code" in (ended.reason or ""), ended.reason
    assert stack.host.wait(job.job_id, timeout=60, poll=0.2).state == "failed"
    # The guest's own audit names it too, once it has recorded its worker's claim (it may lag
    # the host's stop); critical findings only: a peer message the stopped job's gateway
    # refused makes the job-end statements differ (control.peer_log_disagrees, warn)
    critical = wait_for(
        lambda: (
            [
                a["rule"]
                for a in audit_api(stack, GUEST, "/alerts", job_id=job.job_id)["data"]
                if a["severity"] == "critical"
            ]
            or None
        ),
        timeout=30,
        interval=0.2,
    )
    assert critical == ["control.component_code"]
    events = audit_api(stack, GUEST, f"/jobs/{job.job_id}/events", limit=10_000)["data"]
    claims = [e for e in events if e["type"] == "task.status" and "code_sha256" in e["facts"]]
    ran = {e["facts"]["code_sha256"] for e in claims if e["component"] == "statistics_0"}
    assert ran and UNAPPROVED not in ran


def secureboost_example(trees: int) -> str:
    """examples/pipelines/hetero_secureboost.yaml as written (2048-bit keys, predict,
    evaluation), with `trees` trees."""
    data = yaml.safe_load((REPO / "examples" / "pipelines" / "hetero_secureboost.yaml").read_text())
    boost = {c["name"]: c for c in data["components"]}["secureboost_0"]
    boost["params"]["common"]["num_trees"] = trees
    return yaml.safe_dump(data, sort_keys=False)


def test_the_secureboost_example_breaks_no_rule_and_both_logs_hold_what_crossed(
    ready: Stack,
) -> None:
    # Prepare
    stack = ready
    stack.host.grant(
        "breast_hetero_host",
        GUEST,
        ["psi", "hetero_secureboost", "hetero_secureboost_predict", "hetero_lr", "statistics"],
    )

    # Execute
    job = stack.guest.submit(secureboost_example(trees=2), job_id="audit-secureboost")
    ended = stack.guest.wait(job.job_id, timeout=300)

    # Assert: the job succeeded, neither party's audit found anything above info, and the
    # guest's worker reported its histogram decryptions to its audit
    assert ended.state == "success", ended.reason
    for party in (GUEST, HOST):
        assert audit_api(stack, party, "/alerts", job_id=job.job_id)["data"] == []
    events = audit_api(stack, GUEST, f"/jobs/{job.job_id}/events", limit=10_000)["data"]
    checks = [e for e in events if e["type"] == "report.decrypt_check"]
    assert checks and all(e["facts"]["out_of_bound"] == 0 for e in checks)
    # ...and every message that left one party is in the other's log as received
    wait_for(
        lambda: (
            crossed(stack, GUEST, job.job_id, "out") == crossed(stack, HOST, job.job_id, "in")
            or None
        ),
        timeout=30,
    )
    assert crossed(stack, HOST, job.job_id, "out") == crossed(stack, GUEST, job.job_id, "in")
    assert crossed(stack, GUEST, job.job_id, "out", "histograms") == set()
    assert crossed(stack, HOST, job.job_id, "out", "histograms")
