"""Worker message handlers: plain functions keyed by message type.

- demo.ping: the two-party exchange demo (answers demo.pong);
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
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
import structlog
from fedbus import Reject
from fedbus.inbox import InboxTransaction
from fedbus.runtime import EnvelopeHandler, EnvelopePublisher
from fedcommon.tracing import inject_traceparent
from fedflow.task import TaskKey, TaskSpec
from fedschemas import DemoPing, DemoPong, Envelope, Payload, new_envelope
from fedschemas.payloads import TaskCancel, TaskRun

from fedworker.tasks import CANCELED, QUEUED, record_task, request_cancel

if TYPE_CHECKING:
    from fedflow.bus_federation import FederationEndpoint

    from fedworker.tasks import StatusReporter, TaskExecutor

log = structlog.get_logger("fedworker")

worker_metadata = sa.MetaData()

pings_table = sa.Table(
    "worker_pings",
    worker_metadata,
    # A surrogate key, not the message id: a second effect for the same message would show up
    # as a second row (what the crash test checks), not be hidden by a unique violation.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(255), nullable=False, index=True),
    sa.Column("job_id", sa.String(256), nullable=False),
    sa.Column("source_party", sa.String(64), nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)


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


def handle_ping(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: WorkerContext
) -> None:
    """demo.ping: record the ping, answer with demo.pong (n + 1) to the reply topic."""
    if not isinstance(payload, DemoPing):  # the consumer dispatches by type; belt and braces
        raise Reject(f"demo.ping handler got {type(payload).__name__}")
    if envelope.destination.party_id != ctx.party_id:
        raise Reject(
            f"addressed to party {envelope.destination.party_id}, this is party {ctx.party_id}"
        )
    tx.require_session().execute(
        sa.insert(pings_table),
        {
            "message_id": envelope.message_id,
            "job_id": envelope.job_id,
            "source_party": envelope.source.party_id,
            "n": payload.n,
            "text": payload.text,
            "received_at": datetime.now(UTC),
        },
    )
    # The answer's id derives from the ping's fields, so a re-run sends the same id.
    pong = new_envelope(
        DemoPong(text=payload.text, n=payload.n + 1),
        job_id=envelope.job_id,
        component="worker.demo",
        task_id=envelope.task_id,
        attempt=envelope.attempt,
        source=envelope.destination,
        destination=envelope.source,
        tag=f"{envelope.tag}.pong",
        iteration=envelope.iteration,
        seq=envelope.seq,
        created_at=datetime.now(UTC),
    )
    ctx.publisher.send(ctx.reply_topic, pong)
    log.info("ping_handled", n=payload.n, reply_message_id=pong.message_id)


def _require_own_party(envelope: Envelope, party_id: str, ctx: WorkerContext) -> None:
    # task.* come from this party's own scheduler only (the gateway routes "task." from
    # remote parties to the scheduler, never here; a forged one is refused all the same).
    if envelope.source.party_id != ctx.party_id or party_id != ctx.party_id:
        raise Reject(
            f"{envelope.type} from party {envelope.source.party_id} for party {party_id}; "
            f"this is party {ctx.party_id}"
        )


def handle_task_run(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: WorkerContext
) -> None:
    """task.run: record the task for the runner threads (they report task.status)."""
    if not isinstance(payload, TaskRun):
        raise Reject(f"task.run handler got {type(payload).__name__}")
    _require_own_party(envelope, payload.party_id, ctx)
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
    found = request_cancel(
        tx.require_session(), payload.job_id, payload.component, payload.attempt, payload.reason
    )
    for key, before in found:
        if before == QUEUED and ctx.reporter is not None:
            ctx.reporter.report(
                TaskKey(key.job_id, key.component, key.attempt, ctx.party_id, key.role),
                CANCELED,
                reason=payload.reason,
            )
    if ctx.executor is not None:
        ctx.executor.cancel_local(payload.job_id, payload.component, payload.attempt)
    log.info("task_cancel_recorded", component=payload.component, tasks=len(found))


def handle_federation_data(
    envelope: Envelope, payload: Payload, tx: InboxTransaction, *, ctx: WorkerContext
) -> None:
    """federation.data: file it in the mailbox, committed with the done marker."""
    if ctx.endpoint is None:
        raise Reject("this worker runs no tasks")
    ctx.endpoint.mailbox.file(envelope, payload, tx)


HANDLERS = {
    "demo.ping": handle_ping,
    "task.run": handle_task_run,
    "task.cancel": handle_task_cancel,
    "federation.data": handle_federation_data,
}
"""Message type -> handler. Adding a message type the worker handles is one line here."""


def bind_handlers(ctx: WorkerContext) -> dict[str, EnvelopeHandler]:
    """The handlers with their context bound, as the EnvelopeConsumer wants them."""
    return {name: functools.partial(handler, ctx=ctx) for name, handler in HANDLERS.items()}
