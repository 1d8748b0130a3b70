"""Standalone mode: every party of a pipeline in one process.

`run_pipeline(pipeline, tables_by_party, workdir)` gives each party its own in-memory broker
and SQLite database (`<workdir>/party-<id>.db`, tables under `<workdir>/party-<id>/tables`),
links the brokers with a LocalRelay (which signs, verifies and records every crossing), uploads
each party's tables into its own TableStore, and runs every party's tasks in DAG order, one
thread per (party, role), with the same PartyRuntime, components and Federation as the worker
service. If a task fails, the others are canceled and `StandaloneError` names the failed task.

`tables_by_party` maps a party id to a folder of CSV files (table name = file name without
.csv) or to a {table name: CSV path} mapping. Only the tables the party's readers name are
uploaded. A CSV whose header has `label_column` ("y" by default) gets it as its label column.

`policies` maps a party id to its security policy (fedflow.policy); when given, every party
checks its part of the pipeline against its own (the secure defaults where none is given)
before any task runs, as its scheduler would, and `PolicyRefused` names each rule broken.
None checks no policy (tests and benchmarks that run short keys for speed).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from fedbus import Bus, connect
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher
from fedbus.sql_inbox import SqlInbox, make_engine
from fedcrypto.signing import SigningKey
from fedschemas import PartyRef

from fedflow.bus_federation import INBOUND_TOPIC, FederationEndpoint
from fedflow.context import RuntimeOptions
from fedflow.federation import TaskCanceled
from fedflow.local_relay import Crossing, CrossingLog, LocalRelay
from fedflow.metrics import Curve, Metric, MetricsReader
from fedflow.pipeline import Pipeline
from fedflow.policy import SecurityPolicy, pipeline_problem
from fedflow.runner import PartyRuntime, TaskResult
from fedflow.tables import CSV_ENCODING, Table, TableError, TableStore
from fedflow.task import TaskSpec

log = structlog.get_logger("fedflow.standalone")

TableSource = Path | Mapping[str, Path]
ProgressEvent = Callable[[str, str, str, str, float], None]
"""on_event(state, party_id, role, component, progress): state is running/progress/success/
failed/canceled."""


Watcher = Callable[["LocalWorld", str, threading.Event], AbstractContextManager[object]]
"""run_pipeline's `watch`: (world, job id, abort event) -> a context around the job."""


class StandaloneError(RuntimeError):
    """A standalone run failed; the message names the party, role and component."""


@dataclass(frozen=True)
class TaskRecord:
    party_id: str
    role: str
    component: str
    state: str
    outputs: dict[str, str]
    seconds: float
    error: str | None = None


@dataclass
class StandaloneResult:
    job_id: str
    pipeline: str
    workdir: Path
    seconds: float
    tasks: list[TaskRecord]
    metrics: list[Metric]
    curves: list[Curve]
    crossings: list[Crossing]
    _engines: dict[str, str] = field(default_factory=dict, repr=False)

    def metric(self, component: str, name: str, party_id: str | None = None) -> float:
        found = [
            m.value
            for m in self.metrics
            if m.component == component
            and m.name == name
            and m.step == -1
            and (party_id is None or m.party_id == party_id)
        ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} values of metric {name!r} of {component}")
        return found[0]

    def curve(self, component: str, name: str, party_id: str | None = None) -> Curve:
        for c in self.curves:
            wanted = party_id is None or c.party_id == party_id
            if c.component == component and c.name == name and wanted:
                return c
        raise KeyError(f"no curve {name!r} of {component}")

    def output(self, party_id: str, role: str, component: str, name: str = "data") -> Table:
        """An output table of a task, read back from the party's database."""
        from fedflow.artifacts import ArtifactStore

        engine = make_engine(self._engines[party_id])
        try:
            return ArtifactStore(engine).get(self.job_id, party_id, role, f"{component}.{name}")
        finally:
            engine.dispose()


def _csv_files(source: TableSource) -> dict[str, Path]:
    if isinstance(source, Mapping):
        return {name: Path(path) for name, path in source.items()}
    folder = Path(source)
    if not folder.is_dir():
        raise TableError(f"{folder} is not a folder of CSV tables")
    return {path.stem: path for path in sorted(folder.glob("*.csv"))}


def _header(path: Path) -> list[str]:
    # Only whether the label column is there: a file that is not UTF-8 is refused, with its
    # reason, by the upload that follows.
    with path.open(newline="", encoding=CSV_ENCODING, errors="replace") as handle:
        return [name.strip() for name in next(csv.reader(handle), [])]


