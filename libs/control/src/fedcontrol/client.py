"""The requesting side of a party's local commands: request/reply over the party's bus.

Two services answer commands, each on its own topic, in the same form:
- the scheduler (`svc.scheduler.rpc`): `scheduler.request {op, args}` answered by
  `scheduler.response {op, ok, result, error, error_kind}` -- jobs, grants, job metrics and logs
  (docs/scheduler.md lists the ops);
- the party's data service, which its workers serve (`svc.data.rpc`): `data.request` answered
  by `data.response` -- the party's tables and their upload sessions (docs/api.md).

A command is an envelope (fedschemas) from this party, role `local`. `SchedulerClient` and
`DataClient` wrap that for Python callers (the gateway's REST API, tests); the services build
their replies with `command_envelope` from here too, so both sides share one wire form.

Failures a caller can act on (the scheduler's and the data service's share base classes, which
the REST API catches):
- `CommandFailed` (`SchedulerCommandFailed`, `DataCommandFailed`): the service refused the
  command; `kind` is its error_kind and `http_status` the REST status it maps to (invalid 400,
  not_found 404, conflict 409, internal 500).
  A command the service's bus dead-lettered as unreadable (a malformed request: the server
  raises `fedbus.Reject`, the bus answers with the reason) is `CommandFailed` of kind invalid.
- `ServiceUnavailable` (`SchedulerUnavailable`, `DataUnavailable`): nobody answered (no
  service consuming the topic, broker down, or no reply within the timeout). A command may or
  may not have been carried out: every command is idempotent by its key (job id, table name,
  upload id and part number...), so retrying is safe.

Every command must fit in one bus frame (`Capabilities.max_frame_bytes`): both services consume
their RPC topic one delivery at a time (prefetch 1), where the bus holds no chunk back (an
orphan chunk cannot stall the queue), so a chunked command's set would survive no restart of the
service and an RPC handler is not meant for large bodies. The client refuses such a command
before sending it; a large table travels as an upload session instead
(`table_upload_begin`, `table_upload_part` per few MiB, `table_upload_commit`: `TableUpload`).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from fedbus import Bus, BusError, RequestRejected
from fedcommon.tracing import get_tracer, inject_traceparent
from fedschemas import (
    MalformedMessage,
    PartyRef,
    decode_envelope,
    decode_payload,
    encode_envelope,
    new_envelope,
    topics,
)
from fedschemas.payloads import (
    DataOp,
    DataRequest,
    DataResponse,
    SchedulerErrorKind,
    SchedulerOp,
    SchedulerRequest,
    SchedulerResponse,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import JsonValue

SCHEDULER_RPC_TOPIC: Final = topics.SCHEDULER_RPC
DATA_RPC_TOPIC: Final = topics.DATA_RPC
RPC_COMPONENT: Final = "scheduler.rpc"
"""The envelope `component` of scheduler commands and answers."""
DATA_RPC_COMPONENT: Final = "data.rpc"
"""The envelope `component` of data commands and answers."""
UPLOAD_PART_BYTES: Final = 4 << 20
"""Characters of CSV text one table_upload_part carries at most: half the default frame, so an
ASCII part and its envelope fit with room to spare (less where the bus's frame is smaller; a
part whose wide characters still overflow the frame is halved)."""
PART_ATTEMPTS: Final = 3
"""How often a part is sent before the upload gives up (a part is idempotent by its seq)."""
UPLOAD_WAIT_S: Final = 600.0
"""How long TableUpload.commit waits for the service's parse unless told (a 200 MB CSV
parses in about a minute on a loaded machine)."""
_TRACER = get_tracer("fedcontrol")

HTTP_STATUS: Final[Mapping[SchedulerErrorKind, int]] = {
    "invalid": 400,
    "not_found": 404,
    "conflict": 409,
    "internal": 500,
}
"""error_kind -> the HTTP status the REST API answers with."""

Command = SchedulerRequest | SchedulerResponse | DataRequest | DataResponse


class CommandFailed(Exception):
    """A service refused a command; `kind` is its error_kind, `message` says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def http_status(self) -> int:
        for kind, status in HTTP_STATUS.items():
            if kind == self.kind:
                return status
        return 500


class ServiceUnavailable(Exception):
    """No answer from a service: not running, broker unreachable, or too slow."""


class SchedulerCommandFailed(CommandFailed):
    """The scheduler refused a command."""


class SchedulerUnavailable(ServiceUnavailable):
    """No answer from the scheduler."""


class DataCommandFailed(CommandFailed):
    """The data service refused a command (a bad CSV, a table that exists, no such table...)."""


class DataUnavailable(ServiceUnavailable):
    """No answer from the data service (no worker of the party is running)."""


