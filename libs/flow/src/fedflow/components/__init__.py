"""The component registry: component types by the name a pipeline's `type:` uses.

Adding a component is one module declaring a `ComponentType` and one line in `_TYPES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from fedflow.components.base import ComponentParams, ComponentType, InputSpec, NoParams
from fedflow.components.evaluation import EVALUATION
from fedflow.components.hetero_lr import HETERO_LR, HETERO_LR_PREDICT
from fedflow.components.iter_sum import ITER_SUM
from fedflow.components.noop import NOOP
from fedflow.components.psi import PSI
from fedflow.components.reader import READER
from fedflow.protocol import Protocol, protocols_to_json

_TYPES: dict[str, ComponentType] = {
    t.name: t for t in (READER, PSI, EVALUATION, ITER_SUM, HETERO_LR, HETERO_LR_PREDICT, NOOP)
}

REGISTRY: Mapping[str, ComponentType] = MappingProxyType(_TYPES)
"""Component type name -> declaration (read-only view)."""


def component_type(name: str) -> ComponentType:
    """The registered type `name`; KeyError naming the known types otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown component type {name!r} (known: {', '.join(sorted(REGISTRY))})"
        ) from None


def protocol_of(name: str) -> Protocol:
    return component_type(name).declared_protocol()


def all_protocols_json() -> str:
    """Every registered component's protocol, one JSON document (for the audit service)."""
    return protocols_to_json(t.declared_protocol() for t in REGISTRY.values())


__all__ = [
    "REGISTRY",
    "ComponentParams",
    "ComponentType",
    "InputSpec",
    "NoParams",
    "all_protocols_json",
    "component_type",
    "protocol_of",
]