class PartyWorld:
    """One party in standalone mode: broker, database, consumer, runtime."""

    def __init__(
        self, party_id: str, bus: Bus, workdir: Path, options: RuntimeOptions | None = None
    ) -> None:
        self.party_id = party_id
        self.bus = bus
        database = workdir / f"party-{party_id}.db"
        for stale in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            stale.unlink(missing_ok=True)
        self.database_url = f"sqlite:///{database}"
        self.engine = make_engine(self.database_url)
        publisher = EnvelopePublisher(bus, PartyRef(party_id=party_id, role="guest"))
        self.endpoint = FederationEndpoint(party_id, bus, self.engine, publisher=publisher)
        self.tables = TableStore(self.engine, workdir / f"party-{party_id}" / "tables")
        self.runtime = PartyRuntime(self.endpoint, self.tables, options=options)
        self.consumer = EnvelopeConsumer(
            bus,
            INBOUND_TOPIC,
            self.endpoint.handlers(),
            self.endpoint.answering(SqlInbox(self.engine)),
        )

    def close(self) -> None:
        self.consumer.stop()
        self.engine.dispose()

    def task(
        self,
        job_id: str,
        component: str,
        component_type: str,
        role: str,
        parties: Mapping[str, list[str]],
        *,
        params: Mapping[str, object] | None = None,
        inputs: Mapping[str, str] | None = None,
        attempt: int = 0,
    ) -> TaskSpec:
        """A TaskSpec for this party (tests and tools)."""
        return TaskSpec(
            job_id=job_id,
            component=component,
            component_type=component_type,
            attempt=attempt,
            role=role,
            party_id=self.party_id,
            parties=parties,
            params=dict(params or {}),
            inputs=dict(inputs or {}),
        )


class LocalWorld:
    """Several parties in this process: a broker and SQLite file each, linked by a LocalRelay.

    A context manager: entering starts every party's `svc.worker` consumer and the relay;
    leaving stops them and closes the brokers (the databases stay in `workdir`).
    """

    def __init__(
        self, party_ids: list[str], workdir: Path, options: RuntimeOptions | None = None
    ) -> None:
        """`options`: every party's runtime options (threads, priorities); None: defaults."""
        workdir.mkdir(parents=True, exist_ok=True)
        run = uuid.uuid4().hex[:8]
        self.crossings = CrossingLog()
        self.buses: dict[str, Bus] = {}
        self.parties: dict[str, PartyWorld] = {}
        try:
            for party_id in party_ids:
                # A fresh broker name per run keeps two runs in one process apart.
                self.buses[party_id] = connect(f"memory://standalone-{run}-{party_id}")
                self.parties[party_id] = PartyWorld(
                    party_id, self.buses[party_id], workdir, options
                )
        except BaseException:
            self.close()
            raise
        keys = {p: SigningKey.generate() for p in self.buses}
        self.relay = LocalRelay(self.buses, keys, self.crossings)

    def __enter__(self) -> LocalWorld:
        for world in self.parties.values():
            world.consumer.start()
        self.relay.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if hasattr(self, "relay"):
            self.relay.stop()
        for world in self.parties.values():
            world.close()
        for bus in self.buses.values():
            bus.close()


def run_pipeline(
    pipeline: Pipeline,
    tables_by_party: Mapping[str, TableSource],
    workdir: Path,
    *,
    job_id: str | None = None,
    label_column: str | None = "y",
    id_column: str = "id",
    recv_timeout: float | None = 600.0,
    on_event: ProgressEvent | None = None,
    options: RuntimeOptions | None = None,
    policies: Mapping[str, SecurityPolicy] | None = None,
    watch: Watcher | None = None,
) -> StandaloneResult:
    """Run `pipeline` with every party in this process; raises StandaloneError on failure.
    `options`: the threads and priorities every party lets components use (ctx.runtime).
    `policies`: each party's security policy, checked before anything runs (None: none).
    `id_column`: the CSV column of the row ids (every table); `label_column`: the label's,
    where a table has it. `watch(world, job_id, abort)`: a context entered once the parties'
    brokers run and before any table is read, left after the last task (the audit's standalone
    mode, fedaudit.standalone); setting `abort` stops the job as a failed task does."""
    if policies is not None:
        check_policies(pipeline, policies)
    started = time.perf_counter()
    workdir = Path(workdir)
    job_id = job_id or f"standalone-{uuid.uuid4().hex[:12]}"
    metrics: list[Metric] = []
    curves: list[Curve] = []
    abort = threading.Event()
    with (
        contextlib.ExitStack() as watching,
        LocalWorld(pipeline.party_ids(), workdir, options) as world,
    ):
        if watch is not None:
            watching.enter_context(watch(world, job_id, abort))
        _upload_tables(pipeline, tables_by_party, world.parties, label_column, id_column)
        records = _run_tasks(pipeline, job_id, world.parties, recv_timeout, on_event, abort)
        watching.close()  # the watcher sees the whole job before the brokers close
        for party in world.parties.values():
            reader = MetricsReader(party.engine)
            metrics += reader.metrics(job_id, party_id=party.party_id)
            curves += reader.curves(job_id, party_id=party.party_id)
        engines = {p: w.database_url for p, w in world.parties.items()}
    failed = [r for r in records if r.state == "failed"]
    if failed:
        first = failed[0]
        raise StandaloneError(
            f"{first.component} failed at party {first.party_id} ({first.role}): {first.error}"
        )
    return StandaloneResult(
        job_id=job_id,
        pipeline=pipeline.name,
        workdir=workdir,
        seconds=time.perf_counter() - started,
        tasks=records,
        metrics=metrics,
        curves=curves,
        crossings=world.crossings.snapshot(),
        _engines=engines,
    )


