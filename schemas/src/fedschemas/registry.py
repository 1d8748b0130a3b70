"""The one place that lists message types, their current models and their upgrade paths.

Adding a message type is one line in `_MESSAGE_TYPES`. A breaking change to a type keeps the
old model, registers it in `_UPGRADES` under `(type, old_version)` with a pure function that
turns an old instance into the next version, and puts the new model (higher
`payload_version`) in `_MESSAGE_TYPES`. Receivers then decode every registered old version and
upgrade it step by step to the current one; any other version is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fedschemas.audit_payloads import AuditCheckpoint, ColumnStats, DecryptCheck
from fedschemas.base import Payload
from fedschemas.payloads import (
    AuditStop,
    ControlHeartbeat,
    CryptoJob,
    CryptoResult,
    DataRequest,
    DataResponse,
    DemoPing,
    DemoPong,
    FederationData,
    JobAccept,
    JobEnd,
    JobEnded,
    JobHeartbeat,
    JobPropose,
    JobRefuse,
    JobRerun,
    JobStart,
    JobStatus,
    JobStop,
    JobSubmit,
    JobTaskReport,
    RemoteReply,
    RemoteRequest,
    SchedulerRequest,
    SchedulerResponse,
    TableProfile,
    TaskCancel,
    TaskMetrics,
    TaskRun,
    TaskStatus,
    split_job_status,
)
from fedschemas.serving_payloads import ServingEvent

# Type names: lower-case dotted, "<area>.<name>"; the area groups topics and audit rules.
_MESSAGE_TYPES: dict[str, type[Payload]] = {
    "demo.ping": DemoPing,
    "demo.pong": DemoPong,
    "federation.data": FederationData,
    "control.heartbeat": ControlHeartbeat,
    "task.run": TaskRun,
    "task.status": TaskStatus,
    "task.cancel": TaskCancel,
    "task.metrics": TaskMetrics,
    "control.table_profile": TableProfile,
    "job.submit": JobSubmit,
    "job.propose": JobPropose,
    "job.accept": JobAccept,
    "job.refuse": JobRefuse,
    "job.status": JobStatus,  # superseded: SUPERSEDED below
    "job.start": JobStart,
    "job.end": JobEnd,
    "job.heartbeat": JobHeartbeat,
    "job.task_report": JobTaskReport,
    "job.stop": JobStop,
    "job.rerun": JobRerun,
    "scheduler.request": SchedulerRequest,
    "scheduler.response": SchedulerResponse,
    "crypto.job": CryptoJob,
    "crypto.result": CryptoResult,
    "data.request": DataRequest,
    "data.response": DataResponse,
    "rpc.request": RemoteRequest,
    "rpc.reply": RemoteReply,
    "gateway.job_ended": JobEnded,
    "control.audit_stop": AuditStop,
    "audit.checkpoint": AuditCheckpoint,
    "report.decrypt_check": DecryptCheck,
    "report.column_stats": ColumnStats,
    "serving.event": ServingEvent,
}

MESSAGE_TYPES: Mapping[str, type[Payload]] = MappingProxyType(_MESSAGE_TYPES)
"""Message type name -> current payload model (read-only view)."""


@dataclass(frozen=True)
class Upgrade:
    """How to read an old version: its model, and a pure function to the next version."""

    model: type[Payload]
    to_next: Callable[[Payload], Payload]


_UPGRADES: dict[tuple[str, int], Upgrade] = {}

UPGRADES: Mapping[tuple[str, int], Upgrade] = MappingProxyType(_UPGRADES)
"""(type, old version) -> Upgrade (read-only view)."""


_SUPERSEDED: dict[str, Callable[[Payload], Payload]] = {
    "job.status": split_job_status,  # type: ignore[dict-item]  # takes a JobStatus
}

SUPERSEDED: Mapping[str, Callable[[Payload], Payload]] = MappingProxyType(_SUPERSEDED)
"""Type -> pure function to the message type(s) that replaced it (read-only view).

When one type carried several meanings, each meaning becomes a new type (only adding, as
within a version), and the old type stays registered so the previous version's senders are
still read: a receiver maps an old message to its successor with this function and handles
only the successors. Senders keep sending the old type until every receiver reads the new
ones ("upgrade readers before writers")."""


def current_version(type_name: str) -> int:
    """The version senders of `type_name` use now; KeyError for an unknown type."""
    return MESSAGE_TYPES[type_name].payload_version


def readable_versions(type_name: str) -> list[int]:
    """Every version of `type_name` this build decodes, oldest first; [] for unknown types."""
    if type_name not in MESSAGE_TYPES:
        return []
    old = sorted(v for (t, v) in UPGRADES if t == type_name)
    return [*old, current_version(type_name)]


def is_readable(type_name: str, version: int) -> bool:
    """True when `version` of `type_name` is current or upgrades step by step to current."""
    if type_name not in MESSAGE_TYPES:
        return False
    current = current_version(type_name)
    while version < current:
        if (type_name, version) not in UPGRADES:
            return False
        version += 1
    return version == current


def payload_type(model_cls: type[Payload]) -> str:
    """The registered type name of a payload model (current or an old, upgradable version)."""
    for name, model in MESSAGE_TYPES.items():
        if model is model_cls:
            return name
    for (name, _version), upgrade in UPGRADES.items():
        if upgrade.model is model_cls:
            return name
    raise KeyError(f"{model_cls.__qualname__} is not a registered message type")
