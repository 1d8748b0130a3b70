"""Task execution in the worker, in-process: two parties' workers on memory brokers linked by a
relay; the test plays both schedulers (task.run in, task.status out)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fedbus import Bus, Delivery, connect
from fedbus.runtime import EnvelopePublisher
from fedcrypto.signing import SigningKey
from fedflow.local_relay import CrossingLog, LocalRelay
from fedflow.metrics import MetricsReader
from fedschemas import PartyRef, decode_envelope, decode_payload, new_envelope
from fedschemas.payloads import TaskCancel, TaskMetrics, TaskRun, TaskStatus
from fedworker.main import Worker
from fedworker.settings import WorkerSettings
from fedworker.tasks import task_rows
from pydantic import SecretStr

from tests.polling import wait_until

GUEST, HOST = "9999", "10000"
PARTIES = {"guest": [GUEST], "host": [HOST]}
ROLES = {GUEST: "guest", HOST: "host"}
DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
TABLES = {GUEST: "breast_hetero_guest", HOST: "breast_hetero_host"}
READERS = {party: {"table": table} for party, table in TABLES.items()}
"""reader_0's params: each party reads its own half of the breast data."""


@dataclass
class Party:
    party_id: str
    worker: Worker
    bus: Bus
    statuses: list[TaskStatus]
    status_ids: list[str]
    settings: WorkerSettings
    metrics: list[TaskMetrics] = field(default_factory=list)
    arrivals: list[str] = field(default_factory=list)
    """Message types on the scheduler's topic, in arrival order."""


class Federation2:
    """Two parties' workers and what their schedulers would see."""

    def __init__(self, unique: str, root: Path, **worker_settings: Any) -> None:
        self.parties: dict[str, Party] = {}
        self.lock = threading.Lock()
        buses = {}
        for party in (GUEST, HOST):
            settings = WorkerSettings(
                party_id=party,
                bus_url=SecretStr(f"memory://{unique}-{party}"),
                database_url=SecretStr(f"sqlite:///{root / f'{party}.db'}"),
                task_poll_s=0.05,
                **worker_settings,
            )
            worker = Worker(settings)
            worker.tables.upload(
                TABLES[party],
                DATA / f"{TABLES[party]}.csv",
                label_column="y" if party == GUEST else None,
            )
            bus = connect(f"memory://{unique}-{party}")
            buses[party] = bus
            state = Party(party, worker, bus, [], [], settings)
            bus.declare("svc.scheduler")
            bus.subscribe("svc.scheduler", self._collector(state))
            self.parties[party] = state
        self.crossings = CrossingLog()
        self.relay = LocalRelay(buses, {p: SigningKey.generate() for p in buses}, self.crossings)

    def _collector(self, party: Party) -> Callable[[Delivery], None]:
        def collect(delivery: Delivery) -> None:
            envelope = decode_envelope(delivery.body)
            with self.lock:
                party.arrivals.append(envelope.type)
                if envelope.type == "task.metrics":
                    party.metrics.append(decode_payload(envelope, TaskMetrics))
                    return
                party.status_ids.append(envelope.message_id)
                party.statuses.append(decode_payload(envelope, TaskStatus))

        return collect

    def start(self) -> None:
        for party in self.parties.values():
            party.worker.start()
        self.relay.start()

    def stop(self) -> None:
        self.relay.stop()
        for party in self.parties.values():
            party.worker.stop()
            party.bus.close()

    def restart(self, party: str) -> None:
        """SIGTERM-like stop of a party's worker, then a new worker on the same database."""
        state = self.parties[party]
        state.worker.stop()
        state.worker = Worker(state.settings)
        state.worker.start()

    def send(self, party: str, payload: TaskRun | TaskCancel, component: str, tag: str) -> None:
        me = PartyRef(party_id=party, role="guest")
        envelope = new_envelope(
            payload,
            job_id=payload.job_id,
            component=component,
            task_id=f"{payload.job_id}.{component}",
            attempt=payload.attempt,
            source=me,
            destination=me,
            tag=tag,
            iteration=-1,
            seq=0,
            created_at=datetime.now(UTC),
        )
        EnvelopePublisher(self.parties[party].bus, me).send("svc.worker", envelope)

    def run(
        self,
        job: str,
        component: str,
        ctype: str,
        params: dict[str, Any],
        inputs: dict[str, str],
        attempt: int = 0,
    ) -> None:
        for party, role in ROLES.items():
            self.send(
                party,
                TaskRun(
                    job_id=job,
                    component=component,
                    component_type=ctype,
                    attempt=attempt,
                    role=role,
                    party_id=party,
                    parties=PARTIES,
                    params=params.get(party, params.get("common", {})),
                    inputs=inputs,
                    pipeline_yaml="name: test",
                ),
                component,
                "task.run",
            )

    def states(self, party: str, component: str) -> list[str]:
        with self.lock:
            return [s.state for s in self.parties[party].statuses if s.component == component]

    def final(self, party: str, component: str) -> TaskStatus | None:
        with self.lock:
            for s in self.parties[party].statuses:
                if s.component == component and s.state != "running":
                    return s
        return None

    def run_readers(self, job: str) -> dict[str, TaskStatus]:
        """reader_0 of each party's breast table, run to its end at both: the final reports."""
        self.run(job, "reader_0", "reader", READERS, {})
        return self.wait_final("reader_0")

    def wait_final(self, component: str, timeout: float = 60) -> dict[str, TaskStatus]:
        wait_until(
            lambda: all(self.final(p, component) is not None for p in ROLES),
            timeout=timeout,
            what=f"{component} to end at both parties",
        )
        return {p: s for p in ROLES if (s := self.final(p, component)) is not None}


