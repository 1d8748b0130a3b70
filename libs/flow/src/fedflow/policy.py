"""A party's security policy: the floor its own operator sets, checked before it runs anything.

A pipeline is written by whichever party initiates the job, so its parameters are the
initiator's choice. Some of them decide how well the OTHER parties are protected: the Paillier
key length (hetero_lr's `key_bits`, `insecure_short_keys`) and modes that reveal more than the
default protocol (hetero_lr's `reveal_host_scores` sends the host's per-row partial scores to
the guest in plaintext). A party never takes those from the initiator on trust: its
`SecurityPolicy` says what it accepts, and every party checks its own part of a job against it
twice, in its scheduler before it accepts a proposed job (or submits one) and in its worker
before a task runs.

What a component's params mean for the policy is declared next to the params themselves, in the
field's `json_schema_extra` (so a new component is covered without touching this module):

    key_bits: int = Field(..., json_schema_extra={"policy": "key_bits"})
    insecure_short_keys: bool = Field(False, json_schema_extra={"policy": "insecure_short_keys"})
    reveal_host_scores: bool = Field(
        False, json_schema_extra={"policy": "reveals", "reveals": "host", "what": "..."}
    )

A param that names code to import (homo_nn's `model: package.module:factory`) is marked
`{"policy": "code"}`: importing a module runs it, so a party imports only the paths its own
policy lists (`allow_code`) when another party's pipeline names them.

The rules, each named in a refusal (`policy.<rule>: ... (party P's policy, <component>)`):

    min_key_bits               every key-length param at least this (default 2048)
    allow_insecure_short_keys  an `insecure_short_keys: true` param refused unless true
    allowed_components         component types this party runs (default: all of them)
    components.<type>.allow_revealing     revealing params this party accepts (default: none)
    components.<type>.bounds.<param>      min / max of a numeric param
    components.<type>.initiator_may_set   the params another party's pipeline may set for
                                          this party (default: all); the rest keep defaults
    components.<type>.allow_code          import paths another party's pipeline may name in
                                          a code param for this party (default: none)
    components.<type>.refuse_inputs       optional inputs that reveal more of this party's
                                          data (InputSpec.reveals, e.g. hetero_lr's
                                          validate_data at the host) this party refuses
                                          (default: none refused)

Light (pydantic, yaml and the descriptors): the scheduler imports it without numpy or fedcrypto.
The functions are pure: the policy, the pipeline or task in, the violations out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import to_jsonable_python

from fedflow.components import CATALOGUE, ComponentDescriptor
from fedflow.import_path import is_import_path
from fedflow.pipeline import Pipeline
from fedflow.yaml_text import load_yaml

SECURE_KEY_BITS: Final = 2048
"""The shortest Paillier key fedcrypto accepts without `insecure_allow_short`."""

KEY_BITS: Final = "key_bits"
SHORT_KEYS: Final = "insecure_short_keys"
REVEALS: Final = "reveals"
CODE: Final = "code"
_MARKERS: Final = frozenset({KEY_BITS, SHORT_KEYS, REVEALS, CODE})


class PolicyError(ValueError):
    """A policy file that cannot be read or is not a valid policy; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Bounds(_Strict):
    """Inclusive bounds of a numeric parameter (either may be left out)."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ComponentRules(_Strict):
    """What this party accepts of one component type's parameters."""

    allow_revealing: tuple[str, ...] = ()
    """Revealing params (declared `"policy": "reveals"`) this party lets a pipeline turn on."""
    bounds: dict[str, Bounds] = Field(default_factory=dict)
    initiator_may_set: tuple[str, ...] | None = None
    """Params a pipeline initiated by another party may give a value other than the default
    for this party's task; None: any (the other rules still apply)."""
    allow_code: tuple[str, ...] = ()
    """Import paths (`package.module:attr`, exact strings) that a pipeline initiated by another
    party may name in this type's code params (declared `"policy": "code"`): importing runs
    the module's code at this party, so none by default."""
    refuse_inputs: tuple[str, ...] = ()
    """Optional inputs of this type declared to reveal more of this party's role's data
    (InputSpec.reveals) that this party refuses: a task of it given one is refused."""


