"""A worker frozen mid-job on the local two-party stack over RabbitMQ (`fedmq local`, separate
processes): the guest's worker process is SIGSTOPped while it runs hetero_lr_0, its heartbeats
stop, its party's audit reports control.worker_silent, and the job fails at both parties within
a second of the detection.

The stack's own settings: leases of 3 s (the worker beats every 1 s) and a worker silence of
10 s at the audits, so the test waits seconds, not the default 120 s. A stack of its own costs
the suite ~2 min at load 20-30 (start, job, purge), so it runs only with
FEDMQ_AUDIT_STACK_FULL=1; tests/audit/test_timer_findings.py checks the same stop on the
in-process federation in every run."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from datetime import datetime

import pytest
import yaml

from fedmq import local
from tests.audit.test_stack import audit_api, crossed, tail_logs
from tests.local_stack import GUEST, HOST, Stack, stack_fixture, upload_breast
from tests.polling import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        os.environ.get("FEDMQ_AUDIT_STACK_FULL") != "1",
        reason="FEDMQ_AUDIT_STACK_FULL=1 runs it (a stack of its own: ~2.5 min)",
    ),
]

SILENT_AFTER_S = 10.0
stack = stack_fixture(
    "wsilent",
    env={
        "FEDMQ_WORKER_TASK_LEASE_S": "3",
        "FEDMQ_AUDIT_WORKER_SILENT_AFTER_S": str(SILENT_AFTER_S),
    },
)


PIPELINE = yaml.safe_dump(
    {
        "name": "audit-worker-frozen",
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            {
                "name": "reader_0",
                "type": "reader",
                "params": {
                    "guest": {"table": "breast_hetero_guest"},
                    "host": {"table": "breast_hetero_host"},
                },
            },
            {
                "name": "hetero_lr_0",
                "type": "hetero_lr",
                "inputs": {"data": "reader_0.data"},
                "params": {"common": {"epochs": 50, "batch_size": 128, "seed": 1}},
            },
        ],
    }
)
"""reader -> hetero_lr (the breast halves are aligned already: no psi to wait for)."""


def _first_failed(stack: Stack, job_id: str, timeout: float) -> dict[str, float]:
    """When (time.time()) each party's job was first seen failed."""
    seen: dict[str, float] = {}

    def both() -> bool:
        for party, client in ((GUEST, stack.guest), (HOST, stack.host)):
            if party not in seen and client.job(job_id).state == "failed":
                seen[party] = time.time()
        return len(seen) == 2

    wait_for(both, timeout=timeout, interval=0.05, describe=lambda: tail_logs(stack.state))
    return seen


def test_a_worker_frozen_mid_job_is_caught_and_the_job_stops_at_both_parties(
    stack: Stack,
) -> None:
    # Prepare: a long hetero_lr job whose federation data flows
    upload_breast(stack)
    stack.host.grant("breast_hetero_host", GUEST, ["hetero_lr"])
    job = stack.guest.submit(PIPELINE, job_id="audit-worker-frozen")
    wait_for(
        lambda: len(crossed(stack, GUEST, job.job_id, "out")) >= 2 or None,
        timeout=300,
        describe=lambda: (stack.guest.job(job.job_id).state, tail_logs(stack.state)),
    )
    pid = local.read_pid(stack.state, GUEST, "worker")
    assert pid is not None

    # Execute: the guest's worker stops (its component and its heartbeat thread with it)
    os.kill(pid, signal.SIGSTOP)
    frozen = time.time()
    try:
        failed_at = _first_failed(stack, job.job_id, timeout=SILENT_AFTER_S + 60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    # Assert: control.worker_silent named at both parties, detected once the interval passed,
    # and the job failed at both within a second of the detection
    jobs = {GUEST: stack.guest.job(job.job_id), HOST: stack.host.job(job.job_id)}
    reasons = {party: j.reason for party, j in jobs.items()}
    alerts = audit_api(stack, GUEST, "/alerts", job_id=job.job_id)["data"]
    found = [a for a in alerts if a["rule"] == "control.worker_silent"]
    assert len(found) == 1 and found[0]["stop_requested"], (alerts, reasons)
    detected = datetime.fromisoformat(found[0]["at"]).timestamp()
    silent = re.search(r"showed no life for (\d+) s", found[0]["detail"])
    # The job failed at each party when its scheduler ended it (ended_at); the test sees it
    # later, through the gateway's API polled every 0.05 s (each answer slow under load)
    ended = {party: j.ended_at for party, j in jobs.items()}
    took = {p: e.timestamp() - detected for p, e in ended.items() if e is not None}
    seen = {party: at - detected for party, at in failed_at.items()}
    print(
        f"SIGSTOP -> detected {detected - frozen:.2f} s (no life for "
        f"{silent.group(1) if silent else '?'} s, whole seconds, in the finding); detected -> "
        f"ended guest {took.get(GUEST, -1):.2f} s, host {took.get(HOST, -1):.2f} s; seen failed "
        f"by the test's poll guest {seen[GUEST]:.2f} s, host {seen[HOST]:.2f} s"
    )
    assert "task hetero_lr_0 (attempt 0) of job audit-worker-frozen" in found[0]["detail"]
    for reason in reasons.values():
        # rule, the party whose worker fell silent and what was silent, at both parties
        assert "rule control.worker_silent broken by party 9999" in (reason or ""), reasons
        assert "worker running task hetero_lr_0" in (reason or ""), reasons
    assert detected - frozen >= SILENT_AFTER_S - 1.5  # its last beat: up to a beat earlier
    assert set(took) == {GUEST, HOST} and max(took.values()) < 1.0, took
    # ...and the finding is in the guest's chain, which verifies
    report = audit_api(stack, GUEST, f"/jobs/{job.job_id}/report")
    assert report["chain_ok"], report["chain_problems"]
    assert "control.worker_silent" in {f["rule"] for f in report["findings_live"]}