@pytest.fixture
def start_fed2(unique_name: str, tmp_path: Path) -> Iterator[Callable[..., Federation2]]:
    """Starts both parties' workers with the given worker settings; stopped after the test."""
    started: list[Federation2] = []

    def start(**worker_settings: Any) -> Federation2:
        f = Federation2(unique_name, tmp_path, **worker_settings)
        f.start()
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


@pytest.fixture
def fed2(start_fed2: Callable[..., Federation2]) -> Federation2:
    return start_fed2()


def test_a_tasks_metrics_reach_the_scheduler_topic_before_its_final_status(
    fed2: Federation2,
) -> None:
    # Execute: the reader logs rows, features and missing values at each party
    fed2.run_readers("job-m")

    # Assert: the scheduler gets the values its worker stored, as messages, and they come
    # before the final status (a user who sees the task end sees its metrics)
    guest = fed2.parties[GUEST]
    with fed2.lock:
        reports = [m for m in guest.metrics if m.component == "reader_0"]
        arrivals = list(guest.arrivals)
    sent = {(v.name, v.step): v.value for report in reports for v in report.metrics}
    stored = MetricsReader(guest.worker.engine).values("job-m", "reader_0")
    assert sent == {(name, -1): value for name, value in stored.items()}
    assert sent[("rows", -1)] == 569
    assert all(report.party_id == GUEST for report in reports)
    assert arrivals.index("task.metrics") < len(arrivals) - 1
    assert arrivals[-1] == "task.status"


