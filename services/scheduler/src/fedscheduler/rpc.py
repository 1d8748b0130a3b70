"""Local commands and read-models over the bus: request/reply on `svc.scheduler.rpc`.

The REST API and the CLI are fronts for these, never a back channel into the database. A
request is an envelope (fedschemas) whose payload is `scheduler.request` {op, args}; the reply
is an envelope with `scheduler.response` {op, ok, result | error, error_kind}. Ops and their
args (validated here, unknown args refused) and results (JSON-like) are in docs/scheduler.md:

    submit      {pipeline_yaml, job_id?}            -> job view
    status      {job_id}                            -> job view
    list_jobs   {state?, limit?}                    -> {data: [job view], count}
    list_tasks  {job_id, attempt?}                  -> {data: [task view], count}
    stop        {job_id, reason?}                   -> job view
    rerun       {job_id}                            -> job view
    grant_add   {table, grantee, component_types}   -> grant view
    grant_list  {table?, grantee?}                  -> {data: [grant view], count}
    logs        {job_id}                            -> {data: [event], count}
    metrics     {job_id, component?, party_id?}     -> {data: [metric], count, curves: [curve]}
    table_upload {name, csv_text, id_column?, label_column?, replace?, filename?} -> table view
    table_upload_begin  {name?, replace?}           -> {upload_id, max_part_bytes, ...}
    table_upload_part   {upload_id, seq, data}      -> {upload_id, seq, stored_bytes}
    table_upload_commit {upload_id, parts, sha256?, name, id_column?, label_column?,
                         replace?, filename?}       -> table view
    table_upload_abort  {upload_id}                 -> {upload_id, aborted}
    table_get   {name}                              -> table view
    table_list  {}                                  -> {data: [table view], count}

Each request runs in one database transaction; the messages a command causes (proposals,
task.run, job.stop...) are published inside it, as in the message handlers. `error_kind` is
invalid (400), not_found (404), conflict (409) or internal (500).

The data ops (table_*, metrics) work on the party's fedflow stores -- the TableStore the
workers read and the metrics they write -- which live in the party's database next to the
scheduler's tables (one database per party in the stack) and, for table files, in the
workers' tables directory (`PartyData`). They run outside the scheduler's transaction: they
change no scheduler row and send no message.

A command must fit in one bus frame: this server consumes with prefetch 1, and a chunked request
would hold its first chunk unacknowledged while the broker withholds the others -- no answer,
and every later command stuck behind it. So a table larger than a frame travels as an upload
session: `table_upload_begin` opens a staging directory `<tables dir>/.uploads/<upload_id>`,
each `table_upload_part` stores its text as `part-<seq>` (a part sent again with the same text
is a no-op, so a retry after a lost answer is harmless), and `table_upload_commit` joins parts
0..parts-1, checks the SHA-256, and parses and stores the table exactly as `table_upload` does.
Sessions idle for `PartyData.upload_ttl_s` are deleted at the next `table_upload_begin` and
when the server starts.

`fedcontrol.SchedulerClient` is the requesting side for Python callers (REST API, CLI, tests;
re-exported here); `fedcontrol.command_envelope` builds requests and replies alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from fedbus import Bus, Delivery, Subscription
from fedcommon.tracing import get_tracer, span_from_remote
from fedcontrol import (
    RPC_COMPONENT,
    SchedulerClient,
    SchedulerCommandFailed,
    SchedulerUnavailable,
    command_envelope,
)
from fedflow.descriptors import CATALOGUE
from fedflow.metrics import MetricsReader, curves_table, metrics_table
from fedflow.tables import TABLE_NAME_PATTERN, TableError, TableInfo, TableStore
from fedschemas import MalformedMessage, decode_envelope, decode_payload
from fedschemas.payloads import (
    NAME_PATTERN,
    SchedulerErrorKind,
    SchedulerRequest,
    SchedulerResponse,
)
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from fedscheduler import store
from fedscheduler.handlers import (
    CommandError,
    SchedulerContext,
    add_grant,
    rerun_job,
    stop_job,
    submit_job,
)
from fedscheduler.models import Job
from fedscheduler.queries import QUERIES, JobArgs, Query, job_view

_TRACER = get_tracer("fedscheduler.rpc")
log = structlog.get_logger("fedscheduler.rpc")

__all__ = [
    "OPS",
    "RPC_COMPONENT",
    "PartyData",
    "RpcServer",
    "SchedulerClient",
    "SchedulerCommandFailed",
    "SchedulerUnavailable",
    "execute",
    "new_job_id",
]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SubmitArgs(_Args):
    pipeline_yaml: str = Field(min_length=1)
    job_id: str | None = Field(default=None, pattern=NAME_PATTERN)


class StopArgs(_Args):
    job_id: str = Field(pattern=NAME_PATTERN)
    reason: str | None = Field(default=None, max_length=1000)


class GrantAddArgs(_Args):
    table: str = Field(min_length=1, max_length=256)
    grantee: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    component_types: list[str] = Field(min_length=1)

    @field_validator("component_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted({t for t in value if t != store.ANY_COMPONENT and t not in CATALOGUE})
        if unknown:
            raise ValueError(
                f"unknown component type(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(CATALOGUE))}, or * for any)"
            )
        return value


class MetricsArgs(_Args):
    job_id: str = Field(pattern=NAME_PATTERN)
    component: str | None = Field(default=None, pattern=NAME_PATTERN)
    party_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")


class TableUploadArgs(_Args):
    name: str = Field(pattern=TABLE_NAME_PATTERN)
    csv_text: str = Field(min_length=1)
    id_column: str = Field(default="id", min_length=1, max_length=256)
    label_column: str | None = Field(default=None, min_length=1, max_length=256)
    replace: bool = False
    filename: str | None = Field(default=None, max_length=256)
    """The uploaded file's name, used in error messages instead of a temporary path."""


