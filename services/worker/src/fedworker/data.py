"""The party's data service: its tables, served by its workers on `svc.data.rpc`.

The workers read the party's tables (fedflow's TableStore: arrays under `tables_dir`, the
catalogue and read counts in SQL); so they are also the ones that write them. The REST API's
table routes are commands to this service (fedcontrol.DataClient): a `data.request` envelope
{op, args} answered on its reply address with `data.response` {op, ok, result | error,
error_kind}. Ops and their args (validated here, unknown args refused):

    table_upload {name, csv_text, id_column?, label_column?, replace?, filename?} -> table view
    table_upload_begin  {name?, replace?}           -> {upload_id, max_upload_bytes, ...}
    table_upload_part   {upload_id, seq, data}      -> {upload_id, seq, stored_bytes}
    table_upload_commit {upload_id, parts, sha256?, name, id_column?, label_column?,
                         replace?, filename?}       -> table view
    table_upload_abort  {upload_id}                 -> {upload_id, aborted}
    table_upload_status {upload_id}                 -> {upload_id, state, bytes_done?,
                         bytes_total?, table? (committed), error?, error_kind? (failed)}
    table_get   {name}                              -> table view
    table_list  {}                                  -> {data: [table view], count}

`error_kind` is invalid (400), not_found (404), conflict (409) or internal (500).

A command must fit in one bus frame: each replica consumes with prefetch 1, and a chunked
request would hold its first chunk unacknowledged while the broker withholds the others. So a
table larger than a frame travels as an upload session: `table_upload_begin` opens a staging
directory `<tables dir>/.uploads/<upload_id>`, each `table_upload_part` stores its text as
`part-<seq>` (a part sent again with the same text is a no-op, so a retry after a lost answer
is harmless), and `table_upload_commit` joins parts 0..parts-1, checks the SHA-256, and parses
and stores the table exactly as `table_upload` does. Sessions idle for `upload_ttl_s` are
deleted at the next `table_upload_begin` and when the service starts.

Several replicas: every worker of the party consumes the one topic, so any replica answers any
command, including the parts of one upload. This relies on what the task runner already needs
(a worker reads tables that another replica stored): the replicas share the party's database
and its tables directory (one volume). Staging lives in that directory, so a part stored by one
replica is seen by the next; a part is written then renamed, so none is ever seen half
written. A commit holds a lock file in its session (created exclusively), so a commit sent
again while another replica still parses it is refused (409) instead of parsing twice.

Off the command path: a commit with `background: true` (what fedcontrol's TableUpload sends)
is answered at once ({upload_id, state: "parsing"}) and parsed on the replica's one parser
thread; the sender polls `table_upload_status` (any replica answers it from the session's
`status.json`: parsing with bytes done of total, then committed with the table, or failed with
the refusal). So a large upload never holds this service's queue: `table_get`, `table_list` and
other uploads' parts are answered while it parses. The parse itself is a stream
(fedflow.csv_import: memory bounded whatever the file's size). Only a one-shot `table_upload`
(one part, at most 4 MiB) is still parsed on the command path.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog
from fedbus import Bus
from fedbus.runtime import EnvelopePublisher
from fedcommon.tracing import get_tracer
from fedcontrol.server import CommandServer
from fedflow.tables import TABLE_NAME_PATTERN, TableError, TableInfo, TableStore
from fedschemas import PartyRef, new_envelope
from fedschemas.payloads import DataRequest, DataResponse, SchedulerErrorKind, TableProfile
from opentelemetry.trace import Span
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

if TYPE_CHECKING:
    from fedworker.metrics import WorkerMetrics

log = structlog.get_logger("fedworker.data")
_TRACER = get_tracer("fedworker.data")

UPLOAD_ID_PATTERN: Final = r"^[0-9a-f]{32}$"
"""Upload ids name staging directories: hex only, so an id can never be a path."""
MAX_UPLOAD_BYTES: Final = 256 << 20
"""Largest table text an upload session accepts (UTF-8 bytes), the REST API's limit too."""
MAX_UPLOAD_PARTS: Final = 100_000
_COMMITTED: Final = "committed.json"
_COMMITTING: Final = "committing.lock"
_STATUS: Final = "status.json"
PROFILE_COMPONENT: Final = "data.tables"
"""The envelope `component` of control.table_profile."""


