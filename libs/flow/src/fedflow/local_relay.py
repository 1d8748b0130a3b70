"""LocalRelay: both gateways of every party pair, inside one process (standalone mode).

Each party has its own in-memory broker. A party sends to remote party P by publishing to
`out.<P>` on its own broker, as on the real stacks; the relay consumes every `out.<P>`, signs
the envelope with the source party's Ed25519 key (the sending gateway's job), verifies it
against the source's public key (the receiving gateway's job), records what crossed, and
publishes it on P's broker at `svc.worker`. Only the relay sees envelopes of both parties, and
only as the wire sees them: encoded, signed, payloads opaque to it except for the declared
kind and size it records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fedbus import Bus, Delivery, Message, Reject, Subscription
from fedcrypto.signing import BadSignature, SigningKey, VerifyKey
from fedschemas import (
    FederationData,
    MalformedMessage,
    canonical_bytes,
    decode_envelope,
    decode_payload,
    encode_envelope,
    topics,
)

INBOUND_TOPIC = topics.WORKER


def outbound_topic(party_id: str) -> str:
    """The local topic a party publishes to for remote party `party_id` (its gateway drains it)."""
    return topics.out_topic(party_id)


@dataclass(frozen=True)
class Crossing:
    """One envelope that crossed between parties, as the relay recorded it."""

    message_type: str
    source: str
    destination: str
    tag: str
    iteration: int
    kind: str
    bytes: int


@dataclass
class CrossingLog:
    """What crossed between sites; the standalone stand-in for the audit service's log."""

    entries: list[Crossing] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, entry: Crossing) -> None:
        with self._lock:
            self.entries.append(entry)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.bytes for e in self.entries)

    def snapshot(self) -> list[Crossing]:
        with self._lock:
            return list(self.entries)


class LocalRelay:
    """Plays both gateways of every party pair inside one process."""

    def __init__(
        self,
        buses: dict[str, Bus],
        signing_keys: dict[str, SigningKey],
        log: CrossingLog,
    ) -> None:
        self._buses = buses
        self._signing_keys = signing_keys
        # Each "gateway" only knows the peers' public keys, as it would from their certificates.
        self._verify_keys: dict[str, VerifyKey] = {
            party: key.verify_key() for party, key in signing_keys.items()
        }
        self._log = log
        self._subscriptions: list[Subscription] = []

    def start(self) -> None:
        for source, bus in self._buses.items():
            for destination in self._buses:
                if destination == source:
                    continue
                topic = outbound_topic(destination)
                bus.declare(topic)
                self._buses[destination].declare(INBOUND_TOPIC)
                self._subscriptions.append(
                    bus.subscribe(topic, self._relay_handler(source, destination))
                )

    def _relay_handler(self, source: str, destination: str) -> Callable[[Delivery], None]:
        def relay(delivery: Delivery) -> None:
            try:
                envelope = decode_envelope(delivery.body)
            except MalformedMessage as exc:
                raise Reject(exc.reason) from exc
            if envelope.source.party_id != source:
                raise Reject(f"envelope claims source {envelope.source.party_id}, sent by {source}")
            if envelope.destination.party_id != destination:
                raise Reject(f"envelope for {envelope.destination.party_id} on out.{destination}")
            # Sending gateway: the party's signing key lives only here.
            if envelope.signature is None:
                key = self._signing_keys[source]
                envelope = envelope.model_copy(
                    update={"signer_key_id": key.verify_key().fingerprint()}
                )
                envelope = envelope.model_copy(
                    update={"signature": key.sign(canonical_bytes(envelope))}
                )
            # Receiving gateway: verify against the source party's public key.
            try:
                self._verify_keys[source].verify(
                    canonical_bytes(envelope), envelope.signature or b""
                )
            except BadSignature as exc:
                raise Reject(f"bad signature from party {source}") from exc
            body = encode_envelope(envelope)
            kind = ""
            if envelope.type == "federation.data":
                kind = decode_payload(envelope, FederationData).kind
            self._buses[destination].publish(
                Message(topic=INBOUND_TOPIC, body=body, message_id=envelope.message_id)
            )
            self._log.add(
                Crossing(
                    message_type=envelope.type,
                    source=source,
                    destination=destination,
                    tag=envelope.tag,
                    iteration=envelope.iteration,
                    kind=kind,
                    bytes=len(body),
                )
            )

        return relay

    def stop(self) -> None:
        for subscription in self._subscriptions:
            subscription.cancel()
        self._subscriptions.clear()
