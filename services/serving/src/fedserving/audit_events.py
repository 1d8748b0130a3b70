"""Forwards the serving registry's lifecycle events to the party's audit service.

An outbox: every lifecycle action is a `serving_events` row written in the same transaction as
the change (fedserving.registry), with `audited = false`. The forwarder publishes each such row
as a `serving.event` envelope on `svc.serving.events` (fedschemas.topics.SERVING_EVENTS), which
the party's audit consumes and chains into its log, and marks the row audited once the broker
confirmed it. So an action that took effect reaches the audit even when the broker was away at
that moment (it is sent at the next pass), and none is lost to a crash between the commit and
the publish.

At-least-once: a crash between the confirm and the mark, or two replicas passing over the same
rows, sends an event twice. Its message id is built from the party, the row id and the row's
time, so the audit (which keeps one record per topic and message id) records it once.

Wakes on each committed action (`wake`) and every `interval_s` besides (retries after a failed
publish). One thread per serving process.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

import structlog
from fedbus.runtime import EnvelopePublisher
from fedschemas import Envelope, PartyRef, topics
from fedschemas.serving_payloads import MAX_EVENT_DETAIL, ServingEvent

from fedserving.registry import Registry

log = structlog.get_logger("fedserving")

BATCH = 200


def event_envelope(publisher: EnvelopePublisher, row: dict[str, Any]) -> Envelope:
    """The serving.event envelope of one `serving_events` row (party-local: the party's serving
    service to its own audit)."""
    party = publisher.source.party_id
    detail = str(row["detail"])
    try:
        owner = json.loads(detail).get("owner_party")
    except ValueError:
        owner = None
    if len(detail) > MAX_EVENT_DETAIL:  # never seen: the registry writes small records
        detail = json.dumps({"truncated": True, "length": len(detail)})
    at = datetime.fromisoformat(str(row["at"]))
    payload = ServingEvent(
        party_id=party,
        event_id=int(row["id"]),
        at=at,
        action=row["action"],
        service_id=str(row["service_id"]),
        model_name=str(row["model_name"]),
        version=None if row["version"] is None else int(row["version"]),
        owner_party=str(owner) if owner else None,
        detail=detail,
    )
    local = PartyRef(party_id=party, role="local")
    return publisher.envelope(
        payload,
        destination=local,
        job_id="",
        component="",
        task_id="",
        attempt=0,
        # The row's time in the tag: a registry rebuilt from scratch numbers its events from 1
        # again, and those must not read as the audit's earlier records of the same ids.
        tag=f"serving.event@{int(at.timestamp() * 1_000_000)}",
        seq=int(row["id"]),
        created_at=at,
    )


class AuditForwarder:
    def __init__(
        self, registry: Registry, publisher: EnvelopePublisher, *, interval_s: float = 5.0
    ) -> None:
        self.registry = registry
        self.publisher = publisher
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="serving-audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def forward(self) -> int:
        """Publish the events the audit lacks; how many were confirmed."""
        sent = 0
        while True:
            rows = self.registry.unaudited_events(BATCH)
            if not rows:
                return sent
            envelopes = [event_envelope(self.publisher, row) for row in rows]
            self.publisher.send_many(topics.SERVING_EVENTS, envelopes)
            self.registry.mark_audited([int(row["id"]) for row in rows])
            sent += len(rows)
            if len(rows) < BATCH:
                return sent

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                sent = self.forward()
                if sent:
                    log.info("serving_events_audited", count=sent)
            except Exception as exc:  # the broker or the database away: the next pass retries
                log.warning("serving_events_forward_failed", error=f"{type(exc).__name__}: {exc}")
            self._wake.wait(self.interval_s)
