"""What a component type declares (parameters, roles, inputs, outputs, protocol) and its code.

A `ComponentDescriptor` is the declaration alone: light (pydantic and the standard library),
so the scheduler and the pipeline validator read it without numpy, fedcrypto or the runtime
(fedflow.descriptors). Its `entry` names where the code lives, "module:function" (one for
every role) or {role: "module:function"}; the code is imported only when a task runs
(`load`). A `ComponentType` is a descriptor with its code loaded: what the task runner calls,
`run(ctx)`, which returns the component's outputs by name.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fedflow.protocol import Protocol


def _distinct_columns(columns: list[str] | None) -> list[str] | None:
    if columns is not None and len(set(columns)) != len(columns):
        raise ValueError("columns names a column twice")
    return columns


OwnColumns = Annotated[list[str] | None, Field(min_length=1), AfterValidator(_distinct_columns)]
"""A parameter naming some of this party's own columns, each once (None: every feature
column)."""

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


class ComponentParams(BaseModel):
    """Base of every params model: unknown keys refused, no type coercion, immutable, and no
    inf or nan in a float (`learning_rate: .inf` is refused at submission, not at run time)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class NoParams(ComponentParams):
    """For components without parameters."""


MAX_NUMERIC_LABEL = 1e150
"""The largest magnitude of a "numeric" label: its square (the squared loss) must fit a float
(1.8e308); a 1e300 target made hetero_linr's first loss inf, reported as a divergence."""


