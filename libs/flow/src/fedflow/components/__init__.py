"""The component catalogue, and the registry of their code, by the name a pipeline's `type:` uses.

Adding a component is one package under fedflow/components (its `__init__.py` declares a
`ComponentDescriptor`: params, roles, inputs, outputs, protocol and where the code is) and one
line in `_DESCRIPTORS` below; docs/components.md shows how.

Importing this package is light (no numpy, fedcrypto or runtime): each package's `__init__`
holds only declarations. `REGISTRY` imports a component's code the first time it is looked up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from fedflow.components import (
    data_split,
    evaluation,
    feature_scale,
    hetero_feature_binning,
    hetero_feature_selection,
    hetero_linr,
    hetero_lr,
    hetero_pearson,
    hetero_poisson,
    hetero_secureboost,
    homo_feature_binning,
    homo_feature_scale,
    homo_lr,
    homo_nn,
    imputation,
    iter_sum,
    label_transform,
    noop,
    onehot,
    psi,
    reader,
    statistics,
)
from fedflow.components.base import (
    ComponentDescriptor,
    ComponentParams,
    ComponentType,
    InputSpec,
    LabelRule,
    NoParams,
    load,
)
from fedflow.protocol import Protocol, protocols_to_json

_DESCRIPTORS: tuple[ComponentDescriptor, ...] = (
    reader.READER,
    psi.PSI,
    evaluation.EVALUATION,
    feature_scale.FEATURE_SCALE,
    data_split.DATA_SPLIT,
    statistics.STATISTICS,
    hetero_feature_binning.HETERO_FEATURE_BINNING,
    hetero_feature_selection.HETERO_FEATURE_SELECTION,
    hetero_pearson.HETERO_PEARSON,
    imputation.IMPUTATION,
    onehot.ONEHOT,
    label_transform.LABEL_TRANSFORM,
    iter_sum.ITER_SUM,
    hetero_lr.HETERO_LR,
    hetero_lr.HETERO_LR_PREDICT,
    hetero_linr.HETERO_LINR,
    hetero_linr.HETERO_LINR_PREDICT,
    hetero_poisson.HETERO_POISSON,
    hetero_poisson.HETERO_POISSON_PREDICT,
    hetero_secureboost.HETERO_SECUREBOOST,
    hetero_secureboost.HETERO_SECUREBOOST_PREDICT,
    homo_feature_scale.HOMO_FEATURE_SCALE,
    homo_feature_binning.HOMO_FEATURE_BINNING,
    homo_lr.HOMO_LR,
    homo_lr.HOMO_LR_PREDICT,
    homo_nn.HOMO_NN,
    homo_nn.HOMO_NN_PREDICT,
    noop.NOOP,
)

CATALOGUE: Mapping[str, ComponentDescriptor] = MappingProxyType({d.name: d for d in _DESCRIPTORS})
"""Component type name -> declaration (read-only; no code imported)."""

COMPONENT_NAMES: frozenset[str] = frozenset(CATALOGUE)


class _Registry(Mapping[str, ComponentType]):
    """The catalogue with each component's code, imported at the first lookup of its name."""

    def __init__(self, catalogue: Mapping[str, ComponentDescriptor]) -> None:
        self._catalogue = catalogue
        self._loaded: dict[str, ComponentType] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> ComponentType:
        found = self._loaded.get(name)
        if found is None:
            descriptor = self._catalogue[name]
            with self._lock:
                found = self._loaded.get(name)
                if found is None:
                    found = self._loaded[name] = load(descriptor)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._catalogue)

    def __len__(self) -> int:
        return len(self._catalogue)

    def __contains__(self, name: object) -> bool:
        return name in self._catalogue


REGISTRY: Mapping[str, ComponentType] = _Registry(CATALOGUE)
"""Component type name -> declaration with its code (the task runner's view)."""


def descriptor(name: str) -> ComponentDescriptor:
    """The declared type `name`; KeyError naming the known types otherwise."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(
            f"unknown component type {name!r} (known: {', '.join(sorted(CATALOGUE))})"
        ) from None


def component_type(name: str) -> ComponentType:
    """The registered type `name` with its code; KeyError naming the known types otherwise."""
    return REGISTRY[descriptor(name).name]


def protocol_of(name: str) -> Protocol:
    return descriptor(name).declared_protocol()


def all_protocols_json() -> str:
    """Every registered component's protocol, one JSON document (for the audit service)."""
    return protocols_to_json(d.declared_protocol() for d in CATALOGUE.values())


__all__ = [
    "CATALOGUE",
    "COMPONENT_NAMES",
    "REGISTRY",
    "ComponentDescriptor",
    "ComponentParams",
    "ComponentType",
    "InputSpec",
    "LabelRule",
    "NoParams",
    "all_protocols_json",
    "component_type",
    "descriptor",
    "protocol_of",
]