UPLOAD_ID_PATTERN = r"^[0-9a-f]{32}$"
"""Upload ids name staging directories: hex only, so an id can never be a path."""
MAX_UPLOAD_BYTES = 256 << 20
"""Largest table text an upload session accepts (UTF-8 bytes), the REST API's limit too."""
MAX_UPLOAD_PARTS = 100_000


class TableUploadBeginArgs(_Args):
    name: str | None = Field(default=None, pattern=TABLE_NAME_PATTERN)
    """When given, a table of that name (and no `replace`) is refused before any part."""
    replace: bool = False


class TableUploadPartArgs(_Args):
    upload_id: str = Field(pattern=UPLOAD_ID_PATTERN)
    seq: int = Field(ge=0, lt=MAX_UPLOAD_PARTS)
    data: str = Field(min_length=1)


class TableUploadCommitArgs(_Args):
    upload_id: str = Field(pattern=UPLOAD_ID_PATTERN)
    parts: int = Field(ge=1, le=MAX_UPLOAD_PARTS)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """Of the whole text (UTF-8): checked before parsing when given."""
    name: str = Field(pattern=TABLE_NAME_PATTERN)
    id_column: str = Field(default="id", min_length=1, max_length=256)
    label_column: str | None = Field(default=None, min_length=1, max_length=256)
    replace: bool = False
    filename: str | None = Field(default=None, max_length=256)


class TableUploadIdArgs(_Args):
    upload_id: str = Field(pattern=UPLOAD_ID_PATTERN)


class TableArgs(_Args):
    name: str = Field(pattern=TABLE_NAME_PATTERN)


class NoArgs(_Args):
    pass


def new_job_id(now: datetime) -> str:
    """A fresh job id: UTC time (sorts by submission) and 32 random bits."""
    return f"{now:%Y%m%d%H%M%S}-{secrets.token_hex(4)}"


def _job(session: Session, ctx: SchedulerContext, job: Job) -> dict[str, Any]:
    return job_view(session, job, party_id=ctx.party_id)


def _query(query: Query) -> Op:
    """A read model as an op (queries need only this party's id, not the context)."""
    return lambda session, ctx, raw: query(session, ctx.party_id, raw)