def command_envelope(payload: Command, party_id: str, op: str) -> bytes:
    """The envelope bytes of a command or its answer, from and to `party_id`'s role `local`."""
    me = PartyRef(party_id=party_id, role="local")
    data = isinstance(payload, DataRequest | DataResponse)
    envelope = new_envelope(
        payload,
        job_id="",
        component=DATA_RPC_COMPONENT if data else RPC_COMPONENT,
        task_id="",
        attempt=0,
        source=me,
        destination=me,
        tag=f"rpc.{op}",
        iteration=-1,
        # Commands are not deduplicated (each is answered once, to its own reply address); a
        # random seq only keeps their message ids apart in logs and traces.
        seq=secrets.randbits(62),
        created_at=datetime.now(UTC),
        # A command joins the caller's trace (a REST call, a CLI command), so what the
        # service does for it -- proposals, task dispatch -- shows up under that call.
        traceparent=inject_traceparent(),
    )
    return encode_envelope(envelope)


def _args(**args: JsonValue) -> dict[str, JsonValue]:
    """The arguments that were given (None means "not given": the service's default)."""
    return {key: value for key, value in args.items() if value is not None}


class _CommandClient:
    """What both clients share: encode a command, send it, wait for its answer, raise the
    service's own failure classes. Safe to share between threads when the bus is (every
    fedbus adapter's `request` is)."""

    service: ClassVar[str]
    """How messages name the service ("the scheduler")."""
    _request_model: ClassVar[type[SchedulerRequest] | type[DataRequest]]
    _response_model: ClassVar[type[SchedulerResponse] | type[DataResponse]]
    _failed: ClassVar[type[CommandFailed]]
    _unavailable: ClassVar[type[ServiceUnavailable]]
    default_topic: ClassVar[str]
    """Where the service listens unless `topic` says otherwise."""

    def __init__(
        self, bus: Bus, party_id: str, *, topic: str | None = None, timeout: float = 10.0
    ) -> None:
        self._bus = bus
        self.party_id = party_id
        self.topic = self.default_topic if topic is None else topic
        self.timeout = timeout

    def call(self, op: str, *, timeout: float | None = None, **args: JsonValue) -> JsonValue:
        """The op's result; CommandFailed when refused, ServiceUnavailable on silence."""
        return self._request(op, self._encode(op, args), timeout)

    @property
    def max_command_bytes(self) -> int:
        """The largest command (envelope bytes) that reaches the service: one bus frame."""
        return self._bus.capabilities.max_frame_bytes

    def _encode(self, op: str, args: dict[str, JsonValue]) -> bytes:
        request = self._request_model.model_validate({"op": op, "args": args})
        return command_envelope(request, self.party_id, op)

    def _request(self, op: str, body: bytes, timeout: float | None) -> JsonValue:
        with _TRACER.start_as_current_span(f"rpc {op}", kind=SpanKind.CLIENT) as span:
            span.set_attribute("rpc.system", "fedmq")
            span.set_attribute("rpc.method", op)
            span.set_attribute("fedmq.party_id", self.party_id)
            try:
                return self._send(op, body, timeout)
            except CommandFailed as exc:
                span.set_attribute("fedmq.error_kind", exc.kind)
                if exc.kind == "internal":
                    span.set_status(Status(StatusCode.ERROR, exc.message))
                raise
            except ServiceUnavailable as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise

    def _send(self, op: str, body: bytes, timeout: float | None) -> JsonValue:
        if len(body) > self.max_command_bytes:
            # Sent anyway, it would be chunked and stall the service's RPC queue (module doc).
            raise self._failed(
                "invalid",
                f"the {op} command is {len(body)} bytes, over the bus frame of "
                f"{self.max_command_bytes} bytes that a command must fit in",
            )
        wait = self.timeout if timeout is None else timeout
        try:
            reply = self._bus.request(self.topic, body, timeout=wait)
        except RequestRejected as exc:
            # The service's bus dead-lettered the command (it could not even read it): the
            # reason is all there is to show, and sending it again would fail the same way.
            raise self._failed(
                "invalid",
                f"the {self.service} of party {self.party_id} refused {op!r}: {exc.reason}",
            ) from exc
        except BusError as exc:
            raise self._unavailable(
                f"the {self.service} of party {self.party_id} did not answer {op!r} "
                f"within {wait:g} s ({type(exc).__name__}): is it running?"
            ) from exc
        try:
            response = decode_payload(decode_envelope(reply.body), self._response_model)
        except MalformedMessage as exc:
            raise self._unavailable(f"malformed answer from the {self.service}: {exc}") from exc
        if not response.ok:
            raise self._failed(response.error_kind or "internal", response.error or "")
        return response.result

    def _dict(self, op: str, *, timeout: float | None = None, **args: JsonValue) -> dict[str, Any]:
        return self._as_dict(op, self.call(op, timeout=timeout, **_args(**args)))

    def _as_dict(self, op: str, result: JsonValue) -> dict[str, Any]:
        if not isinstance(result, dict):
            raise self._unavailable(f"unexpected answer from the {self.service} to {op!r}")
        return dict(result)

    def _page(self, result: dict[str, Any]) -> list[dict[str, Any]]:
        rows = result.get("data")
        if not isinstance(rows, list):
            raise self._unavailable(f"unexpected answer from the {self.service}: no data list")
        return [dict(row) for row in rows if isinstance(row, dict)]


