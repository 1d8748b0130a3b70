"""Worker message handlers: plain functions keyed by message type.

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

import sqlalchemy as sa
import structlog
from fedbus import Reject
from fedbus.inbox import InboxTransaction
from fedbus.runtime import EnvelopeHandler, EnvelopePublisher
from fedschemas import DemoPing, DemoPong, Envelope, Payload, new_envelope

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


HANDLERS = {
    "demo.ping": handle_ping,
}
"""Message type -> handler. Adding a message type the worker handles is one line here."""


def bind_handlers(ctx: WorkerContext) -> dict[str, EnvelopeHandler]:
    """The handlers with their context bound, as the EnvelopeConsumer wants them."""
    return {name: functools.partial(handler, ctx=ctx) for name, handler in HANDLERS.items()}
