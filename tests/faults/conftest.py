"""The fault suite's fixtures: servers of its own, the undisturbed result, and a job run with a
fault in its middle.

Every fault test runs the same job through two parties' real processes (`fedmq local`, driven
through the guest's REST API): the breast tables' reader and iter_sum, whose host sends a
masked vector per round and whose guest adds them up (a checkpoint per round at each party).
That job shows both halves of "nothing lost, nothing applied twice": a round lost never ends
the job, and a round applied twice changes the guest's running sums -- its per-round series
`masked_norm` and its final `result` curve would differ from the undisturbed run's. The
undisturbed result is computed once per session (`undisturbed`), in standalone mode with the
same seed: the two-party run equals it (tests/e2e, tests/worker), so any difference is the
fault's.

FEDMQ_FAULTS_FULL=1 runs the long variants (docs/reliability.md says which).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from fedbus import HEADER_DEAD_REASON, connect
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline
from fedschemas import decode_envelope, topics

from fedmq import local
from fedmq.sdk import Client, Job
from tests.faults.servers import OwnPostgres, OwnRabbitMQ, OwnRedis, scratch
from tests.faults.stack import FaultStack, fault_stack
from tests.local_stack import DATA, GUEST, HOST, Stack
from tests.polling import wait_for

FULL = os.environ.get("FEDMQ_FAULTS_FULL") == "1"
ROUNDS = 12
FAULT_AT_ROUND = 3
"""The fault strikes once the guest has logged this many rounds (of ROUNDS)."""
PIPELINE = f"""
name: fault
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
  - name: sum_0
    type: iter_sum
    inputs: {{data: reader_0.data}}
    params:
      common: {{rounds: {ROUNDS}, seed: 11, round_delay_s: 0.25}}
"""


JOB_TOPICS = (
    topics.WORKER,
    topics.WORKER_REPLIES,
    topics.SCHEDULER,
    topics.SCHEDULER_RPC,
    topics.DATA_RPC,
    topics.CRYPTO,
    topics.GATEWAY,
    topics.GATEWAY_RPC,
)
"""The queues of a party whose dead letters could hold a job's messages (besides out.<peer>)."""


@dataclass(frozen=True)
class Result:
    """What the guest learns from the job: its per-round series and its final sums."""

    series: list[tuple[int, float]]
    result: list[float]


@pytest.fixture(scope="session")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> Result:
    """The job's result without any fault (standalone, same data and seed), once a session."""
    unhurried = PIPELINE.replace("round_delay_s: 0.25", "round_delay_s: 0.0")  # same result
    run = run_pipeline(
        Pipeline.from_yaml(unhurried),
        {GUEST: DATA, HOST: DATA},
        tmp_path_factory.mktemp("undisturbed"),
    )
    series = sorted(
        (m.step, m.value)
        for m in run.metrics
        if m.component == "sum_0" and m.name == "masked_norm" and m.value is not None
    )
    assert len(series) == ROUNDS
    return Result(series, [float(y) for y in run.curve("sum_0", "result").y if y is not None])


# --- servers of the suite's own ------------------------------------------------------------


