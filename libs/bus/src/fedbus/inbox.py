"""The inbox: what makes at-least-once delivery effectively-once for a handler.

Every message a handler acts on has a deterministic id (fedschemas.make_message_id). The inbox
records "done" for that id in the SAME durable transaction as the handler's effect, so:

- the effect and the marker commit together or not at all;
- a redelivery of a message whose transaction committed (the consumer died between commit and
  ack, or the sender re-sent after resuming) finds the marker and is dropped without running the
  effect again, and then acked;
- a crash before the commit leaves neither, and the redelivery runs the effect once.

Effects outside the transaction (publishing a reply) cannot be part of it; they must be
idempotent by themselves, which deterministic message ids give: publish them inside the effect
(before the commit), so a crash re-runs the effect and re-publishes the SAME ids, which the
receiver's inbox drops. Publishing after the commit could lose the reply forever.

`process_batch` is group commit: several messages' effects and markers in ONE transaction, so a
consumer that handles a burst pays one durable commit (one fsync) for all of it instead of one
per message. The batch is all or nothing; a caller whose batch failed processes the same items
one by one, which the markers make safe (see `process_batch`).

Implementations: InMemoryInbox (tests, single process, no durability), SqlInbox (PostgreSQL in
the stack, SQLite in the embedded default), RedisCachedInbox (a Redis cache of done markers in
front of a SqlInbox; Redis is never the only record).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from fedbus.bus import BatchHandler, Delivery, Handler

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


class InboxError(Exception):
    """The inbox was used in a way it cannot serve (e.g. a handler needs a SQL session)."""


@dataclass
class InboxTransaction:
    """The transaction a handler's effect runs in.

    `session` is the SQLAlchemy Session of SqlInbox's transaction: write the effect through it and
    it commits together with the done marker. It is None for InMemoryInbox.
    """

    message_id: str
    session: Session | None = None

    def require_session(self) -> Session:
        """The SQL session, for handlers whose effect is a database write."""
        if self.session is None:
            raise InboxError("this handler writes to a database: use a SqlInbox")
        return self.session


Effect = Callable[[InboxTransaction], None]

BatchItem = tuple[str, Effect]
"""(message_id, effect): one message of a `process_batch` call."""


class Inbox(abc.ABC):
    """Done markers for message ids, committed with the handler's effect."""

    @abc.abstractmethod
    def process(self, message_id: str, effect: Effect) -> bool:
        """Run `effect` and mark `message_id` done in one transaction.

        Returns True when the effect ran and committed; False, without running the effect, when
        the id was already done (including by a concurrent duplicate that committed first). If
        `effect` raises, nothing is recorded and the exception propagates (the bus requeues).
        """

    def process_batch(self, items: Sequence[BatchItem]) -> list[bool]:
        """Run the effects of several messages and mark them done, in one transaction.

        Returns, per item and in order, what `process` would: True when the effect ran, False
        when the id was already done, by an earlier transaction or by an earlier item of the same
        batch (the first occurrence of an id runs, later ones are dropped). Effects run in item
        order and share the transaction (`InboxTransaction.session`).

        If an effect raises, the exception propagates. Inboxes with real transactions
        (SqlInbox) then record nothing of the batch. This default runs `process` per item, each
        in its own transaction: the items before the failure stay done. Either way, processing
        the same items again (one by one, as consumers do after a failed batch) runs every
        effect exactly once overall.
        """
        return [self.process(message_id, effect) for message_id, effect in items]

    @abc.abstractmethod
    def is_done(self, message_id: str) -> bool:
        """Whether `message_id` was processed (operators and tests)."""

    def close(self) -> None:  # noqa: B027  # optional hook: most inboxes hold connections
        """Release connections."""


TransactionalHandler = Callable[[Delivery, InboxTransaction], None]


def deduplicating(handler: TransactionalHandler, inbox: Inbox) -> Handler:
    """Wrap a bus handler so each message id's effect runs at most once (per inbox).

    The wrapped handler returns normally for a duplicate, so the bus acks and drops it.
    """

    def handle(delivery: Delivery) -> None:
        inbox.process(delivery.message_id, lambda tx: handler(delivery, tx))

    return handle


def deduplicating_batch(handler: TransactionalHandler, inbox: Inbox) -> BatchHandler:
    """The batch counterpart of `deduplicating`, for `Bus.subscribe_batched`: the effects of a
    whole group and their done markers commit in one transaction (`Inbox.process_batch`).

    Pass `deduplicating(handler, inbox)` as the per-message handler next to it: it is what runs
    when the batch raises (a handler failed, a deadlock was broken), one delivery at a time.
    """

    def handle(deliveries: Sequence[Delivery]) -> Sequence[Delivery]:
        inbox.process_batch([(d.message_id, partial(handler, d)) for d in deliveries])
        return ()

    return handle