class SecurityPolicy(_Strict):
    """One party's security floor (docs/policy.md). The defaults are the secure ones."""

    version: Literal[1] = 1
    min_key_bits: int = Field(default=SECURE_KEY_BITS, ge=256, le=16384)
    allow_insecure_short_keys: bool = False
    allowed_components: tuple[str, ...] | None = None
    """Component types this party runs; None: every type of the catalogue."""
    components: dict[str, ComponentRules] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> SecurityPolicy:
        if self.min_key_bits < SECURE_KEY_BITS and not self.allow_insecure_short_keys:
            raise ValueError(
                f"min_key_bits {self.min_key_bits} is below {SECURE_KEY_BITS}: such keys are "
                "insecure; set allow_insecure_short_keys: true as well if that is meant (tests)"
            )
        for name in self.allowed_components or ():
            _descriptor(name, "allowed_components")
        for name, rules in self.components.items():
            where = f"components.{name}"
            ctype = _descriptor(name, where)
            fields = _fields(ctype)
            revealing = {p for p, marks in fields.items() if marks.get("policy") == REVEALS}
            for param in rules.allow_revealing:
                if param not in revealing:
                    raise ValueError(
                        f"{where}.allow_revealing: {param!r} is not a revealing parameter of "
                        f"{name} (revealing: {', '.join(sorted(revealing)) or 'none'})"
                    )
            revealing_inputs = sorted(i.name for i in ctype.inputs if i.reveals)
            for name_ in rules.refuse_inputs:
                if name_ not in revealing_inputs:
                    raise ValueError(
                        f"{where}.refuse_inputs: {name_!r} is not an input of {name} that "
                        f"reveals a party's data (such inputs: "
                        f"{', '.join(revealing_inputs) or 'none'})"
                    )
            if rules.allow_code and not any(m.get("policy") == CODE for m in fields.values()):
                raise ValueError(f"{where}.allow_code: {name} has no parameter that names code")
            for path in rules.allow_code:
                if not is_import_path(path):
                    raise ValueError(
                        f"{where}.allow_code: {path!r} is not an import path 'package.module:attr'"
                    )
            for param in [*rules.bounds, *(rules.initiator_may_set or ())]:
                if param not in fields:
                    raise ValueError(
                        f"{where}: {name} has no parameter {param!r} "
                        f"(parameters: {', '.join(sorted(fields)) or 'none'})"
                    )
        return self

    def rules_for(self, component_type: str) -> ComponentRules:
        return self.components.get(component_type) or ComponentRules()


def _descriptor(name: str, where: str) -> ComponentDescriptor:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ValueError(
            f"{where}: unknown component type {name!r} (known: {', '.join(sorted(CATALOGUE))})"
        ) from None


def _fields(ctype: ComponentDescriptor) -> dict[str, dict[str, Any]]:
    """Every parameter of the type (any role) with its policy markers ({} when none)."""
    found: dict[str, dict[str, Any]] = {}
    models = {ctype.params, *ctype.role_params.values()}
    for model in models:
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra
            marks = dict(extra) if isinstance(extra, Mapping) else {}
            if marks.get("policy") not in _MARKERS:
                marks = {}
            found.setdefault(name, marks)
    return found


@dataclass(frozen=True)
class RevealingMode:
    """A param that, when on, reveals more of the `reveals` role's data than the default."""

    component_type: str
    param: str
    reveals: str
    what: str


def revealing_modes(component_type: str) -> list[RevealingMode]:
    """The revealing modes a component type declares (for `fedmq site policy show`)."""
    ctype = CATALOGUE[component_type]
    return [
        RevealingMode(
            component_type,
            param,
            str(marks.get("reveals", "")),
            str(marks.get("what", "reveals more than the default protocol")),
        )
        for param, marks in _fields(ctype).items()
        if marks.get("policy") == REVEALS
    ]


@dataclass(frozen=True)
class Violation:
    """One broken rule: `rule` is its path in the policy, `message` what the task asked."""

    rule: str
    message: str
    party_id: str
    component: str
    source: str = "policy"
    """What set the rule: this party's "policy", or a "grant of table T"."""

    def __str__(self) -> str:
        return f"{self.rule}: {self.message} ({self.party_id}'s {self.source}, {self.component})"


def _default(model_fields: Mapping[str, Any], param: str) -> Any:
    info = model_fields.get(param)
    if info is None or info.is_required():
        return _REQUIRED
    return to_jsonable_python(info.get_default(call_default_factory=True))


_REQUIRED: Final = object()