class PolicyRefused(StandaloneError):
    """A party's policy refuses its part of the pipeline; nothing ran."""


def check_policies(pipeline: Pipeline, policies: Mapping[str, SecurityPolicy]) -> None:
    """Every party's part of `pipeline` against its own policy (the defaults where `policies`
    has none); PolicyRefused naming each party that refuses and every rule it applies."""
    refusals = [
        f"party {party_id} refused the job: {problem}"
        for party_id in pipeline.party_ids()
        if (
            problem := pipeline_problem(
                policies.get(party_id, SecurityPolicy()), pipeline, party_id
            )
        )
    ]
    if refusals:
        raise PolicyRefused("; ".join(refusals))


def _upload_tables(
    pipeline: Pipeline,
    tables_by_party: Mapping[str, TableSource],
    worlds: Mapping[str, PartyWorld],
    label_column: str | None,
    id_column: str = "id",
) -> None:
    for party_id, world in worlds.items():
        uses = pipeline.tables_read_by(party_id)
        if not uses:
            continue
        if party_id not in tables_by_party:
            raise TableError(f"no data given for party {party_id} (it reads {uses[0].table})")
        files = _csv_files(tables_by_party[party_id])
        for use in uses:
            if world.tables.get(use.table) is not None:
                continue
            path = files.get(use.table)
            if path is None:
                known = ", ".join(sorted(files)) or "none"
                raise TableError(f"party {party_id} has no table {use.table!r} (tables: {known})")
            label = label_column if label_column in _header(path) else None
            world.tables.upload(use.table, path, id_column=id_column, label_column=label)


def _run_tasks(
    pipeline: Pipeline,
    job_id: str,
    worlds: Mapping[str, PartyWorld],
    recv_timeout: float | None,
    on_event: ProgressEvent | None,
    abort: threading.Event,
) -> list[TaskRecord]:
    records: list[TaskRecord] = []
    lock = threading.Lock()
    parties = pipeline.parties.by_role()

    def emit(state: str, party: str, role: str, component: str, progress: float) -> None:
        if on_event is not None:
            on_event(state, party, role, component, progress)

    def run_party_role(party_id: str, role: str) -> None:
        world = worlds[party_id]
        for spec, task_role in pipeline.tasks_for(party_id):
            if task_role != role:
                continue
            task = TaskSpec(
                job_id=job_id,
                component=spec.name,
                component_type=spec.type,
                attempt=0,
                role=role,
                party_id=party_id,
                parties=parties,
                params=spec.params_for(role, party_id),
                inputs=spec.inputs_as_strings(),
            )
            began = time.perf_counter()
            emit("running", party_id, role, spec.name, 0.0)
            state, error, result = "success", None, TaskResult({})
            try:
                if abort.is_set():
                    raise TaskCanceled("another task failed")
                result = world.runtime.run_task(
                    task,
                    cancel=abort,
                    recv_timeout=recv_timeout,
                    on_progress=functools.partial(emit, "progress", party_id, role, spec.name),
                )
            except TaskCanceled as exc:
                state, error = "canceled", str(exc)
            except Exception as exc:  # reported in the record; the other parties are stopped
                state, error = "failed", f"{type(exc).__name__}: {exc}"
                log.warning("task_failed", party_id=party_id, component=spec.name, error=error)
                abort.set()
            world.runtime.finish(task.key)
            record = TaskRecord(
                party_id,
                role,
                spec.name,
                state,
                dict(result.outputs),
                time.perf_counter() - began,
                error,
            )
            with lock:
                records.append(record)
            emit(state, party_id, role, spec.name, 1.0)
            if state != "success":
                return

    threads = [
        threading.Thread(
            target=run_party_role, args=(party_id, role), name=f"standalone-{party_id}-{role}"
        )
        for party_id in worlds
        for role in pipeline.roles_of(party_id)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records
