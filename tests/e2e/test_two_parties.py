"""Issue #5 end to end: two parties' gateways, schedulers and workers as separate processes
(`fedmq local`: a RabbitMQ vhost, a PostgreSQL database and a Redis prefix per party), driven
only through each party's REST API with the SDK, as a user would:

(a) the PSI + evaluation pipeline (examples/pipelines/psi_eval.yaml, breast data) runs across
    the two parties to success;
(b) the same pipeline in standalone mode (fedflow.standalone, what `fedmq standalone run` runs)
    gives the same result: the same intersection size at both parties and the same metrics;
(c) a job whose host table is not granted fails with the host's reason, and the host's table
    was read zero times.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline

from tests.local_stack import (
    DATA,
    GUEST,
    HOST,
    PSI_EVAL,
    Stack,
    shared_stack_fixture,
    upload_breast,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

EVAL_METRICS = ("auc", "ks", "accuracy", "precision", "recall", "log_loss", "rows")


# Both parties' services in a scratch directory: the plain stack tests/security shares.
stack = shared_stack_fixture()


def test_psi_and_evaluation_across_two_parties_equal_the_standalone_run(
    stack: Stack, tmp_path: Path
) -> None:
    # Prepare: each party uploads its half of the data; the host grants its table for psi
    upload_breast(stack)
    started = time.monotonic()

    # Execute: submit at the guest, wait for the end; the same pipeline standalone
    job = stack.guest.submit(PSI_EVAL, job_id=f"e2e-psi-{uuid.uuid4().hex[:6]}")
    done = stack.guest.wait(job.job_id, timeout=90, poll=0.5)
    took = time.monotonic() - started
    guest_metrics = stack.guest.metrics(job.job_id)
    host_metrics = stack.host.metrics(job.job_id)
    host_view = stack.host.job(job.job_id)
    standalone = run_pipeline(Pipeline.from_yaml(PSI_EVAL), {GUEST: DATA, HOST: DATA}, tmp_path)

    # Assert (a): success at both parties, each party's tasks done
    assert done.state == "success", (done.reason, stack.guest.logs(job.job_id))
    assert done.tasks_succeeded == done.tasks_total == 5  # reader, psi at both; eval at guest
    assert host_view.state == "success"
    assert took < 90
    # Assert (b): the same intersection at both parties and the same metrics as standalone
    expected_size = standalone.metric("psi_0", "intersection_size", GUEST)
    assert guest_metrics.value("psi_0", "intersection_size", GUEST) == expected_size
    assert host_metrics.value("psi_0", "intersection_size", HOST) == expected_size
    assert expected_size == 569  # every patient is on both sides of the breast split
    for name in EVAL_METRICS:
        assert guest_metrics.value("eval_0", name, GUEST) == pytest.approx(
            standalone.metric("eval_0", name, GUEST), rel=1e-12, abs=1e-12
        ), name
    assert host_metrics.values("eval_0") == {}  # evaluation runs at the guest only
    assert stack.host.table("breast_hetero_host").reads >= 1


def test_a_job_refused_for_a_missing_grant_fails_with_the_hosts_reason_and_reads_nothing(
    stack: Stack,
) -> None:
    # Prepare: the host has a table it granted to nobody; the pipeline reads it
    stack.guest.upload_table(
        "breast_hetero_guest", DATA / "breast_hetero_guest.csv", label_column="y", replace=True
    )
    stack.host.upload_table("breast_private", DATA / "breast_hetero_host.csv", replace=True)
    pipeline = PSI_EVAL.replace(
        "host: {table: breast_hetero_host}", "host: {table: breast_private}"
    )
    guest_reads_before = stack.guest.table("breast_hetero_guest").reads
    started = time.monotonic()

    # Execute
    job = stack.guest.submit(pipeline, job_id=f"e2e-refused-{uuid.uuid4().hex[:6]}")
    done = stack.guest.wait(job.job_id, timeout=60, poll=0.5)
    took = time.monotonic() - started

    # Assert: failed with the host's reason, nothing read at either party
    assert done.state == "failed"
    assert done.reason is not None
    assert done.reason.startswith(f"party {HOST} refused the job: "), done.reason
    assert "breast_private" in done.reason and f"not granted to party {GUEST}" in done.reason
    host_party = next(p for p in done.parties if p.party_id == HOST)
    assert host_party.state == "failed"
    assert stack.host.table("breast_private").reads == 0
    assert stack.guest.table("breast_hetero_guest").reads == guest_reads_before
    assert all(t.state != "success" for t in stack.guest.tasks(job.job_id))
    events = [e.event for e in stack.guest.logs(job.job_id)]
    assert "party_failed" in events and events[-1] == "job_failed"
    assert took < 90