@pytest.fixture(scope="package")
def own_rabbitmq() -> Iterator[OwnRabbitMQ]:
    """A RabbitMQ node of the suite's own (ports, data dir), that a test may kill -9."""
    server = OwnRabbitMQ(scratch("rabbitmq"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="package")
def own_postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL cluster of the suite's own (initdb in a scratch dir, its own port)."""
    server = OwnPostgres(scratch("postgres"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="package")
def own_redis() -> Iterator[OwnRedis]:
    """A redis-server of the suite's own, without persistence."""
    server = OwnRedis(scratch("redis"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="package")
def stack(
    own_rabbitmq: OwnRabbitMQ, own_postgres: OwnPostgres, own_redis: OwnRedis
) -> Iterator[FaultStack]:
    """Both parties' services on the suite's own servers, a fault proxy on each site link."""
    with fault_stack(own_rabbitmq, own_postgres, own_redis) as running:
        yield running


@pytest.fixture(autouse=True)
def _link_healed_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").heal_link()


# --- one job with a fault in its middle -----------------------------------------------------


@dataclass
class Disturbed:
    job_id: str
    state: str
    reason: str | None
    seconds: float
    """From submission to the job's end, as the guest saw it."""


def rounds_done(stack: Stack, job_id: str) -> int:
    """How many rounds the guest's sum_0 reported (its progress, every round: the stack sets
    the worker's progress interval to 0)."""
    for task in stack.guest.tasks(job_id):
        if task.component == "sum_0" and task.party_id == GUEST:
            return round((task.progress or 0.0) * ROUNDS) if task.state == "running" else 0
    return 0


def run_with_fault(
    stack: Stack,
    fault: Callable[[], None],
    *,
    label: str,
    at_round: int = FAULT_AT_ROUND,
    timeout: float = 240.0,
) -> Disturbed:
    """Submit the job at the guest, call `fault()` once `at_round` rounds are done, wait for
    the job's end at the guest (through whatever the fault left of the REST API)."""
    job_id = f"fault-{label}-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    stack.guest.submit(PIPELINE, job_id=job_id)
    done_before = wait_for(
        lambda: (n := rounds_done(stack, job_id)) >= at_round and n,
        timeout=120,
        interval=0.1,
        what=f"{at_round} rounds of {job_id} running before the fault",
    )
    assert done_before < ROUNDS, "the job ended before the fault could strike"
    fault()
    job = wait_for(
        lambda: _ended(stack, job_id),
        timeout=timeout,
        interval=0.5,
        what=f"the end of {job_id} after the fault",
        retry_on=(Exception,),
    )
    return Disturbed(job_id, job.state, job.reason, time.monotonic() - started)


def _ended(stack: Stack, job_id: str):
    job = stack.guest.job(job_id)
    return job if job.ended else None


def _ended_at(client: Client, job_id: str) -> Job | None:
    job = client.job(job_id)
    return job if job.ended else None


def assert_as_undisturbed(stack: Stack, run: Disturbed, undisturbed: Result) -> None:
    """Nothing lost, nothing applied twice: the job succeeded at both parties, every task once,
    and the guest's per-round series and final sums equal the undisturbed run's."""
    assert run.state == "success", (run.reason, _log_tail(stack, run.job_id))
    # The host learns the end from the guest (job.end through both gateways): a fault that hit
    # the host's gateway as the job ended delays it by the link's reconnection.
    host_job = wait_for(
        lambda: _ended_at(stack.host, run.job_id),
        timeout=60,
        interval=0.2,
        what=f"the host's end of {run.job_id}",
        retry_on=(Exception,),
    )
    assert host_job.state == "success"
    for client in (stack.guest, stack.host):
        tasks = client.tasks(run.job_id)
        assert tasks and all(t.state == "success" for t in tasks), [
            (t.component, t.state) for t in tasks
        ]
    metrics = stack.guest.metrics(run.job_id, component="sum_0")
    series = sorted((m.step, m.value) for m in metrics.data if m.name == "masked_norm")
    steps = [step for step, _ in series]
    assert steps == list(range(ROUNDS)), f"rounds logged: {steps}"
    np.testing.assert_allclose(
        [v for _, v in series], [v for _, v in undisturbed.series], rtol=1e-12
    )
    (curve,) = [c for c in metrics.curves if c.name == "result"]
    np.testing.assert_allclose(curve.y, undisturbed.result, rtol=0, atol=1e-9)


def _log_tail(stack: Stack, job_id: str) -> list[str]:
    try:
        return [f"{e.event} {e.party_id} {e.message}" for e in stack.guest.logs(job_id)][-15:]
    except Exception as exc:
        return [repr(exc)]


STALE_REFUSAL = ": finished_attempt"
"""The end of a dead letter's reason when the peer's gateway refused the message because the
job's attempt had already ended there (its replay guard). Such a message reached the peer after
the peer stopped needing it -- seen once: the host's gateway, killed as the job ended, held back
a job.status its scheduler sent meanwhile (a heartbeat or status report, after the host's task
report had already reached the guest) until after the guest had ended the job. It is not a
loss when the job ended as undisturbed at both parties, which every test asserts;
`dead_letters` leaves it out (docs/reliability.md, "Known and not fixed")."""


def dead_letters(stack: FaultStack, *job_ids: str) -> dict[str, list[str]]:
    """Take what waits in each party's dead-letter queues and return the jobs' messages among
    them: {"party/topic": ["job type: reason"]}. A message of the job that went there was lost to
    it, except one the peer refused as arriving after the job's end (STALE_REFUSAL). (Taking them
    all leaves the next test a clean slate.)"""
    found: dict[str, list[str]] = {}
    for party, p in stack.state.parties.items():
        # Every topic a job's messages travel (by name: rabbitmqctl costs seconds a call, and
        # its message counts of quorum queues lag); a DLQ never declared drains as empty.
        peers = [q for q in stack.state.parties if q != party]
        topics_ = [*JOB_TOPICS, *(topics.OUT_PREFIX + q for q in peers)]
        bus = connect(p.bus_url)
        try:
            for topic in topics_:
                for dead in bus.dead_letters(topic):
                    try:
                        envelope = decode_envelope(dead.body)
                    except Exception:  # not an envelope: not one of the job's messages
                        continue
                    reason = dead.headers.get(HEADER_DEAD_REASON)
                    if envelope.job_id in job_ids and not (reason or "").endswith(STALE_REFUSAL):
                        found.setdefault(f"{party}/{topic}", []).append(
                            f"{envelope.job_id} {envelope.type}: {reason}"
                        )
        finally:
            bus.close()
    return found


def log_lines(stack: Stack, needles: tuple[str, ...], service: str = "gateway") -> list[str]:
    """Lines of both parties' `service` logs (every process so far) holding any of `needles`."""
    found = []
    for party in stack.state.parties:
        path = local.log_file(stack.state, party, service)
        text = path.read_text(errors="replace") if path.exists() else ""
        found += [line for line in text.splitlines() if any(n in line for n in needles)]
    return found
