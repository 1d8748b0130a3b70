"""The audit's read models on the bus, for the gateway's /api/v1/audit and `fedmq audit`.

Request/reply on `svc.audit.rpc` (party-local: the gateway never relays it), JSON both ways:
{"op": "events", "job_id", "after", "limit"} -> {"ok": true, "data": [record, ...]};
{"op": "alerts", "job_id"?} -> findings of severity warn and critical;
{"op": "report", "job_id"} -> fedaudit.report.job_report;
{"op": "export"} -> {"ok": true, "data": "<JSON lines>"} (fedaudit.verify reads it).
A bad request gets {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
from typing import Any, Final

import structlog
from fedbus import Bus, Delivery, Subscription
from fedschemas import topics

from fedaudit import store
from fedaudit.report import job_report
from fedaudit.rules.state import AuditPolicy

log = structlog.get_logger("fedaudit")

AUDIT_RPC_TOPIC: Final = topics.AUDIT_RPC
MAX_EVENTS: Final = 10_000


class AuditRpc:
    def __init__(self, bus: Bus, engine: Any, policy: AuditPolicy, public_key: str) -> None:
        self.bus, self.engine, self.policy, self.public_key = bus, engine, policy, public_key
        self._subscription: Subscription | None = None

    def start(self) -> None:
        self.bus.declare(AUDIT_RPC_TOPIC)
        self._subscription = self.bus.subscribe(AUDIT_RPC_TOPIC, self._handle)

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()

    def _handle(self, delivery: Delivery) -> None:
        try:
            request = json.loads(delivery.body)
            answer: dict[str, Any] = {"ok": True, "data": self.answer(request)}
        except (ValueError, KeyError, TypeError) as exc:
            answer = {"ok": False, "error": f"bad audit request: {exc}"}
        if delivery.reply_to:
            self.bus.reply(delivery, json.dumps(answer, default=str).encode())

    def answer(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        job_id = request.get("job_id")
        with self.engine.connect() as conn:
            if op == "events":
                limit = min(int(request.get("limit", 1000)), MAX_EVENTS)
                after = int(request.get("after", 0))
                return list(store.iter_records(conn, job_id=str(job_id), after=after, limit=limit))
            if op == "alerts":
                return store.list_findings(conn, job_id=str(job_id) if job_id else None)
            if op == "report":
                return job_report(conn, self.policy, str(job_id), self.public_key)
            if op == "export":
                return "\n".join(store.export_lines(conn, self.policy.party_id, self.public_key))
        raise ValueError(f"unknown op {op!r} (events, alerts, report, export)")
