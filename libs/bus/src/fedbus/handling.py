"""What a handler's outcome means for a delivery, decided once for every adapter.

Adapters call `run_handler` and then carry out the returned `Outcome` with their broker's
primitives (ack, nack/requeue, publish-to-DLQ-then-ack). Keeping the decision here means
memory://, amqp:// and pulsar:// dead-letter for the same reasons with the same wording.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from fedbus.bus import Delivery, Handler, Reject

log = structlog.get_logger("fedbus")


@dataclass(frozen=True)
class Ack:
    """The handler returned: acknowledge the message."""


@dataclass(frozen=True)
class DeadLetter:
    """Send the message to the topic's dead-letter queue with `reason`, then acknowledge it."""

    reason: str


@dataclass(frozen=True)
class Requeue:
    """The handler failed transiently: return the message to the broker for redelivery."""

    error: str


Outcome = Ack | DeadLetter | Requeue


def describe_error(exc: BaseException) -> str:
    """A short, payload-free description of a handler failure for logs and dead-letter reasons."""
    text = str(exc)
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def delivery_limit_reason(max_deliveries: int, last_error: str) -> str:
    return f"delivery limit ({max_deliveries}) reached: {last_error}"


def run_handler(handler: Handler, delivery: Delivery, max_deliveries: int) -> Outcome:
    """Run `handler` and decide what happens to `delivery`.

    `Reject` dead-letters at once; any other exception requeues until the delivery count
    reaches `max_deliveries`, then dead-letters with the last error as the reason.
    """
    try:
        handler(delivery)
    except Reject as exc:
        log.info(
            "bus_handler_rejected",
            topic=delivery.topic,
            message_id=delivery.message_id,
            reason=exc.reason,
        )
        return DeadLetter(exc.reason)
    except Exception as exc:
        error = describe_error(exc)
        if delivery.delivery_count >= max_deliveries:
            log.warning(
                "bus_delivery_limit_reached",
                topic=delivery.topic,
                message_id=delivery.message_id,
                delivery_count=delivery.delivery_count,
                error=error,
            )
            return DeadLetter(delivery_limit_reason(max_deliveries, error))
        log.warning(
            "bus_handler_failed",
            topic=delivery.topic,
            message_id=delivery.message_id,
            delivery_count=delivery.delivery_count,
            error=error,
        )
        return Requeue(error)
    return Ack()