def check_task(
    policy: SecurityPolicy,
    *,
    party_id: str,
    component: str,
    component_type: str,
    role: str,
    params: Mapping[str, Any],
    initiator: str | None,
    inputs: Collection[str] = (),
) -> list[Violation]:
    """What `party_id`'s policy refuses in its task `component` (of `component_type`, as
    `role`) with the resolved `params` (defaults filled, as a pipeline gives them) and the
    names of the `inputs` it is given.

    `initiator` is the party whose pipeline it is; None when unknown (a task.run whose
    pipeline cannot be read), which `initiator_may_set`, where set, refuses."""
    found: list[Violation] = []

    def refuse(rule: str, message: str) -> None:
        found.append(Violation(rule, message, f"party {party_id}", component))

    allowed = policy.allowed_components
    if allowed is not None and component_type not in allowed:
        refuse(
            "policy.allowed_components",
            f"component type {component_type} is not allowed "
            f"(allowed: {', '.join(allowed) or 'none'})",
        )
        return found
    ctype = CATALOGUE.get(component_type)
    if ctype is None:  # the pipeline validator refuses it first; a task.run may not
        refuse("policy.allowed_components", f"unknown component type {component_type!r}")
        return found
    rules = policy.rules_for(component_type)
    fields = _fields(ctype)
    for param, marks in fields.items():
        value = params.get(param)
        kind = marks.get("policy")
        if kind == KEY_BITS and isinstance(value, int) and value < policy.min_key_bits:
            refuse("policy.min_key_bits", f"{param} {value} < {policy.min_key_bits}")
        elif kind == SHORT_KEYS and value is True and not policy.allow_insecure_short_keys:
            refuse("policy.allow_insecure_short_keys", f"{param}: true is refused")
        elif (
            kind == REVEALS
            and value is True
            and param not in rules.allow_revealing
            and marks.get("reveals", role) == role
        ):
            what = marks.get("what", "reveals more than the default protocol")
            refuse(
                f"policy.components.{component_type}.allow_revealing",
                f"{param}: true ({what}) is not allowed",
            )
    for spec in ctype.inputs:
        if spec.name in rules.refuse_inputs and spec.name in inputs and spec.reveals == role:
            refuse(
                f"policy.components.{component_type}.refuse_inputs",
                f"input {spec.name} ({spec.reveals_what or 'reveals more of this party'}) is "
                "refused",
            )
    for param, problem in _out_of_bounds(rules.bounds, params):
        refuse(f"policy.components.{component_type}.bounds.{param}", problem)
    for param, path in _code_named(ctype, role, params):
        refused = _code_problem(component_type, param, path, rules, party_id, initiator)
        if refused is not None:
            refuse(f"policy.components.{component_type}.allow_code", refused)
    settable = rules.initiator_may_set
    if settable is None or initiator == party_id:
        return found
    rule = f"policy.components.{component_type}.initiator_may_set"
    if initiator is None:
        # The worker reads the initiator from the pipeline its task.run carries; a task.run
        # whose pipeline names none cannot show the params are this party's own choice.
        refuse(rule, "the task names no initiator, so its params cannot be checked")
        return found
    chosen = _chosen(ctype, role, params, settable)
    if chosen:
        refuse(
            rule,
            f"party {initiator} may not set {', '.join(chosen)} for this party "
            f"(it may set: {', '.join(settable) or 'nothing'})",
        )
    return found


def _code_named(
    ctype: ComponentDescriptor, role: str, params: Mapping[str, Any]
) -> list[tuple[str, Any]]:
    """(param, value) of each code param (`"policy": "code"`) not at its default (None: no
    code named)."""
    model_fields = ctype.params_model(role).model_fields
    return [
        (param, params[param])
        for param, marks in _fields(ctype).items()
        if marks.get("policy") == CODE
        and params.get(param) is not None
        and to_jsonable_python(params[param]) != _default(model_fields, param)
    ]


def _code_problem(
    component_type: str,
    param: str,
    path: Any,
    rules: ComponentRules,
    party_id: str,
    initiator: str | None,
) -> str | None:
    """Why this party does not import `path` for `param`; None when it may.

    Its own pipelines are its operator's choice (still only an import path); another party's
    may name only what `allow_code` lists, exactly. A task whose initiator is unknown cannot
    show the path is this party's own choice, so it needs the listing too."""
    if not is_import_path(path):
        return f"{param} {path!r} is not an import path 'package.module:attr'"
    if initiator == party_id or path in rules.allow_code:
        return None
    key = f"components.{component_type}.allow_code"
    listed = f"it lists: {', '.join(rules.allow_code)}" if rules.allow_code else "it lists none"
    who = (
        "the task names no initiator, so"
        if initiator is None
        else f"party {initiator}'s pipeline names code for this party to import and run:"
    )
    return (
        f"{who} {param} {path!r} is imported only where this party's policy lists it in "
        f"{key} ({listed})"
    )