def test_tasks_run_in_order_and_report_success_with_outputs(fed2: Federation2) -> None:
    # Execute: reader, then iter_sum on its output, at both parties.
    readers = fed2.run_readers("job-a")
    fed2.run(
        "job-a",
        "sum_0",
        "iter_sum",
        {"common": {"rounds": 4, "seed": 1}},
        {"data": "reader_0.data"},
    )
    sums = fed2.wait_final("sum_0")

    # Assert
    assert {p: s.state for p, s in readers.items()} == {GUEST: "success", HOST: "success"}
    assert readers[GUEST].outputs == {"data": "reader_0.data"}
    assert {p: s.state for p, s in sums.items()} == {GUEST: "success", HOST: "success"}
    assert fed2.states(HOST, "sum_0")[0] == "running"
    engine = fed2.parties[GUEST].worker.engine
    assert MetricsReader(engine).values("job-a", "sum_0")["result_sum"] == pytest.approx(20 * 10)
    assert {c.tag for c in fed2.crossings.snapshot()} == {"masked_sum", "ack", "mask_total"}
    # The task rows, the reads, and the cleanup after success (it follows the final report).
    wait_until(
        lambda: all(r["cleaned"] for r in task_rows(engine)),
        timeout=30,
        what="the finished tasks' cleanup",
    )
    rows = task_rows(engine)
    assert [(r["component"], r["state"], r["cleaned"]) for r in rows] == [
        ("reader_0", "success", True),
        ("sum_0", "success", True),
    ]
    assert fed2.parties[GUEST].worker.tables.reads(TABLES[GUEST]) == 1


def test_a_task_run_delivered_twice_runs_once(fed2: Federation2) -> None:
    fed2.run("job-b", "reader_0", "reader", READERS, {})
    fed2.run("job-b", "reader_0", "reader", READERS, {})  # same ids: dropped by the inbox
    fed2.wait_final("reader_0")
    time.sleep(0.5)
    assert fed2.states(GUEST, "reader_0").count("success") == 1
    assert fed2.parties[GUEST].worker.tables.reads(TABLES[GUEST]) == 1


def test_a_failing_component_reports_failed_with_the_reason(fed2: Federation2) -> None:
    fed2.run("job-c", "reader_0", "reader", {"common": {"table": "no_such_table"}}, {})
    ended = fed2.wait_final("reader_0")
    assert ended[HOST].state == "failed"
    assert ended[HOST].reason == "TableError: party 10000 has no table 'no_such_table'"


def test_bad_params_and_missing_inputs_fail_the_task_naming_the_problem(fed2: Federation2) -> None:
    fed2.run(
        "job-d", "sum_0", "iter_sum", {"common": {"rounds": "many"}}, {"data": "reader_0.data"}
    )
    ended = fed2.wait_final("sum_0")
    assert ended[GUEST].state == "failed" and "rounds" in (ended[GUEST].reason or "")
    fed2.run("job-d", "sum_1", "iter_sum", {"common": {"rounds": 2}}, {"data": "reader_9.data"})
    ended = fed2.wait_final("sum_1")
    assert "has no output reader_9.data" in (ended[HOST].reason or "")


def test_a_cancel_stops_a_running_task_which_reports_canceled(fed2: Federation2) -> None:
    # Prepare: readers done; iter_sum slow enough to be caught mid-run.
    fed2.run_readers("job-e")
    fed2.run(
        "job-e",
        "sum_0",
        "iter_sum",
        {"common": {"rounds": 200, "round_delay_s": 0.05}},
        {"data": "reader_0.data"},
    )
    wait_until(lambda: "running" in fed2.states(GUEST, "sum_0"), what="the task to start")

    # Execute
    for party in ROLES:
        fed2.send(
            party,
            TaskCancel(job_id="job-e", component="sum_0", attempt=0, reason="stopped by a user"),
            "sum_0",
            "task.cancel",
        )
    ended = fed2.wait_final("sum_0", timeout=30)

    # Assert
    assert {p: (s.state, s.reason) for p, s in ended.items()} == {
        GUEST: ("canceled", "stopped by a user"),
        HOST: ("canceled", "stopped by a user"),
    }


def test_a_cancel_before_the_task_arrives_cancels_it_on_arrival(fed2: Federation2) -> None:
    fed2.send(
        GUEST,
        TaskCancel(job_id="job-f", component="reader_0", attempt=0, reason="job stopped"),
        "reader_0",
        "task.cancel",
    )
    time.sleep(0.3)
    fed2.run("job-f", "reader_0", "reader", {"common": {"table": TABLES[GUEST]}}, {})
    wait_until(lambda: fed2.final(GUEST, "reader_0") is not None, what="the canceled report")
    assert fed2.states(GUEST, "reader_0") == ["canceled"]
    assert fed2.parties[GUEST].worker.tables.reads(TABLES[GUEST]) == 0


