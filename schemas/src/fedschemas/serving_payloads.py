"""Payload models of the serving service (area "serving").

Kept beside payloads.py, like audit_payloads.py, so that serving's models can change without
touching the file every other message type lives in; registered in registry.py like every other
type and following the same rules (docs/wire.md).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field

from fedschemas.base import PartyId, Payload, Timestamp

MAX_EVENT_DETAIL: Final = 1 << 16

ServingAction = Literal[
    "publish",
    "propose",
    "hosts_accepted",
    "accept",
    "delete",
    "import",
    "bind",
    "canary",
    "switch",
    "rollback",
    "unbind_started",
    "unbind",
]
"""What changed in a party's serving registry (docs/serving.md, "Model lifecycle")."""

ServingName = Annotated[str, Field(max_length=128)]


class ServingEvent(Payload):
    """serving.event: one lifecycle action of a party's serving registry (a model published,
    proposed, accepted, deleted or imported; a service bound, canaried, switched, rolled back
    or unbound), sent by the party's serving service to its own audit service (party-local, on
    svc.serving.events) once the action is committed, so that the audit's hash-chained log holds
    it beside the training traffic (docs/serving.md, docs/audit.md).

    `event_id` is the row id in the party's `serving_events` table: the serving service may
    send one event twice (it resends what it could not confirm), and the message id built from
    it lets the audit keep one. `detail` is the registry's own record of the change (canonical
    JSON: before and after, the job, the state, who proposed or signed it); it names models,
    versions and parties, never weights or features.
    """

    party_id: PartyId
    event_id: Annotated[int, Field(ge=1, le=2**63 - 1)]
    at: Timestamp
    action: ServingAction
    service_id: ServingName = ""
    model_name: ServingName = ""
    version: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    owner_party: PartyId | None = None
    """The guest whose model it is (at a host: the proposing guest); None for service actions,
    which are the guest's own."""
    detail: Annotated[str, Field(max_length=MAX_EVENT_DETAIL)] = "{}"
