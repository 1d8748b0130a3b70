"""A service of either party killed -9 in the middle of a job and started again (`fedmq local
restart --kill`'s function): the job ends as if nothing had happened.

- worker: its task's lease expires, the new process claims it and resumes from the last
  checkpoint, re-sending what it had sent after it (the same message ids: the peer's inbox
  drops the copies);
- scheduler: its state is in PostgreSQL; unacked task.status / job messages are redelivered;
- gateway: unacked relayed frames are resent on a new link connection and deduplicated by the
  receiving party's inbox; outbound messages wait on the party's broker meanwhile.

The host's worker killed mid-run with the test playing both schedulers is
tests/worker/test_worker_resume_rabbitmq.py, and a gateway killed mid-stream (1,000 messages,
each handled exactly once) tests/gateway/test_relay_rabbitmq.py; these run the whole job
through both parties' REST APIs instead.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import FULL, Result, assert_as_undisturbed, dead_letters, run_with_fault
from tests.faults.stack import FaultStack
from tests.local_stack import GUEST, HOST

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

# By default each service is killed at one party (the one whose loss is harder: the worker
# and the gateway at the host, which sends each round's data; the scheduler at the guest,
# which initiated the job); FEDMQ_FAULTS_FULL=1 kills each at both.
LONG = pytest.mark.skipif(not FULL, reason="FEDMQ_FAULTS_FULL=1 runs it")
VICTIMS = [
    pytest.param(HOST, "worker", id="host-worker"),
    pytest.param(GUEST, "scheduler", id="guest-scheduler"),
    pytest.param(HOST, "gateway", id="host-gateway"),
    pytest.param(GUEST, "worker", id="guest-worker", marks=LONG),
    pytest.param(HOST, "scheduler", id="host-scheduler", marks=LONG),
    pytest.param(GUEST, "gateway", id="guest-gateway", marks=LONG),
]


@pytest.mark.parametrize(("party", "service"), VICTIMS)
def test_a_service_killed_mid_job_and_restarted_loses_nothing_and_applies_nothing_twice(
    stack: FaultStack, undisturbed: Result, party: str, service: str
) -> None:
    # Execute: kill -9 the service a few rounds in; start it again (it waits for /healthz)
    pids: list[tuple[int | None, int]] = []
    run = run_with_fault(
        stack, lambda: pids.append(stack.kill(party, service)), label=f"{service}-{party}"
    )

    # Assert: a new process ran, and the job is the undisturbed one
    ((old, new),) = pids
    assert old is not None and new != old
    assert_as_undisturbed(stack, run, undisturbed)
    assert dead_letters(stack, run.job_id) == {}