class DataCommandError(Exception):
    """A refusal the requester can act on; `kind` maps to an HTTP status."""

    def __init__(self, kind: SchedulerErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: SchedulerErrorKind = kind
        self.message = message


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TableUploadArgs(_Args):
    name: str = Field(pattern=TABLE_NAME_PATTERN)
    csv_text: str = Field(min_length=1)
    id_column: str = Field(default="id", min_length=1, max_length=256)
    label_column: str | None = Field(default=None, min_length=1, max_length=256)
    replace: bool = False
    filename: str | None = Field(default=None, max_length=256)
    """The uploaded file's name, used in error messages instead of a temporary path."""


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
    background: bool = False
    """Answer at once ({upload_id, state: "parsing"}) and parse off the command path; the
    sender follows it with `table_upload_status`. False: parse, then answer the table."""


class TableUploadIdArgs(_Args):
    upload_id: str = Field(pattern=UPLOAD_ID_PATTERN)


class TableArgs(_Args):
    name: str = Field(pattern=TABLE_NAME_PATTERN)


class NoArgs(_Args):
    pass


@dataclass
class PartyTables:
    """The party's TableStore and the staging of its upload sessions (inside its directory)."""

    tables: TableStore
    upload_ttl_s: float = 3600.0
    """An upload session without a part for this long is abandoned: its staging is deleted."""
    status_interval_s: float = 0.5
    """How often a background commit writes its progress (`table_upload_status`)."""
    on_stored: Callable[[TableInfo], None] | None = None
    """Called with each table stored (main.py: its profile goes to the party's scheduler)."""
    _parser: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _parser_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def parse_off_the_command_path(self, work: Callable[[], None]) -> None:
        """Run `work` on this replica's one parser thread: commits wait for each other there,
        never in front of a command, and one parse at a time bounds the memory it takes."""
        with self._parser_lock:
            if self._parser is None:
                self._parser = ThreadPoolExecutor(1, thread_name_prefix="table-parser")
            parser = self._parser
        parser.submit(work)

    def close(self) -> None:
        with self._parser_lock:
            parser, self._parser = self._parser, None
        if parser is not None:
            parser.shutdown(wait=True, cancel_futures=False)

    @property
    def uploads_dir(self) -> Path:
        # Inside the tables directory (same volume, so staging costs no copy across disks);
        # the store only reads `<name>.npz` files, never this directory.
        return self.tables.data_dir / ".uploads"


def table_view(info: TableInfo, reads: int) -> dict[str, Any]:
    """A table's catalogue entry as the REST API shows it (TablePublic)."""
    return {
        "name": info.name,
        "rows": info.rows,
        "features": info.features,
        "feature_names": list(info.feature_names),
        "id_column": info.id_column,
        "label_column": info.label_column,
        "missing_values": info.missing_values,
        "missing_by_column": dict(info.missing_by_column),
        "label_values": info.label_values,
        "label_classes": info.label_classes,
        "sha256": info.sha256,
        "uploaded_at": info.uploaded_at.isoformat(),
        "reads": reads,
    }


def _view(tables: TableStore, info: TableInfo) -> dict[str, Any]:
    return table_view(info, tables.reads(info.name))


def _store_table(
    tables: TableStore,
    path: Path,
    args: TableUploadArgs | TableUploadCommitArgs,
    on_progress: Callable[[int, int], None] | None = None,
) -> TableInfo:
    """Parse the CSV at `path` and store it as `args.name` (one-shot or committed upload); bad
    rows become one `invalid` refusal."""
    try:
        info = tables.upload(
            args.name,
            path,
            id_column=args.id_column,
            label_column=args.label_column,
            replace=args.replace,
            on_progress=on_progress,
        )
    except TableError as exc:
        # The messages name the file by its path: show the user's file name instead.
        shown = args.filename or f"{args.name}.csv"
        raise DataCommandError("invalid", str(exc).replace(str(path), shown)) from exc
    log.info("table_uploaded", table=info.name, rows=info.rows, features=info.features)
    return info


def _refuse_existing(tables: TableStore, name: str, replace: bool) -> None:
    if not replace and tables.get(name) is not None:
        raise DataCommandError(
            "conflict", f"table {name} exists (upload with replace to overwrite it)"
        )


def _table_upload(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableUploadArgs.model_validate(raw)
    tables = data.tables
    _refuse_existing(tables, args.name, args.replace)
    with tempfile.TemporaryDirectory(prefix="upload-", dir=tables.data_dir) as tmp:
        path = Path(tmp) / "upload.csv"
        path.write_text(args.csv_text, encoding="utf-8")
        info = _store_table(tables, path, args)
    _stored(data, info)
    return _view(tables, info)


# --- upload sessions: tables larger than one bus frame ---------------------------------------


def sweep_uploads(data: PartyTables, now: float | None = None) -> int:
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


def _session(data: PartyTables, upload_id: str) -> Path:
    path = data.uploads_dir / upload_id
    if not path.is_dir():
        raise DataCommandError(
            "not_found",
            f"no upload {upload_id} (committed and expired, aborted, failed, or idle for "
            f"over {data.upload_ttl_s:g} s): upload the file again",
        )
    return path


def _part_path(session: Path, seq: int) -> Path:
    return session / f"part-{seq:06d}"


def _table_upload_begin(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
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


def _table_upload_part(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableUploadPartArgs.model_validate(raw)
    session = _session(data, args.upload_id)
    if (session / _COMMITTED).exists() or (session / _COMMITTING).exists():
        raise DataCommandError("conflict", f"upload {args.upload_id} is committed already")
    content = args.data.encode("utf-8")
    target = _part_path(session, args.seq)
    others = sum(p.stat().st_size for p in session.glob("part-*") if p != target)
    if target.exists():
        if target.read_bytes() != content:
            raise DataCommandError(
                "conflict",
                f"part {args.seq} of upload {args.upload_id} was sent before with other text",
            )
        os.utime(session)  # a retry is activity too
        return {"upload_id": args.upload_id, "seq": args.seq, "stored_bytes": others + len(content)}
    if others + len(content) > MAX_UPLOAD_BYTES:
        raise DataCommandError(
            "invalid",
            f"upload {args.upload_id} is larger than {MAX_UPLOAD_BYTES >> 20} MiB",
        )
    # Write then rename: a crash mid-write must not leave half a part under the part's name,
    # or the sender's retry of it would compare unequal and be refused. The temporary name is
    # unique per writer, so two replicas storing the same part never share one.
    partial = session / f".{target.name}.{secrets.token_hex(4)}.partial"
    partial.write_bytes(content)
    os.replace(partial, target)
    return {"upload_id": args.upload_id, "seq": args.seq, "stored_bytes": others + len(content)}


def _refuse_missing_parts(session: Path, count: int, upload_id: str) -> None:
    missing = [seq for seq in range(count) if not _part_path(session, seq).exists()]
    if missing:
        shown = ", ".join(str(seq) for seq in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DataCommandError(
            "invalid", f"upload {upload_id}: part(s) {shown}{more} of {count} never arrived"
        )


def _join_parts(session: Path, count: int, upload_id: str) -> tuple[Path, str]:
    """Parts 0..count-1 concatenated into one file (each part deleted once copied, so the
    staging never holds the table twice); the file and the SHA-256 of its bytes."""
    expected = [_part_path(session, seq) for seq in range(count)]
    extra = sorted({p.name for p in session.glob("part-*")} - {p.name for p in expected})
    if extra:
        raise DataCommandError(
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


def _answer_committed_again(
    tables: TableStore, committed: Path, args: TableUploadCommitArgs
) -> JsonValue:
    # A commit sent again after its answer was lost: answer it again, do not re-parse.
    done = json.loads(committed.read_text())
    info = tables.get(args.name)
    if done.get("name") != args.name or info is None or info.sha256 != done.get("sha256"):
        raise DataCommandError(
            "conflict", f"upload {args.upload_id} was committed as table {done.get('name')}"
        )
    return _view(tables, info)


def _table_upload_commit(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableUploadCommitArgs.model_validate(raw)
    tables = data.tables
    session = _session(data, args.upload_id)
    committed = session / _COMMITTED
    if committed.exists():
        return _answer_committed_again(tables, committed, args)
    # Missing parts keep the session: the sender can still send them and commit again.
    _refuse_missing_parts(session, args.parts, args.upload_id)
    try:
        # Exclusive: of two replicas handed the same commit, one parses, the other refuses.
        os.close(os.open(session / _COMMITTING, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise DataCommandError(
            "conflict",
            f"upload {args.upload_id} is being committed by another worker: wait for its answer",
        ) from None
    if not args.background:
        return _view(tables, _commit(data, session, args))
    _write_status(session, {"state": "parsing", "bytes_done": 0, "bytes_total": 0})
    data.parse_off_the_command_path(lambda: _commit_in_background(data, session, args))
    log.info("table_upload_parsing", upload_id=args.upload_id, table=args.name)
    return {"upload_id": args.upload_id, "state": "parsing"}


def _commit(
    data: PartyTables,
    session: Path,
    args: TableUploadCommitArgs,
    on_progress: Callable[[int, int], None] | None = None,
) -> TableInfo:
    """Join, check and parse a session holding its commit lock; the table stored."""
    tables = data.tables
    try:
        _refuse_existing(tables, args.name, args.replace)
        path, digest = _join_parts(session, args.parts, args.upload_id)
        if args.sha256 is not None and digest != args.sha256:
            raise DataCommandError(
                "invalid",
                f"upload {args.upload_id}: the parts do not add up to the text sent "
                "(SHA-256 differs): upload the file again",
            )
        info = _store_table(tables, path, args, on_progress)
    except BaseException:
        # The parts are spent (joined, or the upload cannot become this table): drop it all,
        # but for the status a background commit's sender is reading (the sweep takes it).
        if on_progress is None:
            shutil.rmtree(session, ignore_errors=True)
        else:
            for leftover in session.iterdir():
                if leftover.name != _STATUS:
                    leftover.unlink(missing_ok=True)
        raise
    path.unlink()
    (session / _COMMITTED).write_text(json.dumps({"name": info.name, "sha256": info.sha256}))
    log.info("table_upload_committed", upload_id=args.upload_id, table=info.name, parts=args.parts)
    _stored(data, info)
    return info


def _stored(data: PartyTables, info: TableInfo) -> None:
    if data.on_stored is None:
        return
    try:
        data.on_stored(info)
    except Exception:  # the table is stored; the scheduler's check falls back to the reader's
        log.exception("table_profile_not_sent", table=info.name)


def _listable(classes: list[str] | None) -> list[str] | None:
    """Class names the profile can carry (each at most 1024 characters; else none are sent,
    and a refusal names the numbers)."""
    if classes is None or any(len(name) > 1024 for name in classes):
        return None
    return classes


def profile_sender(
    publisher: EnvelopePublisher, party_id: str, topic: str
) -> Callable[[TableInfo], None]:
    """`PartyTables.on_stored` that tells this party's scheduler what a table holds
    (control.table_profile: rows and label values, never data)."""

    def send(info: TableInfo) -> None:
        me = PartyRef(party_id=party_id, role="local")
        profile = TableProfile(
            table=info.name,
            party_id=party_id,
            rows=info.rows,
            label_column=info.label_column,
            label_values=info.label_values,
            label_classes=_listable(info.label_classes),
            # SQLite gives the stored UTC time back without its zone.
            uploaded_at=info.uploaded_at.replace(tzinfo=info.uploaded_at.tzinfo or UTC),
        )
        envelope = new_envelope(
            profile,
            job_id="",
            component=PROFILE_COMPONENT,
            task_id="",
            attempt=0,
            source=me,
            destination=me,
            tag=f"table.profile.{info.name}",
            iteration=-1,
            seq=time.time_ns(),  # one message per upload (the inbox dedupes by id)
            created_at=datetime.now(UTC),
        )
        publisher.send(topic, envelope)

    return send


def _commit_in_background(data: PartyTables, session: Path, args: TableUploadCommitArgs) -> None:
    """`_commit` on the parser thread, its progress and outcome in the session's status file
    (any replica answers `table_upload_status` from it: the staging is shared)."""
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= data.status_interval_s:
            last = now
            _write_status(session, {"state": "parsing", "bytes_done": done, "bytes_total": total})

    try:
        info = _commit(data, session, args, progress)
    except DataCommandError as exc:
        outcome: dict[str, Any] = {"state": "failed", "error": exc.message, "error_kind": exc.kind}
    except Exception as exc:
        log.exception("table_upload_failed", upload_id=args.upload_id)
        outcome = {
            "state": "failed",
            "error": f"internal error ({type(exc).__name__})",
            "error_kind": "internal",
        }
    else:
        outcome = {"state": "committed", "name": info.name}
    # A failed commit removed the session's parts; its status stays, for the sender to read,
    # until the idle sweep.
    _write_status(session, outcome)


def _write_status(session: Path, status: dict[str, Any]) -> None:
    # Write then rename: a replica answering table_upload_status never reads half a file.
    partial = session / f".{_STATUS}.{secrets.token_hex(4)}.partial"
    partial.write_text(json.dumps(status))
    os.replace(partial, session / _STATUS)


def _table_upload_status(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableUploadIdArgs.model_validate(raw)
    session = _session(data, args.upload_id)
    try:
        status = json.loads((session / _STATUS).read_text())
    except FileNotFoundError:
        raise DataCommandError(
            "not_found", f"upload {args.upload_id} has no background commit"
        ) from None
    answer: dict[str, JsonValue] = {"upload_id": args.upload_id, **status}
    if status["state"] == "committed":
        info = data.tables.get(status["name"])
        if info is None:
            raise DataCommandError("not_found", f"table {status['name']} is gone")
        answer["table"] = _view(data.tables, info)
    return answer


def _table_upload_abort(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableUploadIdArgs.model_validate(raw)
    session = data.uploads_dir / args.upload_id
    existed = session.is_dir()
    shutil.rmtree(session, ignore_errors=True)
    if existed:
        log.info("table_upload_aborted", upload_id=args.upload_id)
    return {"upload_id": args.upload_id, "aborted": existed}


def _table_get(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    args = TableArgs.model_validate(raw)
    info = data.tables.get(args.name)
    if info is None:
        raise DataCommandError("not_found", f"no table {args.name} at this party")
    return _view(data.tables, info)


def _table_list(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    NoArgs.model_validate(raw)
    tables = data.tables
    rows: list[JsonValue] = [_view(tables, info) for info in tables.list()]
    return {"data": rows, "count": len(rows)}


def _job_outputs(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    from fedworker.job_outputs import job_outputs  # it imports this module's errors

    return job_outputs(data, raw)


def _job_output_rows(data: PartyTables, raw: dict[str, JsonValue]) -> JsonValue:
    from fedworker.job_outputs import job_output_rows

    return job_output_rows(data, raw)


DataOpHandler = Callable[[PartyTables, dict[str, JsonValue]], JsonValue]

DATA_OPS: dict[str, DataOpHandler] = {
    "table_upload": _table_upload,
    "table_upload_begin": _table_upload_begin,
    "table_upload_part": _table_upload_part,
    "table_upload_commit": _table_upload_commit,
    "table_upload_abort": _table_upload_abort,
    "table_upload_status": _table_upload_status,
    "table_get": _table_get,
    "table_list": _table_list,
    "job_outputs": _job_outputs,
    "job_output_rows": _job_output_rows,
}
"""Op -> handler; every op of fedschemas' DataOp has one (tests/worker checks)."""


def _bad_arguments(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
    )
    return f"bad arguments: {problems}"


def execute(data: PartyTables, request: DataRequest) -> DataResponse:
    """Run one command; every failure becomes a response, never a raise."""
    try:
        result = DATA_OPS[request.op](data, dict(request.args))
    except DataCommandError as exc:
        return DataResponse(op=request.op, ok=False, error=exc.message, error_kind=exc.kind)
    except ValidationError as exc:
        return DataResponse(
            op=request.op, ok=False, error=_bad_arguments(exc), error_kind="invalid"
        )
    except Exception as exc:
        log.exception("data_command_failed", op=request.op)
        return DataResponse(
            op=request.op,
            ok=False,
            error=f"internal error ({type(exc).__name__})",
            error_kind="internal",
        )
    return DataResponse(op=request.op, ok=True, result=result)


class DataServer(CommandServer[DataRequest, DataResponse]):
    """Answers data.request envelopes on `topic` (one at a time per replica, in arrival order).

    Every replica of the party's worker runs one on the same topic: the broker hands each
    command to one of them (module doc: what they must share)."""

    started_event = "data_service_started"
    no_reply_to_event = "data_command_without_reply_to"
    malformed_event = "data_command_malformed"
    too_large_event = "data_reply_too_large"

    def __init__(
        self,
        bus: Bus,
        topic: str,
        party_id: str,
        data: PartyTables,
        *,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        super().__init__(bus, topic, party_id, DataRequest, DataResponse, log=log, tracer=_TRACER)
        self.data = data
        self._metrics = metrics

    def start(self) -> None:
        sweep_uploads(self.data)  # sessions a previous run left behind
        super().start()

    def stop(self) -> None:
        super().stop()
        self.data.close()  # a parse under way finishes (its status file says how)

    def answer(self, request: DataRequest, span: Span) -> DataResponse:
        return execute(self.data, request)

    def counted(self, request: DataRequest, response: DataResponse) -> None:
        if self._metrics is not None:
            self._metrics.data_requests.labels(request.op, response.error_kind or "ok").inc()