class SchedulerClient(_CommandClient):
    """Sends commands to the scheduler of `party_id` over `bus` and waits for each answer."""

    service = "scheduler"
    _request_model = SchedulerRequest
    _response_model = SchedulerResponse
    _failed = SchedulerCommandFailed
    _unavailable = SchedulerUnavailable
    default_topic = SCHEDULER_RPC_TOPIC

    def call(  # type: ignore[override]  # narrower: only the scheduler's ops
        self, op: SchedulerOp, *, timeout: float | None = None, **args: JsonValue
    ) -> JsonValue:
        return super().call(op, timeout=timeout, **args)

    # --- jobs --------------------------------------------------------------------------------

    def submit(self, pipeline_yaml: str, job_id: str | None = None) -> dict[str, Any]:
        return self._dict("submit", pipeline_yaml=pipeline_yaml, job_id=job_id)

    def status(self, job_id: str) -> dict[str, Any]:
        return self._dict("status", job_id=job_id)

    def list_jobs(self, state: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self._page(self._dict("list_jobs", state=state, limit=limit))

    def list_tasks(self, job_id: str, attempt: int | None = None) -> list[dict[str, Any]]:
        return self._page(self._dict("list_tasks", job_id=job_id, attempt=attempt))

    def stop(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        return self._dict("stop", job_id=job_id, reason=reason)

    def rerun(self, job_id: str) -> dict[str, Any]:
        return self._dict("rerun", job_id=job_id)

    def metrics(
        self, job_id: str, component: str | None = None, party_id: str | None = None
    ) -> dict[str, Any]:
        """{data: [metric], count, curves: [curve]}: this party's metrics of the job."""
        return self._dict("metrics", job_id=job_id, component=component, party_id=party_id)

    def logs(self, job_id: str) -> list[dict[str, Any]]:
        """The job's and its tasks' events as this party's scheduler recorded them, in order."""
        return self._page(self._dict("logs", job_id=job_id))

    # --- grants ------------------------------------------------------------------------------

    def grant_add(
        self,
        table: str,
        grantee: str,
        component_types: list[str],
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Grant `table` to `grantee`; `params`: {component type: {may_set, bounds}} (None:
        the grant names no params)."""
        types: list[JsonValue] = list(component_types)
        return self._dict(
            "grant_add", table=table, grantee=grantee, component_types=types, params=params
        )

    def grant_list(
        self, table: str | None = None, grantee: str | None = None
    ) -> list[dict[str, Any]]:
        return self._page(self._dict("grant_list", table=table, grantee=grantee))


class DataClient(_CommandClient):
    """Sends table commands to the data service of `party_id` (any of its workers answers)."""

    service = "data service"
    _request_model = DataRequest
    _response_model = DataResponse
    _failed = DataCommandFailed
    _unavailable = DataUnavailable
    default_topic = DATA_RPC_TOPIC

    def call(  # type: ignore[override]  # narrower: only the data service's ops
        self, op: DataOp, *, timeout: float | None = None, **args: JsonValue
    ) -> JsonValue:
        return super().call(op, timeout=timeout, **args)

    def table_upload(
        self,
        name: str,
        csv_text: str,
        *,
        id_column: str = "id",
        label_column: str | None = None,
        replace: bool = False,
        filename: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Store `csv_text` as table `name` in the party's TableStore (its workers read it).

        A text that fits in one command goes as one `table_upload`; a larger one as an upload
        session (`table_upload_begin`). Parsing a large table takes a while: give a `timeout`
        longer than the default (it applies to the command that parses)."""
        # A text with more characters than a frame has bytes cannot fit: not worth encoding.
        if len(csv_text) < self.max_command_bytes:
            args = _args(
                name=name,
                csv_text=csv_text,
                id_column=id_column,
                label_column=label_column,
                replace=replace,
                filename=filename,
            )
            body = self._encode("table_upload", args)
            if len(body) <= self.max_command_bytes:
                return self._as_dict("table_upload", self._request("table_upload", body, timeout))
        upload = self.table_upload_begin(name=name, replace=replace)
        try:
            upload.send(csv_text)
        except BaseException:
            upload.abort()
            raise
        return upload.commit(
            name,
            id_column=id_column,
            label_column=label_column,
            replace=replace,
            filename=filename,
            timeout=timeout,
        )

    def table_upload_begin(self, *, name: str | None = None, replace: bool = False) -> TableUpload:
        """Open an upload session. With `name`, a table that exists (and no `replace`) is
        refused now (409), before any part travels."""
        result = self._dict("table_upload_begin", name=name, replace=replace if name else None)
        upload_id = result.get("upload_id")
        if not isinstance(upload_id, str):
            raise DataUnavailable("unexpected answer from the data service: no upload_id")
        return TableUpload(self, upload_id)

    def table_get(self, name: str) -> dict[str, Any]:
        return self._dict("table_get", name=name)

    def table_list(self) -> list[dict[str, Any]]:
        return self._page(self._dict("table_list"))


class TableUpload:
    """One upload session at the data service: `send` CSV text in pieces, then `commit` (or
    `abort`). Parts are numbered from 0 in the order sent; the service keeps each under its
    number, so a part sent twice (a retry after a lost answer) is stored once. `commit` names
    the part count and the SHA-256 of the whole text, which the service checks before it
    parses. Not thread-safe: one sender per session."""

    def __init__(self, client: DataClient, upload_id: str) -> None:
        self._client = client
        self.upload_id = upload_id
        self.parts = 0
        self.size = 0
        """UTF-8 bytes sent so far."""
        self.poll_s = 0.2
        """How often `commit` asks how the parse is going."""
        self._digest = hashlib.sha256()

    def send(self, text: str, *, timeout: float | None = None) -> None:
        """Append `text` to the upload: one part per UPLOAD_PART_BYTES or less."""
        step = max(1, min(UPLOAD_PART_BYTES, self._client.max_command_bytes // 2))
        for start in range(0, len(text), step):
            self._send_piece(text[start : start + step], timeout)

    def _send_piece(self, piece: str, timeout: float | None) -> None:
        args: dict[str, JsonValue] = {"upload_id": self.upload_id, "seq": self.parts, "data": piece}
        body = self._client._encode("table_upload_part", args)
        if len(body) > self._client.max_command_bytes and len(piece) > 1:
            # Wide characters (up to 4 UTF-8 bytes each) made the part too large: halve it.
            middle = len(piece) // 2
            self._send_piece(piece[:middle], timeout)
            self._send_piece(piece[middle:], timeout)
            return
        for attempt in range(1, PART_ATTEMPTS + 1):
            try:
                self._client._request("table_upload_part", body, timeout)
                break
            except ServiceUnavailable:
                # Safe to send again: the service stores a part once per seq.
                if attempt == PART_ATTEMPTS:
                    raise
        encoded = piece.encode("utf-8")
        self._digest.update(encoded)
        self.size += len(encoded)
        self.parts += 1

    def commit(
        self,
        name: str,
        *,
        id_column: str = "id",
        label_column: str | None = None,
        replace: bool = False,
        filename: str | None = None,
        timeout: float | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Parse the uploaded text and store it as table `name` (as `table_upload` does).

        The service parses it off its command path (`background`) and this polls
        `table_upload_status` every `poll_s` until the table is stored, calling
        `on_progress(bytes parsed, total)`; `timeout` bounds the whole wait (None: the
        client's default per command, UPLOAD_WAIT_S in all)."""
        result = self._client._dict(
            "table_upload_commit",
            upload_id=self.upload_id,
            parts=self.parts,
            sha256=self._digest.hexdigest(),
            name=name,
            id_column=id_column,
            label_column=label_column,
            replace=replace,
            filename=filename,
            background=True,
        )
        if result.get("state") != "parsing":
            return result  # a commit sent again after it was stored: the table
        deadline = time.monotonic() + (timeout if timeout is not None else UPLOAD_WAIT_S)
        while True:
            status = self._client._dict("table_upload_status", upload_id=self.upload_id)
            state = status.get("state")
            if state == "committed":
                table = status.get("table")
                if not isinstance(table, dict):
                    raise DataUnavailable("unexpected answer from the data service: no table")
                return table
            if state == "failed":
                raise DataCommandFailed(
                    str(status.get("error_kind") or "internal"), str(status.get("error") or "")
                )
            if on_progress is not None:
                done, total = status.get("bytes_done"), status.get("bytes_total")
                if isinstance(done, int) and isinstance(total, int):
                    on_progress(done, total)
            if time.monotonic() >= deadline:
                raise DataUnavailable(
                    f"upload {self.upload_id} was still parsing after the wait: ask for table "
                    f"{name} later (table_get) instead of uploading it again"
                )
            time.sleep(self.poll_s)

    def abort(self) -> None:
        """Drop the session's parts now (best effort: the service also drops abandoned
        sessions after a while)."""
        with contextlib.suppress(CommandFailed, ServiceUnavailable):
            self._client.call("table_upload_abort", upload_id=self.upload_id)
