"""The durable mailbox and outbox of a party's federation traffic.

Mailbox (`flow_mailbox`): every federation.data envelope addressed to this party is filed by
the `svc.worker` consumer in the same transaction as its inbox done marker, keyed by what a
receiver asks for: (job, component, attempt, tag, iteration, seq, source party and role,
destination party and role). A component receives by that key, in any arrival order, and a
receive survives a crash of the receiving process: the envelope is in the database, not in
memory.

Outbox (`flow_outbox`): every federation.data envelope a task sends is recorded (committed)
before it is published, with the declared order of its tag in the component's protocol. This
is what resume uses (docs/components.md, "Resume rule"):
  - a task resuming from its checkpoint at iteration k re-publishes its recorded messages of
    iteration k, with their original ids and bytes;
  - a send whose id is already recorded re-publishes the recorded envelope, after checking that
    the new payload is identical (a component whose sends are not a deterministic function of
    its checkpoint and received messages raises `NondeterministicResend` instead of letting
    two versions of one message id exist);
  - when a duplicate of a message this party already received arrives (the sender resumed and
    re-sent it), this party answers from its own state: it re-publishes its recorded messages
    of the same task and iteration to that sender whose order is higher than the duplicate's.
    Orders strictly increase along such a chain, so answers to answers end.
Rows of iterations before a task's last checkpoint are pruned at each checkpoint (a peer is at
most one iteration behind a checkpoint: it already sent that iteration's messages); all of a
task's rows go when the task ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from fedbus import Reject
from fedbus.inbox import BatchItem, Effect, Inbox, InboxTransaction
from fedschemas import Envelope, Payload, decode_envelope, encode_envelope
from sqlalchemy.engine import Engine

from fedflow.db import flow_metadata, task_columns, task_rows
from fedflow.task import TaskKey

log = structlog.get_logger("fedflow.mailbox")

mailbox_table = sa.Table(
    "flow_mailbox",
    flow_metadata,
    sa.Column("message_id", sa.String(255), primary_key=True),
    *task_columns("job_id", "component", "attempt", primary_key=False),
    sa.Column("tag", sa.String(256), nullable=False),
    sa.Column("iteration", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("source_party", sa.String(64), nullable=False),
    sa.Column("source_role", sa.String(16), nullable=False),
    sa.Column("destination_party", sa.String(64), nullable=False),
    sa.Column("destination_role", sa.String(16), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("envelope", sa.LargeBinary, nullable=False),
    sa.Index("ix_flow_mailbox_lookup", "job_id", "component", "attempt", "tag", "iteration"),
)

outbox_table = sa.Table(
    "flow_outbox",
    flow_metadata,
    sa.Column("message_id", sa.String(255), primary_key=True),
    *task_columns("job_id", "component", primary_key=False),
    sa.Column("component_type", sa.String(128), nullable=False),
    *task_columns("attempt", "party_id", "role", primary_key=False),
    sa.Column("destination_party", sa.String(64), nullable=False),
    sa.Column("destination_role", sa.String(16), nullable=False),
    sa.Column("tag", sa.String(256), nullable=False),
    sa.Column("iteration", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("msg_order", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(256), nullable=False),
    sa.Column("envelope", sa.LargeBinary, nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_flow_outbox_task", "job_id", "component", "attempt", "party_id", "iteration"),
)


class NondeterministicResend(RuntimeError):
    """A task re-sent a message id with a different payload than the first time."""


@dataclass(frozen=True)
class Filed:
    """A mailbox row's key fields (no payload)."""

    message_id: str
    job_id: str
    component: str
    attempt: int
    tag: str
    iteration: int
    seq: int
    source_party: str
    source_role: str
    destination_party: str
    destination_role: str


@dataclass(frozen=True)
class Recorded:
    """An outbox row: a message this party sent, ready to be re-published."""

    message_id: str
    topic: str
    envelope: bytes
    order: int
    component_type: str


def component_of(task_id: str) -> str | None:
    """The component named by a federation task id "<job>/<component>/<party>/<role>"."""
    parts = task_id.split("/")
    return parts[1] if len(parts) == 4 and all(parts) else None


