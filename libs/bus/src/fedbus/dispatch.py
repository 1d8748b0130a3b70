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
    Accepted,
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

REASSEMBLED_BATCH_BYTES = 256 * 1024 * 1024
"""Reassembled (chunked) bytes one batch holds before it is handed to the batch handler: with
the relay's 32 MiB messages, 8 of them in flight at once (see `settle_batch`)."""

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
    return _settle_accepted(
        reassembler.accept(delivery, queue=source),
        delivery,
        handler,
        max_deliveries=max_deliveries,
        reassembler=reassembler,
        max_frame_bytes=max_frame_bytes,
        dead_letter=dead_letter,
        source=source,
        refuse=refuse,
    )


def _settle_accepted(
    accepted: Accepted,
    delivery: Delivery,
    handler: Handler,
    *,
    max_deliveries: int,
    reassembler: Reassembler,
    max_frame_bytes: int,
    dead_letter: DeadLetterFn,
    source: str,
    refuse: RefuseFn | None,
) -> Settlement:
    """The per-message path for a delivery the reassembler has already accepted."""
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
    batch_bytes: int | None = None,
) -> list[Settlement]:
    """Settle a group: whole and reassembled messages through `batch_handler`, the rest one by
    one.

    Returns one Settlement per delivery, aligned with `deliveries`. Each delivery is accepted by
    the reassembler in delivery order; a chunk that completes its set puts the reassembled
    message into the batch at that chunk's place, so several large messages reach the batch
    handler together (the relay sends them side by side). Reassembled bodies are held in
    memory until their batch is handled, so a batch is cut (handed to `batch_handler` before
    the next chunk is accepted) once its reassembled bodies reach `batch_bytes` (default
    `REASSEMBLED_BATCH_BYTES`): reassembled bytes in memory at once stay below `batch_bytes`
    plus one message. Stored chunks, invalid sets, the deliveries the batch handler handed
    back, and a whole batch when it raised go through the per-message path (reassembly
    already done, Reject, requeue, the delivery limit), the handed-back ones right after their
    batch, so their bodies too are let go before the next batch. A second completion of one
    set within the group (a duplicate of its last chunk) waits for the per-message path after
    the batches, where it finds the set finished (ack) or, if the first failed, handles it."""
    budget = REASSEMBLED_BATCH_BYTES if batch_bytes is None else batch_bytes
    settlements: list[Settlement | None] = [None] * len(deliveries)
    accepted_at: list[Accepted | None] = [None] * len(deliveries)
    batch: list[int] = []
    batch_sets: set[str] = set()
    reassembled = 0

    def one_by_one(i: int) -> None:
        delivery = deliveries[i]
        source = delivery.topic if queue is None else queue
        accepted = accepted_at[i]
        if accepted is None:  # a duplicate completion: accepted again, now
            accepted = reassembler.accept(delivery, queue=source)
        settlements[i] = _settle_accepted(
            accepted,
            delivery,
            handler,
            max_deliveries=max_deliveries,
            reassembler=reassembler,
            max_frame_bytes=max_frame_bytes,
            dead_letter=dead_letter,
            source=source,
            refuse=refuse,
        )
        accepted_at[i] = None  # lets go of a reassembled body

    def flush() -> None:
        nonlocal reassembled
        handled = _run_batch([accepted_at[i] for i in batch], batch_handler)
        for i, done in zip(batch, handled, strict=True):
            accepted = accepted_at[i]
            if done:
                settlements[i] = _ack(
                    accepted if isinstance(accepted, Complete) else None, reassembler
                )
                accepted_at[i] = None
            else:
                one_by_one(i)
        batch.clear()
        batch_sets.clear()
        reassembled = 0

    for i, delivery in enumerate(deliveries):
        if not is_chunk(delivery.headers):
            accepted_at[i] = Whole(delivery)
            batch.append(i)
            continue
        if reassembled >= budget:
            flush()
        accepted = reassembler.accept(delivery, queue=delivery.topic if queue is None else queue)
        if isinstance(accepted, Complete) and accepted.info.message_id in batch_sets:
            continue  # a duplicate completion: settled after the batch (see above)
        accepted_at[i] = accepted
        if isinstance(accepted, Complete):
            batch.append(i)
            batch_sets.add(accepted.info.message_id)
            reassembled += len(accepted.delivery.body)
    if batch:
        flush()
    for i, done in enumerate(settlements):
        if done is None:
            one_by_one(i)
    return [done for done in settlements if done is not None]


def _run_batch(batch: list[Accepted | None], batch_handler: BatchHandler) -> list[bool]:
    """Hand one batch to `batch_handler`; which of its messages it handled (all False when it
    raised: the group falls back to the per-message path)."""
    group: list[Delivery] = []
    for accepted in batch:
        assert isinstance(accepted, Whole | Complete)
        group.append(accepted.delivery)
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
        return [False] * len(group)
    return [id(d) not in left for d in group]


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
