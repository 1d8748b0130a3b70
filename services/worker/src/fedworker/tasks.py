"""Task execution: the worker's record of its tasks, and the runner threads that run them.

`task.run` (handlers.py) only records the task (`worker_tasks`, state "queued") in the inbox's
transaction, so the broker message is acked at once: a component that runs for minutes never
holds a delivery unacked. Runner threads (`TaskExecutor`) claim recorded tasks and run them
through fedflow's PartyRuntime.

Claims are leases, so any replica of the party's worker (they share the database) can run a
task, and a task whose worker died is picked up again:
  - claim: UPDATE ... SET state='running', claimed_by=<this process>, lease_until=now+lease
    WHERE the row is still 'queued', or 'running' with an expired lease -- one conditional
    UPDATE, so two replicas never claim the same task;
  - a keeper thread renews the leases of the tasks this process runs every lease/3 and picks
    up cancellation requests recorded by task.cancel (possibly consumed by another replica);
  - a task whose lease expired (its process was killed) is claimed again and resumes from its
    last checkpoint (fedflow's resume rule: re-sends its checkpoint iteration's messages with
    the same ids). On start-up a worker also reclaims the tasks it held before a restart, as
    soon as their leases expire.
Graceful stop (SIGTERM) interrupts the running components and releases their leases without
reporting anything, so the next worker resumes them; it does not fail the job.

Status reports go to this party's scheduler as `task.status`, with deterministic ids: the tag
names the state ("task.status.success", ...) and seq is 0 for the final states, so a report
repeated after a crash has the same id and is dropped; "running" reports (start, resume,
progress) count up in the task row. Each report is published inside the transaction that
records the state it reports. The metrics a task logged go to the scheduler as task.metrics
(fedworker.job_metrics): every lease-keeper round while it runs, and all of them just before
its final report.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import structlog
from fedbus import BrokerUnavailable
from fedbus.runtime import EnvelopePublisher
from fedcommon.logging import bind_message_context
from fedcommon.tracing import get_tracer, span_from_remote
from fedflow.code_identity import ComponentCode, component_code
from fedflow.federation import TaskCanceled
from fedflow.pipeline import Pipeline, PipelineError
from fedflow.policy import SecurityPolicy, initiator_matters, task_problem
from fedflow.runner import PartyRuntime, TaskError
from fedflow.task import TaskKey, TaskSpec
from fedschemas import Envelope, PartyRef, Payload, new_envelope
from fedschemas.payloads import TaskStatus
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from fedworker.job_metrics import MetricsForwarder
    from fedworker.metrics import WorkerMetrics

log = structlog.get_logger("fedworker.tasks")
_TRACER = get_tracer("fedworker.tasks")

QUEUED, RUNNING, SUCCESS, FAILED, CANCELED = "queued", "running", "success", "failed", "canceled"
FINAL = (SUCCESS, FAILED, CANCELED)
ANY_ROLE = "*"
"""Role of a placeholder row: a task.cancel that arrived before its task.run."""
MAX_REASON = 4000

tasks_metadata = sa.MetaData()
tasks_table = sa.Table(
    "worker_tasks",
    tasks_metadata,
    sa.Column("job_id", sa.String(256), primary_key=True),
    sa.Column("component", sa.String(128), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("component_type", sa.String(128), nullable=False),
    sa.Column("parties", sa.Text, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("pipeline_yaml", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("outputs", sa.Text, nullable=True),
    sa.Column("progress", sa.Float, nullable=True),
    sa.Column("status_seq", sa.Integer, nullable=False, default=0),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("runs", sa.Integer, nullable=False, default=0),
    # How many times the task was claimed (a resume after a crash or a stop is a new claim).
    sa.Column("cleaned", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # The W3C traceparent of the task.run handler: the task's span (and every message the
    # component sends) joins the job's trace although it runs later, on a runner thread.
    sa.Column("traceparent", sa.String(64), nullable=True),
)
# The table's revisions (a column added later included) are fedworker.migrations'.


def _now() -> datetime:
    return datetime.now(UTC)


def _key_where(job_id: str, component: str, attempt: int, role: str) -> sa.ColumnElement[bool]:
    c = tasks_table.c
    return sa.and_(
        c.job_id == job_id, c.component == component, c.attempt == attempt, c.role == role
    )


def _database_unreachable(exc: BaseException) -> bool:
    """A database connection failure (SQLAlchemy's OperationalError or DisconnectionError),
    anywhere in the exception's chain: the task's own code did nothing wrong."""
    seen: BaseException | None = exc
    while seen is not None:
        names = {c.__name__ for c in type(seen).__mro__ if c.__module__.startswith("sqlalchemy")}
        if names & {"OperationalError", "DisconnectionError"}:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _broker_unreachable(exc: BaseException) -> bool:
    """The party's broker could not be reached for longer than a send's retry window
    (fedbus.BrokerUnavailable anywhere in the chain: a broker restart under load takes more
    than the 30 s window): not the component's failure either."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BrokerUnavailable):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class _Running:
    key: TaskKey
    cancel: threading.Event = field(default_factory=threading.Event)
    # The claim reported "running" (with the task's progress so far): the interval between
    # progress reports counts from there.
    last_progress: float = field(default_factory=time.monotonic)
    pending_progress: float | None = None
    """The latest fraction held back by the interval; the lease keeper sends it later."""
    report_lock: threading.Lock = field(default_factory=threading.Lock)
    """One running report at a time per task (the runner thread's and the keeper's)."""
    metrics_since: datetime | None = None
    """The newest logged_at of the metrics sent to the scheduler so far (fedworker.job_metrics)."""


def own_envelope(
    payload: Payload, key: TaskKey, party_id: str, *, tag: str, iteration: int, seq: int
) -> Envelope:
    """An envelope about `key`'s task from this party (`party_id`, in the task's role; "local"
    for a task of every role) to itself: what the worker sends its own scheduler."""
    role = key.role if key.role != ANY_ROLE else "local"
    me = PartyRef(party_id=party_id, role=role)  # type: ignore[arg-type]
    return new_envelope(
        payload,
        job_id=key.job_id,
        component=key.component,
        task_id=key.task_id,
        attempt=key.attempt,
        source=me,
        destination=me,
        tag=tag,
        iteration=iteration,
        seq=seq,
        created_at=_now(),
    )


class StatusReporter:
    """Publishes task.status to this party's scheduler (inside the caller's transaction)."""

    def __init__(self, publisher: EnvelopePublisher, party_id: str, topic: str) -> None:
        self.publisher = publisher
        self.party_id = party_id
        self.topic = topic

    def report(
        self,
        key: TaskKey,
        state: str,
        *,
        seq: int = 0,
        reason: str | None = None,
        progress: float | None = None,
        outputs: dict[str, str] | None = None,
        code: ComponentCode | None = None,
    ) -> None:
        envelope = own_envelope(
            TaskStatus(
                job_id=key.job_id,
                component=key.component,
                attempt=key.attempt,
                party_id=self.party_id,
                state=state,  # type: ignore[arg-type]
                reason=None if reason is None else reason[:MAX_REASON],
                progress=progress,
                outputs=outputs,
                component_version=None if code is None else code.version,
                code_sha256=None if code is None else code.sha256,
            ),
            key,
            self.party_id,
            tag=f"task.status.{state}",
            iteration=-1,
            seq=seq,
        )
        self.publisher.send(self.topic, envelope)


def record_task(
    conn: Connection | Any, spec: TaskSpec, pipeline_yaml: str, *, traceparent: str | None = None
) -> str:
    """Record a task.run (in the handler's transaction); returns the state it is in now.

    A task already recorded keeps its state (task.run redelivered or re-sent); a task canceled
    before it arrived is recorded as canceled. `traceparent` is the trace the task's span will
    join when a runner thread runs it.
    """
    c = tasks_table.c
    # One query for the task's row and a cancellation placeholder (role "*") for it.
    states = dict(
        conn.execute(
            sa.select(c.role, c.state).where(
                c.job_id == spec.job_id,
                c.component == spec.component,
                c.attempt == spec.attempt,
                c.role.in_([spec.role, ANY_ROLE]),
            )
        ).all()
    )
    if spec.role in states:
        return str(states[spec.role])
    state = CANCELED if ANY_ROLE in states else QUEUED
    now = _now()
    conn.execute(
        sa.insert(tasks_table),
        {
            "job_id": spec.job_id,
            "component": spec.component,
            "attempt": spec.attempt,
            "role": spec.role,
            "component_type": spec.component_type,
            "parties": json.dumps({r: list(p) for r, p in spec.parties.items()}),
            "params": json.dumps(dict(spec.params)),
            "inputs": json.dumps(dict(spec.inputs)),
            "pipeline_yaml": pipeline_yaml,
            "state": state,
            "reason": "canceled before it started" if state == CANCELED else None,
            "status_seq": 0,
            "cancel_requested": state == CANCELED,
            "runs": 0,
            "cleaned": state == CANCELED,
            "created_at": now,
            "updated_at": now,
            "traceparent": traceparent,
        },
    )
    return state


def request_cancel(
    conn: Connection | Any, job_id: str, component: str, attempt: int, reason: str
) -> list[tuple[TaskKey, str]]:
    """Record a task.cancel; returns (task, state before) for every matching task."""
    c = tasks_table.c
    rows = conn.execute(
        sa.select(c.role, c.state).where(
            c.job_id == job_id, c.component == component, c.attempt == attempt
        )
    ).all()
    now = _now()
    if not rows:
        conn.execute(
            sa.insert(tasks_table),
            {
                "job_id": job_id,
                "component": component,
                "attempt": attempt,
                "role": ANY_ROLE,
                "component_type": "",
                "parties": "{}",
                "params": "{}",
                "inputs": "{}",
                "pipeline_yaml": "",
                "state": CANCELED,
                "reason": reason,
                "status_seq": 0,
                "cancel_requested": True,
                "runs": 0,
                "cleaned": True,
                "created_at": now,
                "updated_at": now,
            },
        )
        return []
    found = []
    for role, state in rows:
        if role == ANY_ROLE:
            continue
        values: dict[str, Any] = {"cancel_requested": True, "reason": reason, "updated_at": now}
        if state == QUEUED:
            values.update(state=CANCELED, reason=reason, cleaned=True)
        conn.execute(
            sa.update(tasks_table)
            .where(_key_where(job_id, component, attempt, role))
            .values(**values)
        )
        found.append((TaskKey(job_id, component, attempt, "", role), state))
    return found


class TaskExecutor:
    """Runner threads claiming and running this party's recorded tasks."""

    def __init__(
        self,
        runtime: PartyRuntime,
        engine: Engine,
        reporter: StatusReporter,
        *,
        threads: int = 4,
        lease_s: float = 15.0,
        poll_s: float = 0.5,
        recv_timeout: float | None = None,
        progress_interval_s: float = 2.0,
        instance_id: str | None = None,
        metrics: WorkerMetrics | None = None,
        forwarder: MetricsForwarder | None = None,
        policy: SecurityPolicy | None = None,
    ) -> None:
        """`forwarder` sends the tasks' metrics to the scheduler (while they run and before
        their final report); None: they stay in this party's database only. `policy` is this
        party's security policy, checked before a task runs (None: the secure defaults)."""
        self.runtime = runtime
        self.policy = policy if policy is not None else SecurityPolicy()
        self.metrics = metrics
        self.forwarder = forwarder
        self.engine = engine
        self.reporter = reporter
        self.party_id = runtime.party_id
        self.threads = threads
        self.lease = timedelta(seconds=lease_s)
        self.poll_s = poll_s
        self.recv_timeout = recv_timeout
        self.progress_interval_s = progress_interval_s
        self.instance_id = instance_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Each recorded task wakes ONE idle runner thread: an Event woke all of them, and
        # each ran a claim for a task only one could get. Wake-ups left for threads that are
        # busy are capped at the thread count (a thread that finishes claims again anyway).
        self._wake = threading.Condition()
        self._wakes = 0
        self._stopping = threading.Event()
        self._running: dict[tuple[str, str, int, str], _Running] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # --- control -----------------------------------------------------------------------------

    def start(self) -> None:
        self._cleanup_finished()
        for n in range(self.threads):
            thread = threading.Thread(target=self._work, name=f"fedworker-task-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        keeper = threading.Thread(target=self._keep_leases, name="fedworker-leases", daemon=True)
        keeper.start()
        self._threads.append(keeper)
        reporter = threading.Thread(
            target=self._forward_while_running, name="fedworker-progress", daemon=True
        )
        reporter.start()
        self._threads.append(reporter)

    def wake(self, count: int = 1) -> None:
        """A task was recorded (committed): one idle runner thread claims it now."""
        with self._wake:
            self._wakes = min(self._wakes + count, self.threads)
            self._wake.notify(count)

    def _wait_for_work(self) -> None:
        with self._wake:
            if not self._wakes:
                self._wake.wait(self.poll_s)
            if self._wakes:
                self._wakes -= 1

    def cancel_local(self, job_id: str, component: str, attempt: int) -> None:
        """Interrupt matching tasks running in this process (task.cancel was recorded)."""
        with self._lock:
            for (job, comp, att, _role), running in self._running.items():
                if (job, comp, att) == (job_id, component, attempt):
                    running.cancel.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Interrupt running tasks and release their leases (no status: they resume later)."""
        self._stopping.set()
        self.wake(self.threads)
        with self._lock:
            for running in self._running.values():
                running.cancel.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))

    # --- claiming ----------------------------------------------------------------------------

    def _claim(self) -> dict[str, Any] | None:
        c = tasks_table.c
        now = _now()
        claimable = sa.or_(
            c.state == QUEUED,
            sa.and_(c.state == RUNNING, sa.or_(c.lease_until.is_(None), c.lease_until < now)),
        )
        # A task this process still runs is never claimed again here, even when its lease
        # lapsed (the database was away longer than the lease): a second run beside the first
        # would save the same checkpoints.
        with self._lock:
            mine = {
                (r.key.job_id, r.key.component, r.key.attempt, r.key.role)
                for r in self._running.values()
            }
        # One transaction for the look and the claim: each claim is still a conditional
        # UPDATE (the row must still be claimable), so two replicas never both get a task.
        with self.engine.begin() as conn:
            candidates = conn.execute(
                sa.select(c.job_id, c.component, c.attempt, c.role)
                .where(claimable, c.role != ANY_ROLE)
                .order_by(c.created_at)
                .limit(8)
            ).all()
            for job_id, component, attempt, role in candidates:
                if self._stopping.is_set():
                    return None
                if (job_id, component, attempt, role) in mine:
                    continue
                row = conn.execute(
                    sa.update(tasks_table)
                    .where(_key_where(job_id, component, attempt, role), claimable)
                    .values(
                        state=RUNNING,
                        claimed_by=self.instance_id,
                        lease_until=now + self.lease,
                        runs=c.runs + 1,
                        updated_at=now,
                    )
                    .returning(*tasks_table.c)
                ).first()
                if row is None:
                    continue  # another replica (or runner thread) was faster
                # The start (or resume) report commits with the claim; its span joins the
                # job's trace (the task's span starts only once this commits).
                key = TaskKey(job_id, component, attempt, self.party_id, role)
                with span_from_remote(
                    _TRACER, "task claim", row.traceparent, kind=SpanKind.INTERNAL
                ) as span:
                    span.set_attribute("fedmq.job_id", job_id)
                    span.set_attribute("fedmq.component", component)
                    self._report_running(
                        conn,
                        key,
                        row.status_seq,
                        progress=row.progress or 0.0,
                        component_type=row.component_type,
                    )
                return dict(row._mapping)
        return None

    def _report_running(
        self,
        conn: Connection,
        key: TaskKey,
        seq: int,
        *,
        progress: float,
        component_type: str | None = None,
    ) -> None:
        """A running report; the claim's (with `component_type`) says which code runs it, for
        this party's audit (control.component_code)."""
        conn.execute(
            sa.update(tasks_table)
            .where(_key_where(key.job_id, key.component, key.attempt, key.role))
            .values(status_seq=seq + 1, progress=progress)
        )
        code = None
        if component_type is not None:
            try:
                code = component_code(component_type)
            except (KeyError, LookupError, OSError):
                code = None  # an unknown type fails when it runs; the audit sees no hash
        self.reporter.report(key, RUNNING, seq=seq, progress=progress, code=code)

    # --- running -----------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                row = self._claim()
            except Exception as exc:  # the database or broker is away: try again later
                log.warning("task_claim_failed", error=str(exc))
                row = None
            if row is None:
                self._wait_for_work()
                continue
            self._run(row)

    def _spec(self, row: dict[str, Any]) -> TaskSpec:
        return TaskSpec(
            job_id=row["job_id"],
            component=row["component"],
            component_type=row["component_type"],
            attempt=row["attempt"],
            role=row["role"],
            party_id=self.party_id,
            parties=json.loads(row["parties"]),
            params=json.loads(row["params"]),
            inputs=json.loads(row["inputs"]),
        )

    def _run(self, row: dict[str, Any]) -> None:
        spec = self._spec(row)
        # The task's span hangs off the task.run handler's span (kept in the row): the job's
        # trace goes on through the component and every message it sends.
        # Every line logged while the task runs (the runner's, the component's, ours) names
        # its job and task (fedschemas.task_scope_id), as a message's lines do.
        with (
            bind_message_context(job_id=spec.job_id, task_id=spec.key.task_id),
            span_from_remote(
                _TRACER,
                f"task {spec.component_type}",
                row.get("traceparent"),
                kind=SpanKind.INTERNAL,
            ) as span,
        ):
            span.set_attribute("fedmq.job_id", spec.job_id)
            span.set_attribute("fedmq.component", spec.component)
            span.set_attribute("fedmq.component_type", spec.component_type)
            span.set_attribute("fedmq.role", spec.role)
            span.set_attribute("fedmq.attempt", spec.attempt)
            span.set_attribute("fedmq.party_id", self.party_id)
            span.set_attribute("fedmq.task_run", int(row["runs"]))
            self._run_task(spec, row, span)

    def _run_task(self, spec: TaskSpec, row: dict[str, Any], span: Span) -> None:
        key = spec.key
        if self._stopping.is_set():  # claimed while stopping: leave it to the next worker
            self._release(key)
            return
        slot = (key.job_id, key.component, key.attempt, key.role)
        if row["cancel_requested"]:
            self._finish(key, CANCELED, reason=row["reason"] or "canceled")
            return
        running = _Running(key)
        with self._lock:
            self._running[slot] = running
            if self._stopping.is_set():
                running.cancel.set()
        log.info(
            "task_started",
            job_id=key.job_id,
            task_id=key.task_id,
            component=key.component,
            attempt=key.attempt,
            role=key.role,
            run=row["runs"],
        )
        component_type = spec.component_type
        if self.metrics is not None:
            self.metrics.tasks_started.labels(component_type).inc()
            self.metrics.tasks_running.inc()
        started = time.monotonic()
        state = "released"
        try:
            try:
                self._check_policy(spec, row.get("pipeline_yaml") or "")
                result = self.runtime.run_task(
                    spec,
                    cancel=running.cancel,
                    on_progress=lambda fraction: self._progress(running, fraction),
                    recv_timeout=self.recv_timeout,
                )
            finally:
                with running.report_lock:  # it ended: its final report says the rest
                    running.pending_progress = None
        except TaskCanceled:
            if self._stopping.is_set() and not self._cancel_requested(key):
                self._release(key)
            else:
                state = CANCELED
                self._finish(key, CANCELED, reason=self._reason(key) or "canceled")
        except TaskError as exc:
            state = FAILED
            self._finish(key, FAILED, reason=str(exc))
        except Exception as exc:
            lost = (
                "database"
                if _database_unreachable(exc)
                else "broker"
                if _broker_unreachable(exc)
                else None
            )
            if lost is not None and not running.cancel.is_set():
                # The party's database or broker went away mid-run (a restart, a failover):
                # not the component's failure, and (database) nothing can be recorded now. The
                # task stays claimed; its lease lapses and a runner claims it again, and it
                # resumes from its last checkpoint, re-sending what it had sent after it with
                # the same message ids (the receivers drop the copies).
                log.warning(
                    f"task_interrupted_by_{lost}",
                    job_id=key.job_id,
                    task_id=key.task_id,
                    component=key.component,
                    error=str(exc)[:300],
                )
                return
            # The component failed: the scheduler fails the job.
            log.warning(
                "task_failed",
                job_id=key.job_id,
                task_id=key.task_id,
                component=key.component,
                error=str(exc),
            )
            state = FAILED
            self._finish(key, FAILED, reason=f"{type(exc).__name__}: {exc}")
        else:
            state = SUCCESS
            self._finish(key, SUCCESS, outputs=result.outputs)
        finally:
            with self._lock:
                self._running.pop(slot, None)
            span.set_attribute("fedmq.task_state", state)
            if state == FAILED:
                span.set_status(Status(StatusCode.ERROR, "task failed"))
            if self.metrics is not None:
                self.metrics.tasks_running.dec()
                # A released task (graceful stop) is not ended: it resumes elsewhere.
                if state != "released":
                    self.metrics.tasks_ended.labels(component_type, state).inc()
                    self.metrics.task_duration.labels(component_type).observe(
                        time.monotonic() - started
                    )

    def _check_policy(self, spec: TaskSpec, pipeline_yaml: str) -> None:
        # The scheduler checked the job against the same policy before accepting it; this
        # is the last word, so a task.run that did not come through that check (another
        # scheduler version, a forged message, a policy tightened since) runs nothing.
        # The initiator is the pipeline's (task.run carries it); one that cannot be read
        # leaves it unknown, which initiator_may_set, where the policy sets it, and a param
        # naming code to import (allow_code) refuse.
        initiator: str | None = self.party_id
        if initiator_matters(self.policy, spec.component_type, spec.role, spec.params):
            try:
                initiator = Pipeline.from_yaml(pipeline_yaml).initiator
            except PipelineError:
                initiator = None
        problem = task_problem(
            self.policy,
            party_id=self.party_id,
            component=spec.component,
            component_type=spec.component_type,
            role=spec.role,
            params=spec.params,
            initiator=initiator,
            inputs=tuple(spec.inputs),
        )
        if problem is not None:
            log.warning(
                "task_refused_by_policy",
                job_id=spec.job_id,
                task_id=spec.key.task_id,
                reason=problem,
            )
            raise TaskError(problem)

    def _progress(self, running: _Running, fraction: float) -> None:
        # At most one report per interval, counted from the claim's report. A fraction held
        # back is not lost: the lease keeper sends the latest one once the interval is over
        # (a component that reports 1.0 and then works on still shows 1.0). A task that ends
        # first has it in its final report, which the scheduler records with progress 1.0;
        # sending 1.0 just before that cost a status message and a relay per task.
        with running.report_lock:
            if time.monotonic() - running.last_progress < self.progress_interval_s:
                running.pending_progress = fraction
                return
            running.pending_progress = None
            self._send_progress(running, fraction)

    def _send_pending_progress(self, running: _Running) -> None:
        """From the lease keeper: the fraction the interval held back, if it is over now."""
        with running.report_lock:
            fraction = running.pending_progress
            if fraction is None:
                return
            if time.monotonic() - running.last_progress < self.progress_interval_s:
                return
            running.pending_progress = None
            self._send_progress(running, fraction)

    def _send_progress(self, running: _Running, fraction: float) -> None:
        running.last_progress = time.monotonic()
        key = running.key
        try:
            with self.engine.begin() as conn:
                seq = conn.execute(
                    sa.select(tasks_table.c.status_seq).where(
                        _key_where(key.job_id, key.component, key.attempt, key.role)
                    )
                ).scalar_one()
                self._report_running(conn, key, seq, progress=fraction)
        except Exception as exc:  # progress is informative; the task goes on
            log.warning(
                "task_progress_report_failed",
                job_id=key.job_id,
                task_id=key.task_id,
                error=str(exc),
            )

    def _cancel_requested(self, key: TaskKey) -> bool:
        with self.engine.connect() as conn:
            return bool(
                conn.execute(
                    sa.select(tasks_table.c.cancel_requested).where(
                        _key_where(key.job_id, key.component, key.attempt, key.role)
                    )
                ).scalar_one_or_none()
            )

    def _reason(self, key: TaskKey) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(tasks_table.c.reason).where(
                    _key_where(key.job_id, key.component, key.attempt, key.role)
                )
            ).scalar_one_or_none()
        return None if value is None else str(value)

    def _release(self, key: TaskKey) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(tasks_table)
                .where(_key_where(key.job_id, key.component, key.attempt, key.role))
                .values(claimed_by=None, lease_until=None, updated_at=_now())
            )
        log.info(
            "task_released",
            job_id=key.job_id,
            task_id=key.task_id,
            component=key.component,
            role=key.role,
        )

    def _finish(
        self,
        key: TaskKey,
        state: str,
        *,
        reason: str | None = None,
        outputs: dict[str, str] | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(tasks_table)
                .where(_key_where(key.job_id, key.component, key.attempt, key.role))
                .values(
                    state=state,
                    reason=None if reason is None else reason[:MAX_REASON],
                    outputs=None if outputs is None else json.dumps(outputs),
                    progress=1.0 if state == SUCCESS else None,
                    claimed_by=None,
                    lease_until=None,
                    updated_at=_now(),
                )
            )
            # Published before the commit: a crash after it re-runs the task to the same
            # report (same id, dropped); a crash before it leaves the task to be resumed.
            # The metrics go first, on the same topic: once the scheduler sees the task end,
            # it has every value the task logged.
            if self.forwarder is not None:
                self.forwarder.send_all(conn, key)
            self.reporter.report(
                key,
                state,
                reason=reason,
                progress=1.0 if state == SUCCESS else None,
                outputs=outputs if state == SUCCESS else None,
            )
        # A failed task fails its job: an operator's look is needed (a canceled one was asked).
        (log.warning if state == FAILED else log.info)(
            "task_finished",
            job_id=key.job_id,
            task_id=key.task_id,
            component=key.component,
            attempt=key.attempt,
            role=key.role,
            state=state,
            reason=reason,
        )
        self._cleanup(key)

    def _cleanup(self, key: TaskKey) -> None:
        try:
            self.runtime.finish(key)
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(tasks_table)
                    .where(_key_where(key.job_id, key.component, key.attempt, key.role))
                    .values(cleaned=True)
                )
        except Exception as exc:  # retried at the next start-up
            log.warning(
                "task_cleanup_failed", job_id=key.job_id, task_id=key.task_id, error=str(exc)
            )

    def _cleanup_finished(self) -> None:
        """Finished tasks whose checkpoint/outbox/mailbox rows were not yet removed."""
        c = tasks_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.job_id, c.component, c.attempt, c.role).where(
                    c.state.in_(FINAL), c.cleaned.is_(False), c.role != ANY_ROLE
                )
            ).all()
        for job_id, component, attempt, role in rows:
            self._cleanup(TaskKey(job_id, component, attempt, self.party_id, role))

    # --- leases ------------------------------------------------------------------------------

    def _keep_leases(self) -> None:
        # Only the database here: a send on the bus blocks while the broker is away (it retries
        # until the broker is back), and a lease not renewed meanwhile expires -- another
        # runner thread then claims the task and runs it a second time beside the first (two
        # runs saving the same checkpoint: UniqueViolation). Bus sends are _forward_while_running's.
        interval = self.lease.total_seconds() / 3
        while not self._stopping.wait(interval):
            with self._lock:
                mine = list(self._running.values())
            if not mine:
                continue
            try:
                self._renew(mine)
            except Exception as exc:  # the next round tries again; the lease has slack
                log.warning("task_lease_renewal_failed", error=str(exc))

    def _forward_while_running(self) -> None:
        """The running tasks' held-back progress and new metrics, to the scheduler, every
        lease/3 (a thread of its own: a send may block while the broker is away)."""
        interval = self.lease.total_seconds() / 3
        while not self._stopping.wait(interval):
            with self._lock:
                mine = list(self._running.values())
            for running in mine:
                if running.pending_progress is not None and not running.cancel.is_set():
                    self._send_pending_progress(running)
                self._forward_metrics(running)

    def _forward_metrics(self, running: _Running) -> None:
        """What the task logged since the last round, to the scheduler (a user watching a
        running job sees its loss so far); the final report sends everything anyway."""
        if self.forwarder is None:
            return
        try:
            since = running.metrics_since
            running.metrics_since = self.forwarder.send_new(running.key, since)
            if running.metrics_since == since:
                # Nothing new: the heartbeat the audit watches (control.worker_silent).
                self.forwarder.beat(running.key)
        except Exception as exc:  # informative only: the next round or the final report sends
            log.warning(
                "task_metrics_send_failed",
                job_id=running.key.job_id,
                task_id=running.key.task_id,
                error=str(exc),
            )

    def _renew(self, mine: list[_Running]) -> None:
        c = tasks_table.c
        now = _now()
        with self.engine.begin() as conn:
            for running in mine:
                key = running.key
                where = _key_where(key.job_id, key.component, key.attempt, key.role)
                conn.execute(
                    sa.update(tasks_table)
                    .where(where, c.claimed_by == self.instance_id)
                    .values(lease_until=now + self.lease)
                )
                if conn.execute(sa.select(c.cancel_requested).where(where)).scalar_one_or_none():
                    running.cancel.set()


def task_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every task this party's workers know (operators and tests)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tasks_table).order_by(tasks_table.c.created_at)).all()
    return [dict(r._mapping) for r in rows]