def initiator_matters(
    policy: SecurityPolicy, component_type: str, role: str, params: Mapping[str, Any]
) -> bool:
    """Whether `check_task`'s verdict on these params depends on who initiated the job: the
    policy sets `initiator_may_set` for the type, or a code param names code. A worker reads
    the initiator from the task's pipeline only then (parsing it for every task costs)."""
    if policy.rules_for(component_type).initiator_may_set is not None:
        return True
    ctype = CATALOGUE.get(component_type)
    return ctype is not None and bool(_code_named(ctype, role, params))


def _out_of_bounds(
    bounds: Mapping[str, Bounds], params: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(param, what is wrong) for each numeric param of `params` outside its `bounds`."""
    found: list[tuple[str, str]] = []
    for param, limits in bounds.items():
        value = params.get(param)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            found.append((param, f"{param} {value} is not a finite number"))
        elif limits.min is not None and value < limits.min:
            found.append((param, f"{param} {value} < min {limits.min:g}"))
        elif limits.max is not None and value > limits.max:
            found.append((param, f"{param} {value} > max {limits.max:g}"))
    return found


def _chosen(
    ctype: ComponentDescriptor, role: str, params: Mapping[str, Any], settable: Collection[str]
) -> list[str]:
    """The params outside `settable` that differ from their defaults.

    A param at its default is one the initiator did not choose (or chose harmlessly); the
    resolved params are all a worker sees, so every check compares with the default."""
    model_fields = ctype.params_model(role).model_fields
    return [
        param
        for param, value in params.items()
        if param not in settable and to_jsonable_python(value) != _default(model_fields, param)
    ]


def check_pipeline(policy: SecurityPolicy, pipeline: Pipeline, party_id: str) -> list[Violation]:
    """Every violation of `party_id`'s policy in its tasks of `pipeline`."""
    found: list[Violation] = []
    for spec, role in pipeline.tasks_for(party_id):
        found += check_task(
            policy,
            party_id=party_id,
            component=spec.name,
            component_type=spec.type,
            role=role,
            params=spec.params_for(role, party_id),
            initiator=pipeline.initiator,
            inputs=tuple(spec.inputs),
        )
    return found


def pipeline_problem(policy: SecurityPolicy, pipeline: Pipeline, party_id: str) -> str | None:
    """Why `party_id`'s policy refuses its part of `pipeline` (every rule broken, "; "-joined);
    None when it accepts it."""
    found = check_pipeline(policy, pipeline, party_id)
    return "; ".join(str(v) for v in found) or None


def task_problem(
    policy: SecurityPolicy,
    *,
    party_id: str,
    component: str,
    component_type: str,
    role: str,
    params: Mapping[str, Any],
    initiator: str | None = None,
    inputs: Collection[str] = (),
) -> str | None:
    """`pipeline_problem` for one task (what the worker checks before it runs one)."""
    found = check_task(
        policy,
        party_id=party_id,
        component=component,
        component_type=component_type,
        role=role,
        params=params,
        initiator=initiator,
        inputs=inputs,
    )
    return "; ".join(str(v) for v in found) or None


# --- grants ---------------------------------------------------------------------------------


class ParamGrant(_Strict):
    """What a grant lets its grantee's pipelines set in this party's tasks of one component
    type. A param not named here keeps its default; a named one stays within its bounds (a
    param with bounds may be set, within them). The policy still applies on top."""

    may_set: tuple[str, ...] = ()
    bounds: dict[str, Bounds] = Field(default_factory=dict)

    def settable(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.may_set, *self.bounds]))


def parse_grant_params(raw: Mapping[str, Any] | None) -> dict[str, ParamGrant] | None:
    """A grant's params ({component type: {may_set, bounds}}) validated against the catalogue;
    None stays None (a grant that names no params: the policy alone decides)."""
    if raw is None:
        return None
    found: dict[str, ParamGrant] = {}
    for name, value in raw.items():
        where = f"params.{name}"
        fields = _fields(_descriptor(name, where))
        try:
            rules = ParamGrant.model_validate(value)
        except ValidationError as exc:
            raise ValueError(f"{where}: {_problems(exc)}") from None
        unknown = [p for p in rules.settable() if p not in fields]
        if unknown:
            raise ValueError(
                f"{where}: {name} has no parameter {', '.join(map(repr, unknown))} "
                f"(parameters: {', '.join(sorted(fields)) or 'none'})"
            )
        found[name] = rules
    return found