class Mailbox:
    """Received federation.data envelopes of every task at this party."""

    def __init__(self, engine: Engine, party_id: str) -> None:
        self.engine = engine
        self.party_id = party_id

    def file(self, envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        """The federation.data handler: file the envelope, in the inbox's transaction."""
        if envelope.destination.party_id != self.party_id:
            raise Reject(
                f"federation.data for party {envelope.destination.party_id} "
                f"reached party {self.party_id}"
            )
        component = component_of(envelope.task_id)
        if component is None:
            raise Reject(f"federation.data with task id {envelope.task_id!r} names no component")
        tx.require_session().execute(
            sa.insert(mailbox_table),
            {
                "message_id": envelope.message_id,
                "job_id": envelope.job_id,
                "component": component,
                "attempt": envelope.attempt,
                "tag": envelope.tag,
                "iteration": envelope.iteration,
                "seq": envelope.seq,
                "source_party": envelope.source.party_id,
                "source_role": envelope.source.role,
                "destination_party": envelope.destination.party_id,
                "destination_role": envelope.destination.role,
                "received_at": datetime.now(UTC),
                "envelope": encode_envelope(envelope),
            },
        )

    def find(
        self,
        key: TaskKey,
        *,
        tag: str,
        iteration: int,
        seq: int,
        source_party: str,
        source_role: str,
    ) -> Envelope | None:
        c = mailbox_table.c
        query = sa.select(c.envelope).where(
            c.job_id == key.job_id,
            c.component == key.component,
            c.attempt == key.attempt,
            c.tag == tag,
            c.iteration == iteration,
            c.seq == seq,
            c.source_party == source_party,
            c.source_role == source_role,
            c.destination_party == key.party_id,
            c.destination_role == key.role,
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).scalar_one_or_none()
        return None if row is None else decode_envelope(row)

    def lookup(self, message_id: str) -> Filed | None:
        c = mailbox_table.c
        query = sa.select(*(c[name] for name in Filed.__dataclass_fields__)).where(
            c.message_id == message_id
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else Filed(**row._asdict())

    def purge(self, key: TaskKey) -> int:
        c = mailbox_table.c
        with self.engine.begin() as conn:
            gone = conn.execute(
                sa.delete(mailbox_table).where(
                    c.job_id == key.job_id,
                    c.component == key.component,
                    c.attempt == key.attempt,
                    c.destination_party == key.party_id,
                    c.destination_role == key.role,
                )
            )
        return int(gone.rowcount)


class Outbox:
    """Sent federation.data envelopes of every task at this party (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self, key: TaskKey, component_type: str, envelope: Envelope, *, topic: str, order: int
    ) -> Envelope:
        """Record `envelope` (committed) and return what to publish.

        If its id is already recorded, returns the recorded envelope (same bytes as the first
        send) after checking that the payload is identical.
        """
        c = outbox_table.c
        with self.engine.begin() as conn:
            stored = conn.execute(
                sa.select(c.envelope).where(c.message_id == envelope.message_id)
            ).scalar_one_or_none()
            if stored is not None:
                first = decode_envelope(stored)
                if first.payload != envelope.payload:
                    raise NondeterministicResend(
                        f"task {key.task_id} re-sent tag {envelope.tag!r} iteration "
                        f"{envelope.iteration} seq {envelope.seq} with a different payload; "
                        "sends must be a deterministic function of the checkpoint and the "
                        "messages received"
                    )
                return first
            conn.execute(
                sa.insert(outbox_table),
                {
                    "message_id": envelope.message_id,
                    "job_id": key.job_id,
                    "component": key.component,
                    "component_type": component_type,
                    "attempt": key.attempt,
                    "party_id": key.party_id,
                    "role": key.role,
                    "destination_party": envelope.destination.party_id,
                    "destination_role": envelope.destination.role,
                    "tag": envelope.tag,
                    "iteration": envelope.iteration,
                    "seq": envelope.seq,
                    "msg_order": order,
                    "topic": topic,
                    "envelope": encode_envelope(envelope),
                    "sent_at": datetime.now(UTC),
                },
            )
        return envelope

    def recorded(
        self,
        key: TaskKey,
        iteration: int,
        *,
        destination_party: str | None = None,
        above_order: int | None = None,
    ) -> list[Recorded]:
        c = outbox_table.c
        query = sa.select(c.message_id, c.topic, c.envelope, c.msg_order, c.component_type).where(
            task_rows(outbox_table, key), c.iteration == iteration
        )
        if destination_party is not None:
            query = query.where(c.destination_party == destination_party)
        if above_order is not None:
            query = query.where(c.msg_order > above_order)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(c.msg_order, c.tag, c.seq)).all()
        return [
            Recorded(r.message_id, r.topic, r.envelope, r.msg_order, r.component_type) for r in rows
        ]

    def prune(self, key: TaskKey, *, before_iteration: int) -> int:
        """Forget rows of iterations 0 .. before_iteration - 1 (once-messages are kept)."""
        c = outbox_table.c
        with self.engine.begin() as conn:
            gone = conn.execute(
                sa.delete(outbox_table).where(
                    task_rows(outbox_table, key),
                    c.iteration >= 0,
                    c.iteration < before_iteration,
                )
            )
        return int(gone.rowcount)

    def purge(self, key: TaskKey) -> int:
        with self.engine.begin() as conn:
            gone = conn.execute(sa.delete(outbox_table).where(task_rows(outbox_table, key)))
        return int(gone.rowcount)

    def component_type_of(self, key: TaskKey) -> str | None:
        c = outbox_table.c
        query = sa.select(c.component_type).where(task_rows(outbox_table, key))
        with self.engine.connect() as conn:
            return conn.execute(query.limit(1)).scalar_one_or_none()


class AnsweringInbox(Inbox):
    """An inbox that tells `on_duplicate(message_id)` about every duplicate it drops.

    The duplicate's effect still does not run; the callback runs after the (empty)
    transaction, and its errors are logged, never raised (the duplicate is acked either way).
    """

    def __init__(self, inner: Inbox, on_duplicate: Callable[[str], Any]) -> None:
        self.inner = inner
        self._on_duplicate = on_duplicate

    def process(self, message_id: str, effect: Effect) -> bool:
        ran = self.inner.process(message_id, effect)
        if not ran:
            self._answer(message_id)
        return ran

    def process_batch(self, items: Sequence[BatchItem]) -> list[bool]:
        ran = self.inner.process_batch(items)
        for (message_id, _), handled in zip(items, ran, strict=True):
            if not handled:
                self._answer(message_id)
        return ran

    def _answer(self, message_id: str) -> None:
        try:
            self._on_duplicate(message_id)
        except Exception as exc:  # an answer is best effort; the sender retries anyway
            log.warning("duplicate_answer_failed", message_id=message_id, error=str(exc))

    def is_done(self, message_id: str) -> bool:
        return self.inner.is_done(message_id)

    def close(self) -> None:
        self.inner.close()