def test_a_gracefully_stopped_worker_releases_its_task_and_the_next_one_resumes_it(
    start_fed2: Callable[..., Federation2],
) -> None:
    # Prepare: a short lease, so the released task is picked up quickly either way.
    fed2 = start_fed2(task_lease_s=1.0, progress_interval_s=0.0)
    fed2.run_readers("job-g")
    params = {"common": {"rounds": 24, "seed": 4, "round_delay_s": 0.1}}
    fed2.run("job-g", "sum_0", "iter_sum", params, {"data": "reader_0.data"})
    wait_until(
        lambda: any(
            (s.progress or 0) >= 0.25 for s in fed2.parties[HOST].statuses if s.component == "sum_0"
        ),
        what="a quarter of the rounds",
    )

    # Execute: the host's worker stops (SIGTERM path) and a new one starts.
    fed2.restart(HOST)
    ended = fed2.wait_final("sum_0", timeout=60)

    # Assert: no canceled or failed report; success at both; the same result as rounds
    # run without a stop (sum of r + 1 over 24 rounds, 20 features with mean square 1).
    assert {p: s.state for p, s in ended.items()} == {GUEST: "success", HOST: "success"}
    assert "canceled" not in fed2.states(HOST, "sum_0")
    values = MetricsReader(fed2.parties[GUEST].worker.engine).values("job-g", "sum_0")
    assert values["result_sum"] == pytest.approx(300 * 20)
    (row,) = [r for r in task_rows(fed2.parties[HOST].worker.engine) if r["component"] == "sum_0"]
    assert row["runs"] >= 2  # claimed again after the stop


def test_a_task_that_ends_at_once_reports_running_once_then_its_end(
    start_fed2: Callable[..., Federation2],
) -> None:
    # Prepare: an interval no loaded machine outlasts between a noop's start and its end (with
    # the default 2 s, a slow end let the held-back 1.0 go out as a second running report)
    fed2 = start_fed2(progress_interval_s=60.0)

    # Execute: noop reports progress 1.0 right after its start, within the progress interval
    fed2.run("job-h", "noop_0", "noop", {}, {})
    ended = fed2.wait_final("noop_0")

    # Assert: the claim's running report and the success (which carries progress 1.0); no
    # running report just before it
    assert {p: s.state for p, s in ended.items()} == {GUEST: "success", HOST: "success"}
    assert fed2.states(GUEST, "noop_0") == ["running", "success"]
    assert fed2.states(HOST, "noop_0") == ["running", "success"]
    assert ended[HOST].progress == 1.0


def test_progress_held_back_by_the_interval_is_reported_later(
    start_fed2: Callable[..., Federation2],
) -> None:
    # Prepare: a 1 s progress interval; the lease keeper runs every 0.3 s
    fed2 = start_fed2(task_lease_s=0.9, progress_interval_s=1.0)
    fed2.run_readers("job-i")

    # Execute: one round reports 1.0 at once (inside the interval), then works 3 s on
    params = {"common": {"rounds": 1, "seed": 2, "round_delay_s": 3.0}}
    fed2.run("job-i", "sum_0", "iter_sum", params, {"data": "reader_0.data"})
    ended = fed2.wait_final("sum_0", timeout=60)

    # Assert: the held-back 1.0 arrived while the task still ran, before its success
    assert {p: s.state for p, s in ended.items()} == {GUEST: "success", HOST: "success"}
    with fed2.lock:
        reports = [
            (s.state, s.progress) for s in fed2.parties[HOST].statuses if s.component == "sum_0"
        ]
    assert reports == [("running", 0.0), ("running", 1.0), ("success", 1.0)]
