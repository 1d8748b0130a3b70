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

LONG = pytest.mark.skipif(not FULL, reason="FEDMQ_FAULTS_FULL=1 runs it")


def test_each_service_killed_in_turn_mid_job_loses_nothing_and_applies_nothing_twice(
    stack: FaultStack, undisturbed: Result
) -> None:
    """The default run: one job, three kills -- the host's worker (it sends each round's data),
    the guest's scheduler (it initiated the job), the host's gateway -- each restarted before
    the next (FEDMQ_FAULTS_FULL=1 also runs each kill, at each party, in a job of its own)."""
    # Execute
    victims = [(HOST, "worker"), (GUEST, "scheduler"), (HOST, "gateway")]
    pids: list[tuple[int | None, int]] = []

    def kill_each() -> None:
        for party, service in victims:
            pids.append(stack.kill(party, service))

    run = run_with_fault(stack, kill_each, label="kills")

    # Assert: each was a new process, and the job is the undisturbed one
    assert len(pids) == len(victims)
    assert all(old is not None and new != old for old, new in pids), pids
    assert_as_undisturbed(stack, run, undisturbed)
    assert dead_letters(stack, run.job_id) == {}


@LONG
@pytest.mark.parametrize("party", [GUEST, HOST])
@pytest.mark.parametrize("service", ["worker", "scheduler", "gateway"])
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