def parse_param_spec(specs: list[str]) -> dict[str, ParamGrant]:
    """`TYPE.PARAM` (may set it) or `TYPE.PARAM=MIN..MAX` (may set it within bounds, either
    end left open: `=..100`, `=512..`), as `fedmq data grant --param` takes them."""
    raw: dict[str, dict[str, Any]] = {}
    for spec in specs:
        target, _, limits = spec.partition("=")
        ctype, dot, param = target.strip().partition(".")
        if not dot or not ctype or not param:
            raise ValueError(f"--param {spec!r}: write TYPE.PARAM or TYPE.PARAM=MIN..MAX")
        entry = raw.setdefault(ctype, {"may_set": [], "bounds": {}})
        if not limits:
            entry["may_set"].append(param)
            continue
        low, dots, high = limits.partition("..")
        if not dots:
            raise ValueError(f"--param {spec!r}: bounds are MIN..MAX (either may be left out)")
        try:
            bounds = {
                key: float(text)
                for key, text in (("min", low.strip()), ("max", high.strip()))
                if text
            }
        except ValueError:
            raise ValueError(f"--param {spec!r}: bounds must be numbers") from None
        entry["bounds"][param] = bounds
    params = parse_grant_params(raw)
    assert params is not None
    return params


def check_grant_params(
    pipeline: Pipeline,
    party_id: str,
    grant_params: Callable[[str], Mapping[str, ParamGrant] | None],
) -> list[Violation]:
    """What the grants' params refuse in `party_id`'s part of `pipeline`.

    `grant_params(table)` gives the params of the grant of `table` to the pipeline's
    initiator (None: the grant names none). They apply to the reader of the table and every
    task at this party its data flows into, for the component types they name; a type they
    do not name is limited by the policy alone (a reader's `table` is always set)."""
    found: list[Violation] = []
    initiator = pipeline.initiator
    if initiator == party_id:
        return found
    for use in pipeline.tables_read_by(party_id):
        granted = grant_params(use.table)
        if not granted:
            continue
        source = f"grant of table {use.table} to party {initiator}"
        for name in [use.component, *pipeline.downstream_of(use.component)]:
            spec = pipeline.component(name)
            rules = granted.get(spec.type)
            if rules is None:
                continue
            for role in spec.roles_at(party_id):
                params = spec.params_for(role, party_id)
                problems: list[tuple[str, str]] = []
                chosen = _chosen(spec.component_type, role, params, rules.settable())
                if chosen:
                    problems.append(
                        (
                            f"grant.params.{spec.type}.may_set",
                            f"party {initiator} may not set {', '.join(chosen)} (the grant "
                            f"lets it set: {', '.join(rules.settable()) or 'nothing'})",
                        )
                    )
                problems += [
                    (f"grant.params.{spec.type}.bounds.{param}", problem)
                    for param, problem in _out_of_bounds(rules.bounds, params)
                ]
                found += [
                    Violation(rule, message, f"party {party_id}", name, source)
                    for rule, message in problems
                ]
    return found


def grant_params_problem(
    pipeline: Pipeline,
    party_id: str,
    grant_params: Callable[[str], Mapping[str, ParamGrant] | None],
) -> str | None:
    """`check_grant_params` as one refusal ("; "-joined); None when the grants allow it."""
    found = check_grant_params(pipeline, party_id, grant_params)
    return "; ".join(dict.fromkeys(str(v) for v in found)) or None


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )


# --- files ----------------------------------------------------------------------------------


def parse_policy(text: str, source: str = "policy") -> SecurityPolicy:
    """A policy from YAML or JSON text (JSON is YAML); an empty document is the default."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML or JSON: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy is a mapping, got {type(data).__name__}")
    try:
        return SecurityPolicy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}" for e in exc.errors()
        )
        raise PolicyError(f"{source}: {problems}") from None


def load_policy(path: str | Path | None) -> SecurityPolicy:
    """The policy in file `path` (YAML or JSON); the secure defaults when `path` is None or
    empty. A path that does not exist is an error, not the defaults: an operator who named a
    policy file meant it to apply."""
    if path is None or str(path) == "":
        return SecurityPolicy()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"policy file {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"policy file {file}: not UTF-8 text (is it the policy file?)") from None
    return parse_policy(text, str(file))


def policy_yaml(policy: SecurityPolicy) -> str:
    """The policy as YAML (every rule, defaults included)."""
    data = json.loads(policy.model_dump_json())
    return str(yaml.safe_dump(data, sort_keys=False))


__all__ = [
    "SECURE_KEY_BITS",
    "Bounds",
    "ComponentRules",
    "ParamGrant",
    "PolicyError",
    "RevealingMode",
    "SecurityPolicy",
    "Violation",
    "check_grant_params",
    "check_pipeline",
    "check_task",
    "grant_params_problem",
    "initiator_matters",
    "load_policy",
    "parse_grant_params",
    "parse_param_spec",
    "parse_policy",
    "pipeline_problem",
    "policy_yaml",
    "revealing_modes",
    "task_problem",
]
