"""What a component type declares: parameters, roles, inputs, outputs, protocol, and its code.

A component type is registered once (fedflow.components.REGISTRY) and looked up by its `name`
(the `type:` of a pipeline component). The pipeline validator uses the declaration (params
models, roles, inputs, outputs); the task runner calls `run(ctx)` for the party's role, which
returns the component's outputs by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from fedflow.protocol import Protocol

if TYPE_CHECKING:
    from fedflow.context import ComponentContext
    from fedflow.tables import Table


class ComponentParams(BaseModel):
    """Base of every params model: unknown keys refused, no type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoParams(ComponentParams):
    """For components without parameters."""


RunFn = Callable[["ComponentContext"], Mapping[str, "Table"]]


@dataclass(frozen=True)
class InputSpec:
    """An input slot: filled with "<upstream component>.<output>" in a pipeline."""

    name: str
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class ComponentType:
    """One registered component type."""

    name: str
    description: str
    run: RunFn
    roles: tuple[str, ...]
    """Roles this component runs on; a party in another role has no task for it."""
    params: type[ComponentParams] = NoParams
    role_params: Mapping[str, type[ComponentParams]] = field(default_factory=dict)
    """Per-role params models where a role takes different parameters than `params`."""
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[str, ...] = ()
    protocol: Protocol | None = None
    table_param: str | None = None
    """The parameter naming a party table this component reads (readers), if any."""

    def params_model(self, role: str) -> type[ComponentParams]:
        return self.role_params.get(role, self.params)

    def input(self, name: str) -> InputSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def declared_protocol(self) -> Protocol:
        """The protocol (an empty one for components that exchange nothing)."""
        return self.protocol or Protocol(component_type=self.name)
