"""The one place that names fedmq's bus topics and says which message types go where.

Every service, library and test takes topic names from here instead of writing "svc.worker" by
hand. A topic is local to one party's broker; only the gateway moves messages between parties:

- outbound, a service publishes a message for party P on `out.<P>` (`out_topic(P)`); the
  party's gateway drains every `out.<peer>` topic, signs, and sends over the site link;
- inbound, the receiving gateway verifies the envelope and publishes it on the service topic
  its message type's AREA routes to (`GATEWAY_ROUTES`, "<area>." -> topic).

A message type is "<area>.<name>" (fedschemas.registry); the area decides the topic that
handles it and whether it may cross sites at all. `AREAS` below is that table; a test checks that
every registered message type has an area here, so adding a type to the registry without
routing it fails the suite rather than the first message in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

WORKER: Final = "svc.worker"
"""The workers' task queue: task.run from the party's scheduler, federation data and demo
pings from other parties."""
WORKER_REPLIES: Final = "svc.worker.replies"
"""Where a worker publishes answers (demo.pong) to requests that named no reply topic."""
SCHEDULER: Final = "svc.scheduler"
"""The scheduler's commands: job.* and task.* from its own workers, API and peers."""
SCHEDULER_RPC: Final = "svc.scheduler.rpc"
"""Request/reply between the REST API or CLI and the scheduler (scheduler.request/response)."""
DATA_RPC: Final = "svc.data.rpc"
"""Request/reply between the REST API and the party's data service, which its workers serve
(data.request/response: the party's tables)."""
CRYPTO: Final = "svc.crypto"
"""The party's pool of crypto replicas (crypto.job); never relayed to another party."""
AUDIT: Final = "svc.audit"
"""The audit service's inbox (audit.* from peers)."""
AUDIT_REPORTS: Final = "svc.audit.reports"
"""What the party's own workers report to its audit service (report.*: checks of decrypted
plaintexts, the column statistics of the tables they read; party-local, never relayed:
docs/audit.md)."""
AUDIT_RPC: Final = "svc.audit.rpc"
"""Request/reply between the REST API or CLI and the audit service (its read models, JSON;
party-local, never relayed: docs/audit.md)."""
SERVING: Final = "svc.serving"
"""The serving service's calls from other parties (through the gateways' request/reply: the
gateway's rpc_services exposes it to its peers)."""
SERVING_RPC: Final = "svc.serving.rpc"
"""Request/reply between the REST API or CLI and the serving service (party-local)."""
SERVING_EVENTS: Final = "svc.serving.events"
"""The serving service's lifecycle events (serving.event) to its own party's audit service,
which consumes this topic; never relayed to another party."""
GATEWAY: Final = "svc.gateway"
"""The gateway's own inbox: gateway.job_ended from the party's scheduler (replay guard)."""
GATEWAY_RPC: Final = "svc.gateway.rpc"
"""Request/reply: a service's calls to another party's service (rpc.request), which the
party's gateway carries over the site link and answers with the remote rpc.reply."""
TRANSIENT: Final = frozenset({SERVING, SERVING_RPC, GATEWAY_RPC})
"""Request/reply topics of online serving, whose queues hold nothing worth keeping: each
request has a deadline of at most the gateway's rpc_max_timeout_s, its caller gives up at that
deadline, and nothing resends it, so a copy that survived a broker restart would only be
dropped as expired. Broker adapters may keep them in memory (RabbitMQ: a non-durable classic
queue instead of a quorum queue; docs/serving.md, "Latency")."""
OUT_PREFIX: Final = "out."
"""Prefix of the outbound topics: `out.<party>` holds what is bound for that party."""


def out_topic(party_id: str) -> str:
    """The local topic whose messages the gateway relays to party `party_id`."""
    return f"{OUT_PREFIX}{party_id}"


@dataclass(frozen=True)
class Area:
    """Where the messages of one area go: the local topic that handles them, and whether a
    gateway accepts them from another party."""

    topic: str
    cross_site: bool


_AREAS: dict[str, Area] = {
    # Order matters only for GATEWAY_ROUTES' repr (settings files list it as written).
    "demo": Area(WORKER, cross_site=True),
    "federation": Area(WORKER, cross_site=True),
    "job": Area(SCHEDULER, cross_site=True),
    "task": Area(SCHEDULER, cross_site=True),
    "audit": Area(AUDIT, cross_site=True),
    # Party-local areas: a peer has no business sending them, so the gateway refuses them.
    # control.heartbeat is declared but never sent; it would be the scheduler's.
    "control": Area(SCHEDULER, cross_site=False),
    "scheduler": Area(SCHEDULER_RPC, cross_site=False),
    "data": Area(DATA_RPC, cross_site=False),
    "crypto": Area(CRYPTO, cross_site=False),
    "serving": Area(SERVING_EVENTS, cross_site=False),
    "report": Area(AUDIT_REPORTS, cross_site=False),
    # The gateway's own messages. rpc.* does cross sites, but only in the link's REQUEST and
    # REPLY frames, never as relayed DATA: so no route, and the relay refuses them.
    "gateway": Area(GATEWAY, cross_site=False),
    "rpc": Area(GATEWAY_RPC, cross_site=False),
}

AREAS: Mapping[str, Area] = MappingProxyType(_AREAS)
"""Message-type area -> where its messages go (read-only view)."""


def area_of(message_type: str) -> str:
    """The area of a type name, the part before its first dot ("job" for "job.status")."""
    return message_type.partition(".")[0]


def topic_for(message_type: str) -> str:
    """The local topic that handles `message_type`; KeyError for a type of no known area."""
    return AREAS[area_of(message_type)].topic


def crosses_sites(message_type: str) -> bool:
    """Whether a gateway relays `message_type` from another party (False for unknown areas)."""
    area = AREAS.get(area_of(message_type))
    return area is not None and area.cross_site


GATEWAY_ROUTES: Mapping[str, str] = MappingProxyType(
    {f"{name}.": area.topic for name, area in _AREAS.items() if area.cross_site}
)
"""Message-type prefix -> local topic where a gateway publishes what arrives from a peer
(the gateway's default `routes` setting; longest prefix wins)."""
