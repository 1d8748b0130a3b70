"""One delivery, start to settlement: reassembly, handler, dead-lettering. Shared by adapters.

An adapter turns a broker message into a `Delivery`, calls `settle`, and carries out the
returned `Settlement` with its own primitives. Dead copies are published through the adapter's
`dead_letter(queue, messages)`, which returns only once they are confirmed, so the original is
acknowledged only after its copy is safe ("never lose it"). If `dead_letter` raises, the
exception propagates and the adapter must requeue the original instead of acking it.

`settle_batch` does the same for a group of deliveries with a batch handler (see
`Bus.subscribe_batched`): one settlement per delivery, in the group's order, so an adapter that
coalesces acks (basic.ack multiple) can apply them in delivery order.

`queue` names the queue a delivery was taken from. It is the delivery's topic for a topic's own
consumers; a fan-out subscription's deliveries keep the topic they were published on, while
their dead copies and their chunk sets belong to the subscription's queue (so a poison message
there never lands in the topic's dead-letter queue, and two queues that both got the chunks of
one message reassemble them apart even in one shared chunk store).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

import structlog

from fedbus.bus import BatchHandler, Delivery, Handler, Message
from fedbus.chunk_store import ChunkSetInfo
from fedbus.chunking import (
    AlreadyDone,
    Complete,
    Invalid,
    Reassembler,
    Stored,
    Whole,
    as_message,
    dead_copy,
    is_chunk,
    split,
)
from fedbus.handling import Ack, DeadLetter, Outcome, describe_error, run_handler

log = structlog.get_logger("fedbus")

DeadLetterFn = Callable[[str, list[Message]], None]
RefuseFn = Callable[[Delivery, str], None]


class SettleOptions(TypedDict):
    """The keyword arguments of `settle` / `settle_batch` a consumer passes to every call."""

    max_deliveries: int
    reassembler: Reassembler
    max_frame_bytes: int
    dead_letter: DeadLetterFn
    queue: str | None
    refuse: RefuseFn | None


"""Answers a dead-lettered request (a delivery with reply_to) with the reason (any error is
the callee's to log: the dead copy is safe already)."""


@dataclass(frozen=True)
class Settlement:
    action: Literal["ack", "requeue", "hold"]
    """ack or requeue this delivery; "hold": keep it unacked until its chunk set is finished."""
    chunk_set: ChunkSetInfo | None = None
    """For "hold": the set it belongs to. For "ack"/"requeue": a set that was finished now, so
    deliveries held for it may be acked too."""


def settle(
    delivery: Delivery,
    handler: Handler,
    *,
    max_deliveries: int,
    reassembler: Reassembler,
    max_frame_bytes: int,
    dead_letter: DeadLetterFn,
    queue: str | None = None,
    refuse: RefuseFn | None = None,
) -> Settlement:
    source = delivery.topic if queue is None else queue
    accepted = reassembler.accept(delivery, queue=source)
    if isinstance(accepted, Whole | Complete):
        outcome = run_handler(handler, accepted.delivery, max_deliveries)
        return _apply(
            outcome,
            accepted.delivery,
            accepted if isinstance(accepted, Complete) else None,
            reassembler,
            max_frame_bytes,
            dead_letter,
            source,
            refuse,
        )
    if isinstance(accepted, Stored):
        if reassembler.store.durable:
            return Settlement("ack")
        return Settlement("hold", accepted.info)
    if isinstance(accepted, Invalid):
        dead_letter(
            source, [dead_copy(m, accepted.reason, delivery.topic) for m in accepted.messages]
        )
        if accepted.info is not None:
            reassembler.finish(accepted.info)
        if refuse is not None and delivery.reply_to is not None:
            refuse(delivery, accepted.reason)
        return Settlement("ack", accepted.info)
    assert isinstance(accepted, AlreadyDone)
    return Settlement("ack")


def settle_batch(
    deliveries: Sequence[Delivery],
    handler: Handler,
    batch_handler: BatchHandler,
    *,
    max_deliveries: int,
    reassembler: Reassembler,
    max_frame_bytes: int,
    dead_letter: DeadLetterFn,
    queue: str | None = None,
    refuse: RefuseFn | None = None,
) -> list[Settlement]:
    """Settle a group: whole messages through `batch_handler` at once, the rest one by one.

    Returns one Settlement per delivery, aligned with `deliveries`. Chunks, the deliveries the
    batch handler handed back, and the whole group when it raised go through `settle` (the
    per-message path: reassembly, Reject, requeue, the delivery limit)."""
    settlements: list[Settlement | None] = [None] * len(deliveries)
    whole = [i for i, d in enumerate(deliveries) if not is_chunk(d.headers)]
    if whole:
        group = [deliveries[i] for i in whole]
        try:
            # Identity, not equality: two copies of one message in a group compare equal.
            left = {id(d) for d in batch_handler(group)}
        except Exception as exc:
            log.info(
                "bus_batch_fell_back",
                topic=group[0].topic,
                size=len(group),
                error=describe_error(exc),
            )
        else:
            for i in whole:
                if id(deliveries[i]) not in left:
                    settlements[i] = Settlement("ack")
    return [
        done
        if done is not None
        else settle(
            delivery,
            handler,
            max_deliveries=max_deliveries,
            reassembler=reassembler,
            max_frame_bytes=max_frame_bytes,
            dead_letter=dead_letter,
            queue=queue,
            refuse=refuse,
        )
        for delivery, done in zip(deliveries, settlements, strict=True)
    ]


def _apply(
    outcome: Outcome,
    delivery: Delivery,
    complete: Complete | None,
    reassembler: Reassembler,
    max_frame_bytes: int,
    dead_letter: DeadLetterFn,
    queue: str,
    refuse: RefuseFn | None,
) -> Settlement:
    if isinstance(outcome, Ack):
        return _ack(complete, reassembler)
    if isinstance(outcome, DeadLetter):
        # A reassembled message is dead-lettered as chunks again: the DLQ has the same frame
        # limit as the topic. dead_letters() reassembles them when drained.
        copies = split(
            dead_copy(as_message(delivery), outcome.reason, delivery.topic), max_frame_bytes
        )
        dead_letter(queue, copies)
        if refuse is not None and delivery.reply_to is not None:
            refuse(delivery, outcome.reason)
        return _ack(complete, reassembler)
    # Requeue: the chunks of a completed set stay stored; the redelivered last chunk completes
    # the set again and the handler runs with the higher delivery count.
    return Settlement("requeue")


def _ack(complete: Complete | None, reassembler: Reassembler) -> Settlement:
    """Ack a handled (or dead-lettered) message; a reassembled one's set is finished first."""
    if complete is not None:
        reassembler.finish(complete.info)
        return Settlement("ack", complete.info)
    return Settlement("ack")
