"""The requesting side of a party's scheduler commands: request/reply on `svc.scheduler.rpc`.

A command is an envelope (fedschemas) from this party, role `local`, whose payload is
`scheduler.request {op, args}`; the scheduler answers on the request's reply address with
`scheduler.response {op, ok, result, error, error_kind}` (docs/scheduler.md lists the ops, their
arguments and results). `SchedulerClient` wraps that for Python callers: the gateway's REST API,
the CLI's tests, the scheduler's own tests. The scheduler builds its replies with
`command_envelope` from here too, so both sides share one definition of the wire form.

Failures a caller can act on:
- `SchedulerCommandFailed`: the scheduler refused the command; `kind` is its error_kind and
  `http_status` the REST status it maps to (invalid 400, not_found 404, conflict 409,
  internal 500).
- `SchedulerUnavailable`: nobody answered (no scheduler consuming the topic, broker down, or no
  reply within the timeout). A command may or may not have been carried out: every command is
  idempotent by its key (job id, table name...), so retrying is safe.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from fedbus import Bus, BusError
from fedcommon.tracing import get_tracer, inject_traceparent
from fedschemas import (
    MalformedMessage,
    PartyRef,
    decode_envelope,
    decode_payload,
    encode_envelope,
    new_envelope,
)
from fedschemas.payloads import (
    SchedulerErrorKind,
    SchedulerOp,
    SchedulerRequest,
    SchedulerResponse,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import JsonValue

SCHEDULER_RPC_TOPIC: Final = "svc.scheduler.rpc"
RPC_COMPONENT: Final = "scheduler.rpc"
_TRACER = get_tracer("fedcontrol")

HTTP_STATUS: Final[Mapping[SchedulerErrorKind, int]] = {
    "invalid": 400,
    "not_found": 404,
    "conflict": 409,
    "internal": 500,
}
"""error_kind -> the HTTP status the REST API answers with."""


class SchedulerCommandFailed(Exception):
    """The scheduler refused a command; `kind` is its error_kind, `message` says why."""

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


class SchedulerUnavailable(Exception):
    """No answer from the scheduler: not running, broker unreachable, or too slow."""


def command_envelope(
    payload: SchedulerRequest | SchedulerResponse, party_id: str, op: str
) -> bytes:
    """The envelope bytes of a command or its answer, from and to `party_id`'s role `local`."""
    me = PartyRef(party_id=party_id, role="local")
    envelope = new_envelope(
        payload,
        job_id="",
        component=RPC_COMPONENT,
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
        # scheduler does for it -- proposals, task dispatch -- shows up under that call.
        traceparent=inject_traceparent(),
    )
    return encode_envelope(envelope)


def _page(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = result.get("data")
    if not isinstance(rows, list):
        raise SchedulerUnavailable("unexpected answer from the scheduler: no data list")
    return [dict(row) for row in rows if isinstance(row, dict)]


def _args(**args: JsonValue) -> dict[str, JsonValue]:
    """The arguments that were given (None means "not given": the scheduler's default)."""
    return {key: value for key, value in args.items() if value is not None}


class SchedulerClient:
    """Sends commands to the scheduler of `party_id` over `bus` and waits for each answer.

    Safe to share between threads when the bus is (every fedbus adapter's `request` is).
    """

    def __init__(
        self,
        bus: Bus,
        party_id: str,
        *,
        topic: str = SCHEDULER_RPC_TOPIC,
        timeout: float = 10.0,
    ) -> None:
        self._bus = bus
        self.party_id = party_id
        self.topic = topic
        self.timeout = timeout

    def call(
        self, op: SchedulerOp, *, timeout: float | None = None, **args: JsonValue
    ) -> JsonValue:
        """The op's result; SchedulerCommandFailed when refused, SchedulerUnavailable on silence."""
        with _TRACER.start_as_current_span(f"rpc {op}", kind=SpanKind.CLIENT) as span:
            span.set_attribute("rpc.system", "fedmq")
            span.set_attribute("rpc.method", op)
            span.set_attribute("fedmq.party_id", self.party_id)
            try:
                return self._call(op, timeout, args)
            except SchedulerCommandFailed as exc:
                span.set_attribute("fedmq.error_kind", exc.kind)
                if exc.kind == "internal":
                    span.set_status(Status(StatusCode.ERROR, exc.message))
                raise
            except SchedulerUnavailable as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise

    def _call(
        self, op: SchedulerOp, timeout: float | None, args: dict[str, JsonValue]
    ) -> JsonValue:
        body = command_envelope(SchedulerRequest(op=op, args=args), self.party_id, op)
        wait = self.timeout if timeout is None else timeout
        try:
            reply = self._bus.request(self.topic, body, timeout=wait)
        except BusError as exc:
            raise SchedulerUnavailable(
                f"the scheduler of party {self.party_id} did not answer {op!r} "
                f"within {wait:g} s ({type(exc).__name__}): is it running?"
            ) from exc
        try:
            response = decode_payload(decode_envelope(reply.body), SchedulerResponse)
        except MalformedMessage as exc:
            raise SchedulerUnavailable(f"malformed answer from the scheduler: {exc}") from exc
        if not response.ok:
            raise SchedulerCommandFailed(response.error_kind or "internal", response.error or "")
        return response.result

    def _dict(
        self, op: SchedulerOp, *, timeout: float | None = None, **args: JsonValue
    ) -> dict[str, Any]:
        result = self.call(op, timeout=timeout, **_args(**args))
        if not isinstance(result, dict):
            raise SchedulerUnavailable(f"unexpected answer from the scheduler to {op!r}")
        return dict(result)

    # --- jobs --------------------------------------------------------------------------------

    def submit(self, pipeline_yaml: str, job_id: str | None = None) -> dict[str, Any]:
        return self._dict("submit", pipeline_yaml=pipeline_yaml, job_id=job_id)

    def status(self, job_id: str) -> dict[str, Any]:
        return self._dict("status", job_id=job_id)

    def list_jobs(self, state: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return _page(self._dict("list_jobs", state=state, limit=limit))

    def list_tasks(self, job_id: str, attempt: int | None = None) -> list[dict[str, Any]]:
        return _page(self._dict("list_tasks", job_id=job_id, attempt=attempt))

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
        return _page(self._dict("logs", job_id=job_id))

    # --- grants ------------------------------------------------------------------------------

    def grant_add(self, table: str, grantee: str, component_types: list[str]) -> dict[str, Any]:
        types: list[JsonValue] = list(component_types)
        return self._dict("grant_add", table=table, grantee=grantee, component_types=types)

    def grant_list(
        self, table: str | None = None, grantee: str | None = None
    ) -> list[dict[str, Any]]:
        return _page(self._dict("grant_list", table=table, grantee=grantee))

    # --- tables ------------------------------------------------------------------------------

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
        """Store `csv_text` as table `name` in the party's TableStore (the workers read it).

        Parsing a large table takes a while: give a `timeout` longer than the default."""
        return self._dict(
            "table_upload",
            timeout=timeout,
            name=name,
            csv_text=csv_text,
            id_column=id_column,
            label_column=label_column,
            replace=replace,
            filename=filename,
        )

    def table_get(self, name: str) -> dict[str, Any]:
        return self._dict("table_get", name=name)

    def table_list(self) -> list[dict[str, Any]]:
        return _page(self._dict("table_list"))