@dataclass(frozen=True)
class LabelRule:
    """The labels a model takes at a role: "binary" (exactly the `values`, e.g. hetero_lr's 0
    and 1), "classes" (class indices 0, 1, 2, ...: integers >= 0) or "numeric" (any finite
    number: hetero_linr). `problem` judges a table's distinct label values against it (the
    profile recorded at upload, or the values a component finds), before anything runs."""

    kind: Literal["binary", "classes", "numeric"]
    values: tuple[float, ...] = ()
    names: bool | None = None
    """Whether a text label column (class names, read as classes 0 .. K-1: fedflow.tables)
    fits; None: for "binary" and "classes", not for "numeric" (a regression target is a
    number, not a class)."""

    def classifies(self) -> bool:
        """Whether the model is a classifier (binary, or classes that may be named): one
        trained on a single class learns nothing (poisson's counts, "classes" without names,
        may all be equal)."""
        return self.kind == "binary" or (self.kind == "classes" and self.takes_names())

    def takes_names(self) -> bool:
        return self.kind != "numeric" if self.names is None else self.names

    def names_problem(self, component: str, label_name: str | None, classes: list[str]) -> str:
        """The refusal of a text label column by a model that does not take class names."""
        shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        return (
            f"{component} takes {self.expected()}, but label column {label_name!r} holds class "
            f"names ({shown}), read as classes 0 .. {len(classes) - 1}: upload the target as "
            "numbers"
        )

    def expected(self) -> str:
        if self.kind == "binary":
            return "labels " + " or ".join(f"{v:g}" for v in self.values)
        if self.kind == "classes" and self.names is False:
            return "counts (integers >= 0)"
        if self.kind == "classes":
            return "class labels 0, 1, 2, ... (integers >= 0)"
        return "numeric labels (finite numbers)"

    def problem(self, found: Iterable[float]) -> str | None:
        """Why labels with the distinct values `found` do not fit, naming the values that do
        not (up to 10); None when they fit."""
        values = sorted({float(v) for v in found}, key=lambda v: (math.isnan(v), v))
        if self.kind == "binary":
            bad = [v for v in values if v not in self.values]
        elif self.kind == "classes":
            bad = [v for v in values if not (math.isfinite(v) and v >= 0 and v.is_integer())]
        else:
            bad = [v for v in values if not (math.isfinite(v) and abs(v) <= MAX_NUMERIC_LABEL)]
        if not bad:
            return None
        shown = ", ".join(f"{v:g}" for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        if self.kind == "numeric" and all(math.isfinite(v) for v in bad):
            return (
                f"takes {self.expected()} of magnitude at most {MAX_NUMERIC_LABEL:g} (the "
                f"squared loss must fit a float), found {shown}: bring the target to a "
                "smaller unit"
            )
        return f"takes {self.expected()}, found {shown}"


RunFn = Callable[["ComponentContext"], Mapping[str, Any]]
"""A component's code: the context in, its outputs (fedflow.artifacts.Artifact) by name out."""


@dataclass(frozen=True)
class InputSpec:
    """An input slot: filled with "<upstream component>.<output>" in a pipeline."""

    name: str
    required: bool = True
    description: str = ""
    roles: tuple[str, ...] = ()
    """The roles that take this input; () every role of the component (an aggregator role
    with no data of its own, e.g. homo_lr's arbiter, takes none)."""
    reveals: str = ""
    """An optional input whose presence reveals more of this role's data than the component
    does without it (hetero_lr's validate_data: "host"); that role's security policy may refuse
    it (fedflow.policy, components.<type>.refuse_inputs). "": none."""
    reveals_what: str = ""
    """What it reveals, for the refusal's message."""

    def taken_at(self, role: str) -> bool:
        return not self.roles or role in self.roles


@dataclass(frozen=True)
class ComponentDescriptor:
    """One component type as the pipeline validator and the scheduler see it (no code)."""

    name: str
    description: str
    roles: tuple[str, ...]
    """Roles this component runs on; a party in another role has no task for it."""
    entry: str | Mapping[str, str] = ""
    """Where the code is: "package.module:function" for every role, or one per role."""
    params: type[ComponentParams] = NoParams
    role_params: Mapping[str, type[ComponentParams]] = field(default_factory=dict)
    """Per-role params models where a role takes different parameters than `params`."""
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[str, ...] = ()
    protocol: Protocol | None = None
    table_param: str | None = None
    """The parameter naming a party table this component reads (readers), if any."""
    labels: Mapping[str, LabelRule] = field(default_factory=dict)
    """Role -> the labels this component's model takes there (kind: binary, classes or
    numeric): what a pipeline check compares a table's recorded label values with, and what
    the component itself checks when it starts."""
    remaps_labels: tuple[str, ...] = ()
    """Roles where this component's output labels are its own mapping of its input's
    (label_transform at the guest): the labels a model downstream of it takes say nothing
    about the table upstream, so the pipeline's label check (`fedflow.pipeline`) stops here
    and the model checks the mapped labels when it starts."""
    labels_by_param: tuple[tuple[str, Any, Mapping[str, LabelRule]], ...] = ()
    """(param, value, rules): where the task's param `param` equals `value`, `rules` replace
    `labels` at their roles (hetero_lr with multi_class: true takes class labels). The first
    that matches wins."""

    @property
    def label_values(self) -> Mapping[str, tuple[float, ...]]:
        """Role -> the exact label values where `labels` names binary ones (hetero_lr: the
        guest's are 0 or 1). The pipeline passes them to the readers whose data flows into
        it, which refuse a table with other labels before anything leaves the party (before
        PSI)."""
        return self.label_values_for({})

    def labels_for(self, params: Mapping[str, Any]) -> Mapping[str, LabelRule]:
        """`labels` as the task's params (one role's, resolved) change them."""
        for name, value, rules in self.labels_by_param:
            if params.get(name) == value:
                return {**self.labels, **rules}
        return self.labels

    def label_values_for(
        self, params: Mapping[str, Any], role: str | None = None
    ) -> Mapping[str, tuple[float, ...]]:
        """label_values under the params `params` (of `role`, or of every role)."""
        return {
            r: rule.values
            for r, rule in self.labels_for(params).items()
            if rule.kind == "binary" and (role is None or r == role)
        }

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

    def entry_for(self, role: str) -> str:
        if isinstance(self.entry, str):
            return self.entry
        try:
            return self.entry[role]
        except KeyError:
            raise KeyError(f"{self.name} has no code for role {role!r}") from None


@dataclass(frozen=True)
class ComponentType(ComponentDescriptor):
    """A descriptor with its code: `run(ctx)` dispatches to the code of the context's role."""

    code: Mapping[str, RunFn] = field(default_factory=dict)

    def run(self, ctx: ComponentContext) -> Mapping[str, Any]:
        try:
            fn = self.code[ctx.role]
        except KeyError:
            raise KeyError(f"{self.name} does not run as {ctx.role!r}") from None
        return fn(ctx)


def _import(target: str) -> RunFn:
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"component entry {target!r} is not 'package.module:function'")
    fn = getattr(importlib.import_module(module), name)
    if not callable(fn):
        raise TypeError(f"component entry {target!r} is not callable")
    return fn  # type: ignore[no-any-return]


def load(descriptor: ComponentDescriptor) -> ComponentType:
    """The descriptor with its code imported (the runtime's side of the catalogue)."""
    declared = {f.name: getattr(descriptor, f.name) for f in fields(ComponentDescriptor)}
    code = {role: _import(descriptor.entry_for(role)) for role in descriptor.roles}
    return ComponentType(**declared, code=code)
