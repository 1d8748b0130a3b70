"""The gateway's own inbox (svc.gateway): what the party's other services tell it.

gateway.job_ended, published by the party's scheduler whenever a job attempt ends (succeeded,
failed or canceled), closes that attempt and every earlier one in the replay guard: from then on
cross-site messages of it are refused as replays (`finished_attempt`). This replaces telling the
gateway through the operator route POST /api/v1/replay/finished, which stays for operators.

Only an attempt is closed, never the whole job: a failed or canceled job can be rerun, and the
rerun's messages carry the next attempt number. The store is idempotent, so a redelivered
message changes nothing.
"""

from __future__ import annotations

import structlog
from fedbus import Bus, Delivery, Reject, Subscription
from fedschemas import MalformedMessage, decode_envelope, decode_payload, topics
from fedschemas.payloads import JobEnded

from fedgateway.verify import FinishedAttempts

log = structlog.get_logger("fedgateway.control")


class ControlConsumer:
    """Consumes svc.gateway and applies each message to the gateway's state."""

    def __init__(
        self,
        bus: Bus,
        finished: FinishedAttempts,
        *,
        party_id: str,
        topic: str = topics.GATEWAY,
    ) -> None:
        self._bus = bus
        self._finished = finished
        self._party_id = party_id
        self._topic = topic
        self._subscription: Subscription | None = None

    def start(self) -> None:
        self._bus.declare(self._topic)
        self._subscription = self._bus.subscribe(self._topic, self.handle, prefetch=16)

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None

    def handle(self, delivery: Delivery) -> None:
        try:
            envelope = decode_envelope(delivery.body)
            ended = decode_payload(envelope, JobEnded)
        except MalformedMessage as exc:
            raise Reject(f"not a gateway.job_ended: {exc.reason}") from None
        # svc.gateway is a party-local topic (the gateway never publishes peers' messages on
        # it), so the source must be this party: a message from elsewhere is a wiring bug.
        if envelope.source.party_id != self._party_id:
            raise Reject(f"gateway.job_ended from party {envelope.source.party_id}")
        self._finished.finish_attempt(ended.job_id, ended.attempt)
        log.info(
            "replay_guard_updated",
            job_id=ended.job_id,
            attempt=ended.attempt,
            state=ended.state,
            by="gateway.job_ended",
        )
