"""Worker message handlers: plain functions keyed by message type.

- task.run: records the task (fedworker.tasks) for the runner threads and acks at once;
- task.cancel: records the cancellation, interrupts the task if it runs here, and reports a
  task that had not started as canceled;
- federation.data: files the envelope in the party's durable mailbox (fedflow), where the
  running component receives it by tag and iteration.

Each handler gets the decoded envelope, its typed payload and the inbox transaction; its
database effect goes through `tx.session` so it commits together with the message's done
marker. Follow-up messages are published inside the handler (before the commit) with
deterministic ids: if the process dies before the commit, the redelivered message re-sends the
same ids and the receivers drop the copies; publishing after the commit could lose them.

demo.ping is not in this table: its handler is a test hook (fedworker.testing), bound only when
the worker's `test_hooks` setting is on, never in production.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
import structlog
from fedbus import Reject
from fedbus.inbox import InboxTransaction
from fedbus.runtime import EnvelopeHandler, EnvelopePublisher
from fedcommon.tracing import inject_traceparent
from fedflow.task import TaskKey, TaskSpec
from fedschemas import Envelope, Payload
from fedschemas.payloads import MAX_ATTEMPT, TaskCancel, TaskRun

from fedworker.tasks import CANCELED, QUEUED, record_task, request_cancel

if TYPE_CHECKING:
    from fedflow.bus_federation import FederationEndpoint

    from fedworker.tasks import StatusReporter, TaskExecutor

log = structlog.get_logger("fedworker")


@dataclass(frozen=True)
class WorkerContext:
    """What handlers need besides the message: the party's identity and its publisher."""

    party_id: str
    publisher: EnvelopePublisher
    reply_topic: str
    endpoint: FederationEndpoint | None = None
    """Federation plumbing (mailbox); None: this worker handles no federation data."""
    executor: TaskExecutor | None = None
    reporter: StatusReporter | None = None


def _require_own_party(envelope: Envelope, party_id: str, ctx: WorkerContext) -> None:
    # task.* come from this party's own scheduler only (the gateway routes "task." from
    # remote parties to the scheduler, never here; a forged one is refused all the same).
    if envelope.source.party_id != ctx.party_id or party_id != ctx.party_id:
        raise Reject(
            f"{envelope.type} from party {envelope.source.party_id} for party {party_id}; "
            f"this is party {ctx.party_id}"
        )


def _require_storable_attempt(envelope: Envelope, attempt: int) -> None:
    # The payload model bounds it already (fedschemas.payloads.MAX_ATTEMPT); checked again here,
    # before any row is written, because the task tables' attempt column is a 32-bit integer: an
    # attempt past it must be refused with its reason, not fail the insert (issue #21).
    if not 0 <= attempt <= MAX_ATTEMPT:
        raise Reject(
            f"{envelope.type}: attempt {attempt} is out of range (0..{MAX_ATTEMPT}); "
            "the worker stores attempts as 32-bit integers"
        )


def handle_task_run(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: WorkerContext
) -> None:
    """task.run: record the task for the runner threads (they report task.status)."""
    if not isinstance(payload, TaskRun):
        raise Reject(f"task.run handler got {type(payload).__name__}")
    _require_own_party(envelope, payload.party_id, ctx)
    _require_storable_attempt(envelope, payload.attempt)
    if ctx.executor is None or ctx.reporter is None:
        raise Reject("this worker runs no tasks")
    spec = TaskSpec(
        job_id=payload.job_id,
        component=payload.component,
        component_type=payload.component_type,
        attempt=payload.attempt,
        role=payload.role,
        party_id=payload.party_id,
        parties=payload.parties,
        params=payload.params,
        inputs=payload.inputs,
    )
    session = tx.require_session()
    # The current span is this handler's (EnvelopeConsumer opened it under the scheduler's
    # task.run span): the runner thread starts the task's span under it.
    state = record_task(session, spec, payload.pipeline_yaml, traceparent=inject_traceparent())
    if state == CANCELED:
        ctx.reporter.report(spec.key, CANCELED, reason="canceled before it started")
    # Wake the runner threads only once the task row is committed: woken earlier, they find
    # nothing to claim and sleep a whole poll interval (0.5 s per task on an idle worker).
    executor = ctx.executor
    sa.event.listen(session, "after_commit", lambda _session: executor.wake(), once=True)
    log.info(
        "task_recorded",
        job_id=spec.job_id,
        task_id=spec.key.task_id,
        component=payload.component,
        component_type=payload.component_type,
        attempt=payload.attempt,
        role=payload.role,
        state=state,
    )


def handle_task_cancel(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: WorkerContext
) -> None:
    """task.cancel: stop the task (it reports canceled), or report a queued one canceled."""
    if not isinstance(payload, TaskCancel):
        raise Reject(f"task.cancel handler got {type(payload).__name__}")
    _require_own_party(envelope, ctx.party_id, ctx)
    _require_storable_attempt(envelope, payload.attempt)
    found = request_cancel(
        tx.require_session(), payload.job_id, payload.component, payload.attempt, payload.reason
    )
    keys = [(TaskKey(k.job_id, k.component, k.attempt, ctx.party_id, k.role), b) for k, b in found]
    for key, before in keys:
        if before == QUEUED and ctx.reporter is not None:
            ctx.reporter.report(key, CANCELED, reason=payload.reason)
    if ctx.executor is not None:
        ctx.executor.cancel_local(payload.job_id, payload.component, payload.attempt)
    log.info(
        "task_cancel_recorded",
        job_id=payload.job_id,
        component=payload.component,
        tasks=len(found),
        task_ids=[key.task_id for key, _ in keys],
    )


def handle_federation_data(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: WorkerContext
) -> None:
    """federation.data: file it in the mailbox, committed with the done marker."""
    if ctx.endpoint is None:
        raise Reject("this worker runs no tasks")
    ctx.endpoint.mailbox.file(envelope, payload, tx)


HANDLERS = {
    "task.run": handle_task_run,
    "task.cancel": handle_task_cancel,
    "federation.data": handle_federation_data,
}
"""Message type -> handler. Adding a message type the worker handles is one line here."""


def bind_handlers(ctx: WorkerContext, *, test_hooks: bool = False) -> dict[str, EnvelopeHandler]:
    """The handlers with their context bound, as the EnvelopeConsumer wants them; with
    `test_hooks`, also the test-only ones (demo.ping)."""
    table = dict(HANDLERS)
    if test_hooks:
        from fedworker.testing import TEST_HANDLERS  # test-only code, never loaded otherwise

        table.update(TEST_HANDLERS)
    return {name: functools.partial(handler, ctx=ctx) for name, handler in table.items()}