def _submit(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = SubmitArgs.model_validate(raw)
    job_id = args.job_id or new_job_id(ctx.clock())
    return _job(session, ctx, submit_job(session, ctx, job_id, args.pipeline_yaml))


def _stop(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = StopArgs.model_validate(raw)
    return _job(session, ctx, stop_job(session, ctx, args.job_id, args.reason))


def _rerun(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = JobArgs.model_validate(raw)
    return _job(session, ctx, rerun_job(session, ctx, args.job_id))


def _grant_add(session: Session, ctx: SchedulerContext, raw: dict[str, JsonValue]) -> JsonValue:
    args = GrantAddArgs.model_validate(raw)
    return add_grant(session, ctx, args.table, args.grantee, args.component_types)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


Op = Callable[[Session, SchedulerContext, dict[str, JsonValue]], JsonValue]

OPS: dict[str, Op] = {
    "submit": _submit,
    "stop": _stop,
    "rerun": _rerun,
    "grant_add": _grant_add,
    **{name: _query(query) for name, query in QUERIES.items()},
}


# --- the party's data: tables and metrics (fedflow's stores) ---------------------------------


def default_tables_dir(database_url: str, party_id: str) -> Path:
    """Where the party's workers keep table files by default: the same rule as
    fedworker's `WorkerSettings.tables_dir` ("<db>-tables" next to a SQLite file, else
    .fedmq/worker-<party>-tables), so an upload lands where the workers read."""
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and len(database_url) > len(prefix):
        database = Path(database_url[len(prefix) :])
        return database.with_name(database.stem + "-tables")
    return Path(".fedmq") / f"worker-{party_id}-tables"


@dataclass
class PartyData:
    """The party's fedflow stores, opened on first use (nothing is created before a data op)."""

    engine: Engine
    tables_dir: Path
    upload_ttl_s: float = 3600.0
    """An upload session without a part for this long is abandoned: its staging is deleted."""
    _tables: TableStore | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def for_engine(cls, engine: Engine, party_id: str) -> PartyData:
        url = engine.url.render_as_string(hide_password=False)
        return cls(engine=engine, tables_dir=default_tables_dir(url, party_id))

    @property
    def tables(self) -> TableStore:
        with self._lock:
            if self._tables is None:
                self._tables = TableStore(self.engine, self.tables_dir)
            return self._tables

    @property
    def uploads_dir(self) -> Path:
        # Inside the tables directory (same volume, so staging costs no copy across disks);
        # the store only reads `<name>.npz` files, never this directory.
        return self.tables_dir / ".uploads"

    def has_metrics(self) -> bool:
        inspector = sa.inspect(self.engine)
        return inspector.has_table(metrics_table.name) and inspector.has_table(curves_table.name)


def _number(value: float) -> float | None:
    # JSON has no NaN: an undefined metric (e.g. AUC of one class) is null.
    return value if math.isfinite(value) else None


def table_view(info: TableInfo, reads: int) -> dict[str, Any]:
    return {
        "name": info.name,
        "rows": info.rows,
        "features": info.features,
        "feature_names": list(info.feature_names),
        "id_column": info.id_column,
        "label_column": info.label_column,
        "missing_values": info.missing_values,
        "missing_by_column": dict(info.missing_by_column),
        "sha256": info.sha256,
        "uploaded_at": _time(info.uploaded_at),
        "reads": reads,
    }


def _store_table(
    tables: TableStore,
    path: Path,
    *,
    name: str,
    id_column: str,
    label_column: str | None,
    replace: bool,
    shown: str,
) -> TableInfo:
    """Parse the CSV at `path` and store it as `name`; bad rows become one `invalid` refusal."""
    try:
        info = tables.upload(
            name, path, id_column=id_column, label_column=label_column, replace=replace
        )
    except TableError as exc:
        # The messages name the file by its path: show the user's file name instead.
        raise CommandError("invalid", str(exc).replace(str(path), shown)) from exc
    log.info("table_uploaded", table=info.name, rows=info.rows, features=info.features)
    return info


def _refuse_existing(tables: TableStore, name: str, replace: bool) -> None:
    if not replace and tables.get(name) is not None:
        raise CommandError("conflict", f"table {name} exists (upload with replace to overwrite it)")


def _table_upload(data: PartyData, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableUploadArgs.model_validate(raw)
    tables = data.tables
    _refuse_existing(tables, args.name, args.replace)
    with tempfile.TemporaryDirectory(prefix="upload-", dir=tables.data_dir) as tmp:
        path = Path(tmp) / "upload.csv"
        path.write_text(args.csv_text, encoding="utf-8")
        info = _store_table(
            tables,
            path,
            name=args.name,
            id_column=args.id_column,
            label_column=args.label_column,
            replace=args.replace,
            shown=args.filename or f"{args.name}.csv",
        )
    return table_view(info, tables.reads(info.name))


# --- upload sessions: tables larger than one bus frame ---------------------------------------

_COMMITTED = "committed.json"


def sweep_uploads(data: PartyData, now: float | None = None) -> int:
    """Delete upload sessions idle for longer than `data.upload_ttl_s`; how many went.

    A session's idle time is its directory's mtime: storing a part (a rename into it) moves it.
    """
    root = data.uploads_dir
    if not root.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - data.upload_ttl_s
    swept = 0
    for session in root.iterdir():
        try:
            idle = session.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if idle:
            shutil.rmtree(session, ignore_errors=True)
            swept += 1
            log.info("table_upload_abandoned", upload_id=session.name)
    return swept


def _session(data: PartyData, upload_id: str) -> Path:
    path = data.uploads_dir / upload_id
    if not path.is_dir():
        raise CommandError(
            "not_found",
            f"no upload {upload_id} (committed and expired, aborted, failed, or idle for "
            f"over {data.upload_ttl_s:g} s): upload the file again",
        )
    return path


def _part_path(session: Path, seq: int) -> Path:
    return session / f"part-{seq:06d}"


def _table_upload_begin(data: PartyData, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableUploadBeginArgs.model_validate(raw)
    sweep_uploads(data)
    if args.name is not None:
        _refuse_existing(data.tables, args.name, args.replace)
    upload_id = secrets.token_hex(16)
    (data.uploads_dir / upload_id).mkdir(parents=True)
    log.info("table_upload_begun", upload_id=upload_id, table=args.name)
    return {
        "upload_id": upload_id,
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "idle_timeout_s": data.upload_ttl_s,
    }


def _table_upload_part(data: PartyData, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableUploadPartArgs.model_validate(raw)
    session = _session(data, args.upload_id)
    if (session / _COMMITTED).exists():
        raise CommandError("conflict", f"upload {args.upload_id} is committed already")
    content = args.data.encode("utf-8")
    target = _part_path(session, args.seq)
    others = sum(p.stat().st_size for p in session.glob("part-*") if p != target)
    if target.exists():
        if target.read_bytes() != content:
            raise CommandError(
                "conflict",
                f"part {args.seq} of upload {args.upload_id} was sent before with other text",
            )
        os.utime(session)  # a retry is activity too
        return {"upload_id": args.upload_id, "seq": args.seq, "stored_bytes": others + len(content)}
    if others + len(content) > MAX_UPLOAD_BYTES:
        raise CommandError(
            "invalid",
            f"upload {args.upload_id} is larger than {MAX_UPLOAD_BYTES >> 20} MiB",
        )
    # Write then rename: a crash mid-write must not leave half a part under the part's name,
    # or the sender's retry of it would compare unequal and be refused.
    partial = session / f".{target.name}.partial"
    partial.write_bytes(content)
    os.replace(partial, target)
    return {"upload_id": args.upload_id, "seq": args.seq, "stored_bytes": others + len(content)}


def _refuse_missing_parts(session: Path, count: int, upload_id: str) -> None:
    missing = [seq for seq in range(count) if not _part_path(session, seq).exists()]
    if missing:
        shown = ", ".join(str(seq) for seq in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise CommandError(
            "invalid", f"upload {upload_id}: part(s) {shown}{more} of {count} never arrived"
        )


def _join_parts(session: Path, count: int, upload_id: str) -> tuple[Path, str]:
    """Parts 0..count-1 concatenated into one file (each part deleted once copied, so the
    staging never holds the table twice); the file and the SHA-256 of its bytes."""
    expected = [_part_path(session, seq) for seq in range(count)]
    extra = sorted({p.name for p in session.glob("part-*")} - {p.name for p in expected})
    if extra:
        raise CommandError(
            "invalid", f"upload {upload_id} has parts beyond the {count} committed: {extra[0]}"
        )
    joined = session / "upload.csv"
    digest = hashlib.sha256()
    with joined.open("wb") as out:
        for part in expected:
            content = part.read_bytes()
            digest.update(content)
            out.write(content)
            part.unlink()
    return joined, digest.hexdigest()


def _table_upload_commit(data: PartyData, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableUploadCommitArgs.model_validate(raw)
    tables = data.tables
    session = _session(data, args.upload_id)
    committed = session / _COMMITTED
    if committed.exists():
        # A commit sent again after its answer was lost: answer it again, do not re-parse.
        done = json.loads(committed.read_text())
        info = tables.get(args.name)
        if done.get("name") != args.name or info is None or info.sha256 != done.get("sha256"):
            raise CommandError(
                "conflict", f"upload {args.upload_id} was committed as table {done.get('name')}"
            )
        return table_view(info, tables.reads(info.name))
    # Missing parts keep the session: the sender can still send them and commit again.
    _refuse_missing_parts(session, args.parts, args.upload_id)
    try:
        _refuse_existing(tables, args.name, args.replace)
        path, digest = _join_parts(session, args.parts, args.upload_id)
        if args.sha256 is not None and digest != args.sha256:
            raise CommandError(
                "invalid",
                f"upload {args.upload_id}: the parts do not add up to the text sent "
                "(SHA-256 differs): upload the file again",
            )
        info = _store_table(
            tables,
            path,
            name=args.name,
            id_column=args.id_column,
            label_column=args.label_column,
            replace=args.replace,
            shown=args.filename or f"{args.name}.csv",
        )
    except BaseException:
        # The parts are spent (joined, or the upload cannot become this table): drop it all.
        shutil.rmtree(session, ignore_errors=True)
        raise
    path.unlink()
    committed.write_text(json.dumps({"name": info.name, "sha256": info.sha256}))
    log.info("table_upload_committed", upload_id=args.upload_id, table=info.name, parts=args.parts)
    return table_view(info, tables.reads(info.name))


def _table_upload_abort(data: PartyData, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableUploadIdArgs.model_validate(raw)
    session = data.uploads_dir / args.upload_id
    existed = session.is_dir()
    shutil.rmtree(session, ignore_errors=True)
    if existed:
        log.info("table_upload_aborted", upload_id=args.upload_id)
    return {"upload_id": args.upload_id, "aborted": existed}


def _table_get(data: PartyData, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableArgs.model_validate(raw)
    info = data.tables.get(args.name)
    if info is None:
        raise CommandError("not_found", f"no table {args.name} at this party")
    return table_view(info, data.tables.reads(info.name))


def _table_list(data: PartyData, raw: dict[str, JsonValue]) -> JsonValue:
    NoArgs.model_validate(raw)
    tables = data.tables
    rows: list[JsonValue] = [table_view(info, tables.reads(info.name)) for info in tables.list()]
    return {"data": rows, "count": len(rows)}


DataOp = Callable[[PartyData, dict[str, JsonValue]], JsonValue]

DATA_OPS: dict[str, DataOp] = {
    "table_upload": _table_upload,
    "table_upload_begin": _table_upload_begin,
    "table_upload_part": _table_upload_part,
    "table_upload_commit": _table_upload_commit,
    "table_upload_abort": _table_upload_abort,
    "table_get": _table_get,
    "table_list": _table_list,
}


def _metrics(
    sessions: sessionmaker[Session], data: PartyData, raw: dict[str, JsonValue]
) -> JsonValue:
    args = MetricsArgs.model_validate(raw)
    with sessions() as session:
        if store.get_job(session, args.job_id) is None:
            raise CommandError("not_found", f"no job {args.job_id}")
    if not data.has_metrics():  # no worker has written to this database yet
        return {"data": [], "count": 0, "curves": []}
    reader = MetricsReader(data.engine)
    metrics: list[JsonValue] = [
        {
            "component": m.component,
            "party_id": m.party_id,
            "name": m.name,
            "step": m.step,
            "value": _number(m.value),
        }
        for m in reader.metrics(args.job_id, args.component, args.party_id)
    ]
    curves: list[JsonValue] = [
        {
            "component": c.component,
            "party_id": c.party_id,
            "name": c.name,
            "x_label": c.x_label,
            "y_label": c.y_label,
            "x": [_number(v) for v in c.x],
            "y": [_number(v) for v in c.y],
        }
        for c in reader.curves(args.job_id, args.component, args.party_id)
    ]
    return {"data": metrics, "count": len(metrics), "curves": curves}


def _bad_arguments(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
    )
    return f"bad arguments: {problems}"


def execute(
    sessions: sessionmaker[Session],
    ctx: SchedulerContext,
    request: SchedulerRequest,
    data: PartyData | None = None,
) -> SchedulerResponse:
    """Run one command (scheduler ops in one transaction); every failure becomes a response,
    never a raise."""
    try:
        if request.op in OPS:
            with sessions.begin() as session:
                result = OPS[request.op](session, ctx, dict(request.args))
        else:
            if data is None:
                raise CommandError("invalid", f"{request.op}: this scheduler serves no party data")
            if request.op == "metrics":
                result = _metrics(sessions, data, dict(request.args))
            else:
                result = DATA_OPS[request.op](data, dict(request.args))
    except CommandError as exc:
        outcome: SchedulerErrorKind = exc.kind
        response = SchedulerResponse(op=request.op, ok=False, error=exc.message, error_kind=outcome)
    except ValidationError as exc:
        response = SchedulerResponse(
            op=request.op, ok=False, error=_bad_arguments(exc), error_kind="invalid"
        )
    except Exception as exc:
        log.exception("rpc_failed", op=request.op)
        response = SchedulerResponse(
            op=request.op,
            ok=False,
            error=f"internal error ({type(exc).__name__})",
            error_kind="internal",
        )
    else:
        response = SchedulerResponse(op=request.op, ok=True, result=result)
    ctx.metrics.rpc_requests.labels(request.op, response.error_kind or "ok").inc()
    return response


class RpcServer:
    """Answers scheduler.request envelopes on `topic` (one thread, in arrival order).

    `data` serves the table and metrics ops; by default the fedflow stores in the scheduler's
    own database, with table files where the party's workers keep them (`default_tables_dir`).
    """

    def __init__(
        self,
        bus: Bus,
        topic: str,
        sessions: sessionmaker[Session],
        ctx: SchedulerContext,
        *,
        data: PartyData | None = None,
    ) -> None:
        self._bus = bus
        self._topic = topic
        self._sessions = sessions
        self._ctx = ctx
        engine = sessions.kw.get("bind")
        if data is None and isinstance(engine, Engine):
            data = PartyData.for_engine(engine, ctx.party_id)
        self._data = data
        self._subscription: Subscription | None = None

    def start(self) -> None:
        if self._data is not None:
            sweep_uploads(self._data)  # sessions a previous run left behind
        self._bus.declare(self._topic)
        # One delivery only: a request is answered once; a crash mid-request leaves the
        # requester to time out and retry (commands are idempotent by job id).
        self._subscription = self._bus.subscribe(
            self._topic, self._handle, prefetch=1, max_deliveries=1
        )
        log.info("rpc_started", topic=self._topic)

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    def _handle(self, delivery: Delivery) -> None:
        if delivery.reply_to is None:
            log.warning("rpc_without_reply_to", message_id=delivery.message_id)
            return
        try:
            envelope = decode_envelope(delivery.body)
            request = decode_payload(envelope, SchedulerRequest)
        except MalformedMessage as exc:
            log.warning("rpc_malformed", reason=exc.reason)
            return  # nothing to answer to; the requester times out
        # The command's span is a child of the caller's (the REST call): everything the command
        # sends -- proposals to other parties, task.run to workers -- carries this trace on.
        with span_from_remote(
            _TRACER, f"rpc {request.op}", envelope.traceparent, kind=SpanKind.SERVER
        ) as span:
            span.set_attribute("rpc.system", "fedmq")
            span.set_attribute("rpc.method", request.op)
            job_id = request.args.get("job_id")
            if isinstance(job_id, str):
                span.set_attribute("fedmq.job_id", job_id)
            if envelope.source.party_id != self._ctx.party_id:
                response = SchedulerResponse(
                    op=request.op,
                    ok=False,
                    error=f"commands come from this party ({self._ctx.party_id}) only",
                    error_kind="invalid",
                )
            else:
                response = execute(self._sessions, self._ctx, request, self._data)
            if isinstance(response.result, dict) and isinstance(response.result.get("job_id"), str):
                span.set_attribute("fedmq.job_id", response.result["job_id"])
            if response.error_kind:
                span.set_attribute("fedmq.error_kind", response.error_kind)
            body = command_envelope(response, self._ctx.party_id, request.op)
        if len(body) > self._bus.capabilities.max_frame_bytes:
            # Replies cannot be chunked (direct reply-to): say so instead of never answering.
            log.warning("rpc_reply_too_large", op=request.op, size=len(body))
            response = SchedulerResponse(
                op=request.op,
                ok=False,
                error=f"the answer is too large ({len(body)} bytes): ask for less",
                error_kind="invalid",
            )
            body = command_envelope(response, self._ctx.party_id, request.op)
        self._bus.reply(delivery, body)
