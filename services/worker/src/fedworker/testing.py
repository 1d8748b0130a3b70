"""Test-only hooks of the worker, loaded only when `WorkerSettings.test_hooks` is set.

Nothing here is on the production path: the worker imports this module only when a test (or a
developer) sets FEDMQ_WORKER_TEST_HOOKS=true, and the settings refuse that in production.

- demo.ping: record the ping (table worker_pings) and answer demo.pong (n + 1) on the worker's
  reply topic. The wire kinds stay registered (fedschemas.registry: a kind is never removed
  within a version); only their handler lives here. Tests use it as the smallest message with a
  database effect and an answer: exactly-once, redelivery, tracing and metrics tests ride on it.
- crash_after_effect: die like a SIGKILLed process right after the inbox transaction of one
  message id committed, before the bus can ack it (the crash window the inbox exists for).
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
import structlog
from fedbus import Reject
from fedbus.inbox import Effect, Inbox, InboxTransaction
from fedbus.sql_inbox import create_tables
from fedschemas import DemoPing, DemoPong, Envelope, Payload, new_envelope

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from fedworker.handlers import WorkerContext
    from fedworker.settings import WorkerSettings

log = structlog.get_logger("fedworker")

CRASH_EXIT_CODE = 86
"""The exit status of a worker killed by the crash hook (tests tell it from a real failure)."""

testing_metadata = sa.MetaData()

pings_table = sa.Table(
    "worker_pings",
    testing_metadata,
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


TEST_HANDLERS = {"demo.ping": handle_ping}
"""Message type -> handler, added to fedworker.handlers.HANDLERS when test hooks are on."""


class CrashAfterCommit(Inbox):
    """Dies like a SIGKILLed process right after `message_id`'s transaction committed, before
    the bus can ack it."""

    def __init__(self, inner: Inbox, message_id: str) -> None:
        self._inner = inner
        self._message_id = message_id

    def process(self, message_id: str, effect: Effect) -> bool:
        ran = self._inner.process(message_id, effect)
        if ran and message_id == self._message_id:
            log.warning("crash_hook_fired", message_id=message_id)
            sys.stdout.flush()
            os._exit(CRASH_EXIT_CODE)
        return ran

    def is_done(self, message_id: str) -> bool:
        return self._inner.is_done(message_id)

    def close(self) -> None:
        self._inner.close()


def install(settings: WorkerSettings, engine: Engine, inbox: Inbox) -> Inbox:
    """Create the hooks' table and return the inbox the worker should use (wrapped by the crash
    hook when `crash_after_effect` names a message)."""
    create_tables(testing_metadata, engine)
    log.warning("test_hooks_enabled", crash_after_effect=settings.crash_after_effect)
    if settings.crash_after_effect:
        return CrashAfterCommit(inbox, settings.crash_after_effect)
    return inbox
