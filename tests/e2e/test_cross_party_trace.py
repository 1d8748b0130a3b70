"""Issue #7: one job, one trace, across parties — and each party exports only its own spans.

Two parties' gateways, schedulers and workers run as separate processes (`fedmq local`), each
exporting its spans over OTLP/HTTP, as in production, to its own party's collector: here one
small OTLP receiver in the test process that files what arrives by the URL path
(`/<party>/v1/traces`, the launcher puts the party into `{party}`). A PSI + evaluation job
is submitted through the guest's REST API, and we check what a user would look for in Jaeger:

- the REST call is the root of one trace holding the scheduling (the submit command, the
  proposal handled at the host), the tasks at both parties, and the messages relayed by both
  gateways, in both directions;
- every span a party's collector received carries that party's resource: no span crosses a
  site (only the trace context does, inside the signed envelope).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.local_stack import GUEST, HOST, PSI_EVAL, two_parties, upload_breast
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.polling import poll

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

TOKEN = f"trace-{uuid.uuid4().hex}"
SERVICES = ("GATEWAY", "SCHEDULER", "WORKER")


@dataclass
class TracedRun:
    job_id: str
    state: str
    spans: list[ReceivedSpan]


@pytest.fixture(scope="module")
def traced_run(amqp_url: str, redis_url: str, pg_admin_url: str) -> Iterator[TracedRun]:
    """Both parties up with OTLP export to the receiver, one PSI + evaluation job run to its
    end, then both parties stopped (a stopping service flushes its batched spans)."""
    with OtlpReceiver() as receiver:
        endpoint = f"http://127.0.0.1:{receiver.port}/{{party}}/v1/traces"
        with two_parties(
            amqp_url=amqp_url,
            redis_url=redis_url,
            pg_admin_url=pg_admin_url,
            token=TOKEN,
            label="trace",
            env={f"FEDMQ_{service}_OTLP_ENDPOINT": endpoint for service in SERVICES},
        ) as stack:
            upload_breast(stack, guest_label=None)
            job = stack.guest.submit(PSI_EVAL, job_id=f"trace-{uuid.uuid4().hex[:6]}")
            done = stack.guest.wait(job.job_id, timeout=120, poll=0.5)
            # Stopping flushes every process's span batch to its collector.
            stack.down()
        # The test asserts on what arrived, so a short wait is not a failure here.
        poll(lambda: _has_task_spans(receiver, job.job_id), 10, interval=0.2)
        with receiver.lock:
            spans = list(receiver.spans)
        yield TracedRun(job.job_id, done.state, spans)


def _has_task_spans(receiver: OtlpReceiver, job_id: str) -> bool:
    with receiver.lock:
        parties = {
            s.party
            for s in receiver.spans
            if s.name.startswith("task ") and s.attrs.get("fedmq.job_id") == job_id
        }
    return parties == {GUEST, HOST}


def _job_trace(run: TracedRun) -> list[ReceivedSpan]:
    """The spans of the trace whose root is the guest's REST call that submitted the job."""
    submits = [
        s
        for s in run.spans
        if s.service == "gateway"
        and s.party == GUEST
        and s.name.startswith("POST /api/v1/jobs")
        and not s.parent
    ]
    assert submits, "no root span for the REST submit at the guest's gateway"
    by_trace = {s.trace_id for s in submits}
    traces = [[s for s in run.spans if s.trace_id == trace_id] for trace_id in sorted(by_trace)]
    # The submit whose trace holds the job's tasks (a retried POST would be a second root).
    for spans in traces:
        if any(s.attrs.get("fedmq.job_id") == run.job_id for s in spans):
            return spans
    raise AssertionError(f"no REST submit trace mentions job {run.job_id}")


def test_one_job_is_one_trace_from_the_rest_call_through_both_parties(
    traced_run: TracedRun,
) -> None:
    # Prepare: the job ran to success; take the trace rooted at the REST call
    assert traced_run.state == "success"
    spans = _job_trace(traced_run)

    # Execute: what each party's services contributed to that one trace
    def at(party: str, service: str, prefix: str) -> list[ReceivedSpan]:
        return [
            s
            for s in spans
            if s.party == party and s.service == service and s.name.startswith(prefix)
        ]

    # Assert: the REST call, the scheduling at both parties, both parties' tasks, and the
    # gateways relaying in both directions are all in it
    assert at(GUEST, "scheduler", "rpc submit"), "the submit command is not under the REST call"
    assert at(HOST, "scheduler", "handle job.propose"), "the host's proposal handling is missing"
    for party in (GUEST, HOST):
        tasks = {s.attrs.get("fedmq.component_type") for s in at(party, "worker", "task ")}
        assert {"reader", "psi"} <= tasks, f"party {party}'s tasks are not in the trace: {tasks}"
        assert at(party, "gateway", "relay out"), f"party {party}'s gateway sent nothing in it"
        assert at(party, "gateway", "relay in"), f"party {party}'s gateway received nothing in it"
    # Every span but the root has its parent in the trace: nothing hangs off a lost context.
    ids = {s.span_id for s in spans}
    orphans = [s.name for s in spans if s.parent and s.parent not in ids]
    assert not orphans, f"spans whose parent never reached a collector: {orphans[:10]}"


def test_each_party_exports_only_its_own_spans(traced_run: TracedRun) -> None:
    # Prepare / Execute: what each party's collector received
    by_collector: dict[str, set[str]] = {}
    for span in traced_run.spans:
        by_collector.setdefault(span.collector, set()).add(span.party)

    # Assert: both collectors got spans, and only from their own party's processes
    assert by_collector == {GUEST: {GUEST}, HOST: {HOST}}
