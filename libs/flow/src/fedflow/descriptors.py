"""fedflow's light half: what a job IS, without what runs it.

Pipelines (parsing and validation), component parameters, declared protocols and the component
catalogue (names, roles, params models, inputs, outputs, protocols), importable without numpy,
fedcrypto or the runtime: the scheduler, the gateway and the audit service import this module,
never the components' code. The runtime half is the rest of fedflow (fedflow.runner, the
components' code, the federation, the stores, fedflow.kit). tests/flow checks, in a fresh
interpreter, that importing this module leaves numpy and fedcrypto unimported.
"""

from __future__ import annotations

from fedflow.components import (
    CATALOGUE,
    COMPONENT_NAMES,
    ComponentDescriptor,
    ComponentParams,
    InputSpec,
    LabelRule,
    NoParams,
    all_protocols_json,
    descriptor,
    protocol_of,
)
from fedflow.names import TABLE_NAME_PATTERN
from fedflow.pipeline import (
    ROLES,
    ComponentSpec,
    Parties,
    PartyTask,
    Pipeline,
    PipelineError,
    TableUse,
)
from fedflow.protocol import (
    PAYLOAD_KINDS,
    PROTOCOL_ROLES,
    DecryptRule,
    MessageRule,
    Protocol,
    ProtocolError,
    ProtocolGuard,
    ProtocolViolation,
)

__all__ = [
    "CATALOGUE",
    "COMPONENT_NAMES",
    "PAYLOAD_KINDS",
    "PROTOCOL_ROLES",
    "ROLES",
    "TABLE_NAME_PATTERN",
    "ComponentDescriptor",
    "ComponentParams",
    "ComponentSpec",
    "DecryptRule",
    "InputSpec",
    "LabelRule",
    "MessageRule",
    "NoParams",
    "Parties",
    "PartyTask",
    "Pipeline",
    "PipelineError",
    "Protocol",
    "ProtocolError",
    "ProtocolGuard",
    "ProtocolViolation",
    "TableUse",
    "all_protocols_json",
    "descriptor",
    "protocol_of",
]
