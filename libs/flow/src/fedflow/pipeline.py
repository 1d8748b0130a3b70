"""Pipelines: the YAML a user submits, parsed and validated into a `Pipeline`.

A pipeline names the parties by role (one guest, one or several hosts, an optional arbiter) and
a DAG of components, each with a registered type, inputs ("<component>.<output>" of an upstream
component) and parameters, common to all roles or per role (or per party, for one of several
hosts). The same file runs unchanged in standalone mode and on the per-party stacks:

    name: psi-eval
    parties:
      guest: "9999"            # the initiator unless `initiator:` names another party
      host: ["10000"]          # a party id or a list of them
      arbiter: null            # optional
    components:
      - name: reader_0
        type: reader
        params:
          guest: {table: breast_guest}
          host: {table: breast_host}
      - name: psi_0
        type: psi
        inputs: {data: reader_0.data}
      - name: eval_0
        type: evaluation
        inputs: {data: psi_0.data}
        timeout_s: 600         # optional: the scheduler fails the job past this
        params:
          common: {label_column: y}

Parameters of a party's task are `common`, then its role's section, then its party id's section
merged (later wins), and validated against the component type's params model for that role.
A component runs at the parties whose role its type runs on (evaluation: guest only).

Anything malformed raises `PipelineError` whose message names the problem and where: not YAML,
an unknown key, a bad party id, a duplicate component, an unknown component type, an unknown or
missing input, an input from a component that does not run at the same roles, a cycle, a
parameter of the wrong type or out of range, params for a role that does not take part, a
`timeout_s` that is not a positive number.

An optional `audit: {severities: {data.ciphertext_repeated: warn}}` asks each party's audit to
give rules these severities (each party's operator bounds what a pipeline may set:
docs/audit.md, "Severities"); `audit: {stalled_after_s: 600}` how long a component may go
without a message or progress before algorithm.stalled (bounded by each operator too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from pydantic import ValidationError

from fedflow.components import CATALOGUE, ComponentDescriptor, LabelRule
from fedflow.protocol import PROTOCOL_ROLES
from fedflow.yaml_text import load_yaml

# Not fedschemas.PARTY_ROLES: importing fedschemas imports numpy, and this module is part of
# the light descriptors the scheduler imports (fedflow.descriptors). tests/flow checks that
# the two tuples are equal.
PARTY_ROLES: Final = PROTOCOL_ROLES
ROLES: Final = PARTY_ROLES
NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
PARTY_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
COMMON: Final = "common"
MAX_COMPONENTS: Final = 256
"""Components a pipeline may hold: every scheduler validates, stores and tracks each of them
per party and attempt, so an unbounded list (3,000 no-ops fit under the 1 MiB size limit)
kept a guest's scheduler busy for minutes."""

_TOP_KEYS: Final = {"name", "description", "parties", "initiator", "components", "audit"}
_AUDIT_KEYS: Final = {"severities", "stalled_after_s"}
AUDIT_SEVERITIES: Final = ("info", "warn", "critical")
_RULE_ID: Final = re.compile(r"^[a-z_]+\.[a-z_]+$")
_COMPONENT_KEYS: Final = {"name", "type", "inputs", "params", "timeout_s"}
_PARTY_KEYS: Final = set(PARTY_ROLES)


class PipelineError(ValueError):
    """A pipeline that cannot run; the message names the problem."""


@dataclass(frozen=True)
class Parties:
    """The parties of a job by role."""

    guest: str
    hosts: tuple[str, ...] = ()
    arbiter: str | None = None

    def by_role(self) -> dict[str, list[str]]:
        """{"guest": [...], "host": [...], "arbiter": [...]} (arbiter only when present)."""
        roles = {"guest": [self.guest], "host": list(self.hosts)}
        if self.arbiter is not None:
            roles["arbiter"] = [self.arbiter]
        return roles

    def of_role(self, role: str) -> list[str]:
        return self.by_role().get(role, [])


@dataclass(frozen=True)
class InputRef:
    """An input's source: output `output` of upstream component `component`."""

    component: str
    output: str

    def __str__(self) -> str:
        return f"{self.component}.{self.output}"


@dataclass(frozen=True)
class PartyTask:
    """One party's task for a component, in one role."""

    party_id: str
    role: str


@dataclass(frozen=True)
class TableUse:
    """A table a party's reader reads for a pipeline, and what its data flows into."""

    component: str
    table: str
    downstream_types: list[str]


@dataclass(frozen=True)
class ComponentSpec:
    """One component of a pipeline, validated."""

    name: str
    type: str
    inputs: Mapping[str, InputRef]
    params: Mapping[str, Mapping[str, Any]]
    """The params sections as written (`common`, roles, party ids)."""
    tasks: tuple[PartyTask, ...]
    """Where it runs: (party, role) for every party whose role the type runs on."""
    index: int
    """Position in the file (ties in the topological order keep this order)."""
    _resolved: Mapping[tuple[str, str], Mapping[str, Any]] = field(repr=False, compare=False)
    timeout_s: float | None = None
    """How long a task of it may take before the scheduler fails the job; None: the
    scheduler's default (its task_timeout_s setting)."""

    @property
    def component_type(self) -> ComponentDescriptor:
        return CATALOGUE[self.type]

    @property
    def upstream(self) -> list[str]:
        return sorted({ref.component for ref in self.inputs.values()})

    def inputs_as_strings(self) -> dict[str, str]:
        return {name: str(ref) for name, ref in self.inputs.items()}

    def roles_at(self, party_id: str) -> list[str]:
        return [t.role for t in self.tasks if t.party_id == party_id]

    def params_for(self, role: str, party_id: str) -> dict[str, Any]:
        """The validated parameters of `party_id`'s task in `role` (defaults filled, JSON-like)."""
        try:
            return dict(self._resolved[(role, party_id)])
        except KeyError:
            raise PipelineError(
                f"component {self.name} ({self.type}) does not run at party {party_id} as {role}"
            ) from None


def _fail(where: str, problem: str) -> PipelineError:
    return PipelineError(f"{where}: {problem}" if where else problem)


def _party_id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _fail(where, f"a party id must be a string, got {type(value).__name__}")
    text = str(value)
    if not PARTY_ID_PATTERN.match(text):
        raise _fail(where, f"bad party id {text!r} (letters, digits, _ and -, up to 64)")
    return text


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(where, f"must be a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise _fail(where, f"keys must be strings, got {key!r}")
    return value


def _unknown_keys(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise _fail(
            where, f"unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})"
        )


def _parse_audit(data: Any) -> dict[str, str]:
    """`audit: {severities: {rule id: info|warn|critical}}` (which rules exist is the audit's
    business: it names an unknown one)."""
    if data is None:
        return {}
    audit = _mapping(data, "audit")
    _unknown_keys(audit, _AUDIT_KEYS, "audit")
    severities = _mapping(audit.get("severities") or {}, "audit.severities")
    for rule, severity in severities.items():
        if not _RULE_ID.match(rule):
            raise _fail("audit.severities", f"bad rule id {rule!r} (like data.key_width)")
        if severity not in AUDIT_SEVERITIES:
            raise _fail(
                "audit.severities",
                f"{rule}: severity must be one of {', '.join(AUDIT_SEVERITIES)}, got {severity!r}",
            )
    return dict(severities)


def _parse_audit_stall(data: Any) -> float | None:
    """`audit: {stalled_after_s: seconds}` (a positive number), or None when not given."""
    if data is None or not isinstance(data, Mapping) or data.get("stalled_after_s") is None:
        return None
    value = data["stalled_after_s"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _fail("audit.stalled_after_s", f"must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise _fail("audit.stalled_after_s", f"must be finite, got {value!r}")
    return float(value)


def _parse_parties(data: Any) -> Parties:
    parties = _mapping(data, "parties")
    _unknown_keys(parties, _PARTY_KEYS, "parties")
    if parties.get("guest") is None:
        raise _fail("parties", "a guest is required")
    guest = _party_id(parties["guest"], "parties.guest")
    raw_hosts = parties.get("host")
    if raw_hosts is None:
        raw_hosts = []
    elif not isinstance(raw_hosts, list):
        raw_hosts = [raw_hosts]
    hosts = tuple(_party_id(h, f"parties.host[{i}]") for i, h in enumerate(raw_hosts))
    arbiter = None
    if parties.get("arbiter") is not None:
        arbiter = _party_id(parties["arbiter"], "parties.arbiter")
    if len(set(hosts)) != len(hosts):
        raise _fail("parties.host", "a host is listed twice")
    if guest in hosts:
        raise _fail("parties", f"party {guest} cannot be both guest and host")
    if arbiter is not None and arbiter in hosts:
        raise _fail("parties", f"party {arbiter} cannot be both host and arbiter")
    return Parties(guest=guest, hosts=hosts, arbiter=arbiter)


def _validation_problem(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"]) or "params"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class _RawComponent:
    name: str
    type: ComponentDescriptor
    inputs: dict[str, InputRef]
    params: dict[str, dict[str, Any]]
    index: int
    where: str
    timeout_s: float | None


def _parse_component(entry: Any, index: int, names: set[str]) -> _RawComponent:
    where = f"components[{index}]"
    data = _mapping(entry, where)
    _unknown_keys(data, _COMPONENT_KEYS, where)
    name = data.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise _fail(where, f"bad or missing name {name!r} (letters, digits, _ and -, up to 128)")
    where = f"component {name}"
    if name in names:
        raise _fail(where, "the name is used twice")
    type_name = data.get("type")
    if not isinstance(type_name, str) or type_name not in CATALOGUE:
        raise _fail(
            where,
            f"unknown component type {type_name!r} (known: {', '.join(sorted(CATALOGUE))})",
        )
    ctype = CATALOGUE[type_name]
    inputs: dict[str, InputRef] = {}
    for slot, ref in _mapping(data.get("inputs"), f"{where}.inputs").items():
        if ctype.input(slot) is None:
            declared = ", ".join(i.name for i in ctype.inputs) or "none"
            raise _fail(where, f"{type_name} has no input {slot!r} (inputs: {declared})")
        if not isinstance(ref, str) or ref.count(".") != 1:
            raise _fail(where, f"input {slot!r} must be '<component>.<output>', got {ref!r}")
        upstream, output = ref.split(".")
        inputs[slot] = InputRef(upstream, output)
    for spec in ctype.inputs:
        if spec.required and spec.name not in inputs:
            raise _fail(where, f"missing input {spec.name!r} ({type_name} needs it)")
    params = {
        section: dict(_mapping(values, f"{where}.params.{section}"))
        for section, values in _mapping(data.get("params"), f"{where}.params").items()
    }
    timeout_s = _timeout(data.get("timeout_s"), where)
    return _RawComponent(name, ctype, inputs, params, index, where, timeout_s)


def _timeout(value: Any, where: str) -> float | None:
    if value is None:
        return None
    # bool is an int to Python; `timeout_s: yes` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"timeout_s must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise _fail(where, f"timeout_s must be a positive number of seconds, got {value!r}")
    return float(value)


TRAINING_INPUT = "data"
"""The input slot a model trains on (its other labelled input, validate_data, only scores)."""


def _downstream_rules(
    raws: list[_RawComponent],
) -> dict[str, dict[str, list[tuple[str, LabelRule, bool]]]]:
    """Reader name -> {role: (component type, label rule, whether the reader's rows reach its
    training input `data` and the role holds all its labels) of each component its data flows
    into that declares one}. Below a
    component that remaps labels at a role (`ComponentDescriptor.remaps_labels`:
    label_transform) the models' rules at that role are not the reader's: the walk stops
    applying them there."""
    children: dict[str, set[tuple[str, str]]] = {raw.name: set() for raw in raws}
    for raw in raws:
        for slot, ref in raw.inputs.items():
            children.setdefault(ref.component, set()).add((raw.name, slot))
    by_name = {raw.name: raw for raw in raws}
    rules: dict[str, dict[str, list[tuple[str, LabelRule, bool]]]] = {}
    for raw in raws:
        if raw.type.table_param is None:
            continue
        seen: set[tuple[str, str, frozenset[str]]] = set()
        todo = [(child, slot, frozenset[str]()) for child, slot in sorted(children[raw.name])]
        found: dict[str, list[tuple[str, LabelRule, bool]]] = {}
        while todo:
            name, slot, remapped = todo.pop()
            if (name, slot, remapped) in seen or name not in by_name:
                continue
            seen.add((name, slot, remapped))
            ctype = by_name[name].type
            below = remapped | frozenset(ctype.remaps_labels)
            todo.extend((child, into, below) for child, into in children.get(name, ()))
            given = by_name[name].params
            for role in ctype.labels:
                # The role's params may change its rule (hetero_lr's multi_class).
                task_params = {**given.get(COMMON, {}), **given.get(role, {})}
                rule = ctype.labels_for(task_params).get(role)
                if role in remapped or rule is None:
                    continue
                # Only where this role holds every label of the model (vertical): a client of
                # a horizontal model may hold one class of its own, the federation the others.
                trains = slot == TRAINING_INPUT and len(ctype.labels) == 1
                found.setdefault(role, []).append((ctype.name, rule, trains))
        if found:
            rules[raw.name] = found
    return rules


def _label_rules(raws: list[_RawComponent]) -> dict[str, dict[str, dict[str, Any]]]:
    """Reader name -> {role: reader params} that check its table against the labels the
    components its data flows into take: `label_values` (binary models' values, several: the
    values all of them take), `label_rules` (each other model's kind, "classes" or
    "numeric", whether class names fit, and its component type) and `min_label_values` (2
    where a classifier trains on the reader's rows: one class trains nothing)."""
    params: dict[str, dict[str, dict[str, Any]]] = {}
    for reader, by_role in _downstream_rules(raws).items():
        for role, rules in by_role.items():
            given: dict[str, Any] = {}
            for model, rule, trains in rules:
                if trains and rule.classifies():
                    given["min_label_values"] = {"count": 2, "model": model}
                if rule.kind == "binary":
                    values = set(rule.values)
                    given["label_values"] = sorted(
                        values & set(given["label_values"]) if "label_values" in given else values
                    )
                else:
                    entry = {"kind": rule.kind, "names": rule.takes_names(), "model": model}
                    if entry not in given.setdefault("label_rules", []):
                        given["label_rules"].append(entry)
            params.setdefault(reader, {})[role] = given
    return params


def _resolve_params(
    raw: _RawComponent,
    parties: Parties,
    label_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[tuple[PartyTask, ...], dict[tuple[str, str], dict[str, Any]]]:
    ctype, where = raw.type, raw.where
    tasks = tuple(PartyTask(party, role) for role in ctype.roles for party in parties.of_role(role))
    running_roles = {t.role for t in tasks}
    running_parties = {t.party_id for t in tasks}
    for section in raw.params:
        if section == COMMON:
            continue
        if section in ROLES:
            if section not in ctype.roles:
                raise _fail(
                    where,
                    f"params for {section}, but {ctype.name} runs only at {', '.join(ctype.roles)}",
                )
            if section not in running_roles:
                raise _fail(where, f"params for {section}, but the pipeline has no {section}")
        elif section not in running_parties:
            raise _fail(
                where,
                f"params section {section!r} is neither common, a role, nor a party that runs "
                f"{raw.name}",
            )
    resolved: dict[tuple[str, str], dict[str, Any]] = {}
    for task in tasks:
        merged = {
            **raw.params.get(COMMON, {}),
            **raw.params.get(task.role, {}),
            **raw.params.get(task.party_id, {}),
        }
        model = ctype.params_model(task.role)
        # A reader learns the labels its downstream model takes (unless the pipeline says).
        for key, wanted in (label_params or {}).get(task.role, {}).items():
            if key in model.model_fields:
                merged.setdefault(key, wanted)
        try:
            value = model.model_validate(merged)
        except ValidationError as exc:
            raise _fail(
                where, f"params for {task.role} {task.party_id}: {_validation_problem(exc)}"
            ) from None
        resolved[(task.role, task.party_id)] = value.model_dump(mode="json")
    return tasks, resolved


_EVAL_TYPES: Final = {"binary": ("binary", "multi", "regression"), "classes": ("multi",)}
"""The eval_types that fit the predictions of a model by the kind of its labels (LabelRule):
class numbers are compared as classes; a numeric target or counts only as a regression."""


def _check_evaluations(specs: list[ComponentSpec], guest: str) -> None:
    """An evaluation of a model's predictions (data from a component whose `model` input a
    model made) must use an eval_type that fits the model's labels: binary metrics of a
    regression's predictions, or of a multi-class model's, mean nothing, and found out at
    the end of the job the training's time was lost."""
    by_name = {spec.name: spec for spec in specs}
    for spec in specs:
        if spec.type != "evaluation" or "data" not in spec.inputs:
            continue
        scored = by_name[spec.inputs["data"].component]
        if "model" not in scored.inputs:
            continue
        model = by_name[scored.inputs["model"].component]
        if not any(t.party_id == guest and t.role == "guest" for t in model.tasks):
            continue
        rule = model.component_type.labels_for(model.params_for("guest", guest)).get("guest")
        if rule is None:
            continue
        kind = rule.kind if rule.takes_names() else "numeric"  # counts are a target
        fits = _EVAL_TYPES.get(kind, ("regression",))
        eval_type = spec.params_for("guest", guest).get("eval_type", "binary")
        if eval_type not in fits:
            raise _fail(
                f"component {spec.name}",
                f"eval_type {eval_type} does not fit the predictions it evaluates: "
                f"{scored.name} ({scored.type}) of {model.name} ({model.type}, which takes "
                f"{rule.expected()}); set eval_type: {fits[0]}"
                + (" with the predicted class as score_column" if fits[0] == "multi" else ""),
            )


def _find_cycle(edges: Mapping[str, list[str]], nodes: Iterable[str]) -> list[str]:
    """A cycle among `nodes` (each has an unresolved dependency), as a path a -> ... -> a."""
    remaining = set(nodes)
    for start in sorted(remaining):
        path: list[str] = []
        on_path: set[str] = set()
        node = start
        while node not in on_path:
            path.append(node)
            on_path.add(node)
            node = next(d for d in sorted(edges[node]) if d in remaining)
        return [*path[path.index(node) :], node]
    return []


class Pipeline:
    """A validated pipeline. Build it with `from_yaml` (or `from_dict`)."""

    def __init__(
        self,
        name: str,
        parties: Parties,
        components: Iterable[ComponentSpec],
        *,
        initiator: str | None = None,
        description: str = "",
        yaml_text: str | None = None,
        audit_severities: Mapping[str, str] | None = None,
        audit_stalled_after_s: float | None = None,
    ) -> None:
        self.name = name
        self.audit_severities = dict(audit_severities or {})
        """The severities the pipeline asks each party's audit to give rules (`audit:
        severities:`); each party's audit applies them within its operator's limits
        (docs/audit.md), so a pipeline cannot switch another party's checks off."""
        self.audit_stalled_after_s = audit_stalled_after_s
        """How long the pipeline asks each party's audit to let a component go without a
        message or progress before algorithm.stalled (None: the operator's setting)."""
        self.parties = parties
        self.description = description
        self.yaml_text = yaml_text
        self._components = {c.name: c for c in components}
        self._initiator = initiator or parties.guest
        self._order = self._topological_order()

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str) -> Pipeline:
        """Parse and validate pipeline YAML; PipelineError naming the problem."""
        if not isinstance(text, str):
            raise PipelineError("a pipeline is YAML text")
        try:
            data = load_yaml(text)  # safe_load that refuses a key given twice
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise PipelineError(f"not valid YAML{at}: {problem}") from None
        return cls.from_dict(data, yaml_text=text)

    @classmethod
    def from_dict(cls, data: Any, *, yaml_text: str | None = None) -> Pipeline:
        top = _mapping(data, "pipeline")
        if not top:
            raise PipelineError("pipeline: empty document")
        _unknown_keys(top, _TOP_KEYS, "pipeline")
        name = top.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise _fail("pipeline", f"bad or missing name {name!r}")
        parties = _parse_parties(top.get("parties"))
        initiator = None
        if top.get("initiator") is not None:
            initiator = _party_id(top["initiator"], "initiator")
            if initiator not in {parties.guest, *parties.hosts, parties.arbiter}:
                raise _fail("initiator", f"party {initiator} is not a party of the pipeline")
        entries = top.get("components")
        if not isinstance(entries, list) or not entries:
            raise _fail("pipeline", "components must be a non-empty list")
        if len(entries) > MAX_COMPONENTS:
            raise _fail(
                "pipeline",
                f"{len(entries)} components; at most {MAX_COMPONENTS} (split the work into "
                "several jobs)",
            )
        raws: list[_RawComponent] = []
        names: set[str] = set()
        for index, entry in enumerate(entries):
            raw = _parse_component(entry, index, names)
            names.add(raw.name)
            raws.append(raw)
        specs: list[ComponentSpec] = []
        by_name = {raw.name: raw for raw in raws}
        labels = _label_rules(raws)
        for raw in raws:
            tasks, resolved = _resolve_params(raw, parties, labels.get(raw.name))
            for slot, ref in raw.inputs.items():
                source = by_name.get(ref.component)
                if source is None:
                    raise _fail(raw.where, f"input {slot!r} names unknown component {ref}")
                if source.name == raw.name:
                    raise _fail(raw.where, f"input {slot!r} is its own output (a cycle)")
                if ref.output not in source.type.outputs:
                    outputs = ", ".join(source.type.outputs) or "none"
                    raise _fail(
                        raw.where,
                        f"input {slot!r}: {source.name} ({source.type.name}) has no output "
                        f"{ref.output!r} (outputs: {outputs})",
                    )
                source_roles = set(source.type.roles)
                slot_spec = raw.type.input(slot)
                for task in tasks:
                    if slot_spec is not None and not slot_spec.taken_at(task.role):
                        continue
                    if task.role not in source_roles:
                        raise _fail(
                            raw.where,
                            f"input {slot!r}: {raw.name} runs at {task.role}, where "
                            f"{source.name} ({source.type.name}) does not run",
                        )
            specs.append(
                ComponentSpec(
                    name=raw.name,
                    type=raw.type.name,
                    inputs=dict(raw.inputs),
                    params={k: dict(v) for k, v in raw.params.items()},
                    tasks=tasks,
                    index=raw.index,
                    _resolved=resolved,
                    timeout_s=raw.timeout_s,
                )
            )
        _check_evaluations(specs, parties.guest)
        description = top.get("description") or ""
        if not isinstance(description, str):
            raise _fail("pipeline", "description must be a string")
        return cls(
            name,
            parties,
            specs,
            initiator=initiator,
            description=description,
            yaml_text=yaml_text,
            audit_severities=_parse_audit(top.get("audit")),
            audit_stalled_after_s=_parse_audit_stall(top.get("audit")),
        )

    def _topological_order(self) -> list[ComponentSpec]:
        # Kahn's algorithm; among ready components, the one written first goes first, so the
        # order is stable and follows the file wherever the DAG allows.
        pending = {name: set(spec.upstream) for name, spec in self._components.items()}
        order: list[ComponentSpec] = []
        while pending:
            ready = [name for name, deps in pending.items() if not deps]
            if not ready:
                edges = {name: sorted(deps) for name, deps in pending.items()}
                cycle = _find_cycle(edges, pending)
                raise PipelineError(f"the components form a cycle: {' -> '.join(cycle)}")
            first = min(ready, key=lambda n: self._components[n].index)
            order.append(self._components[first])
            del pending[first]
            for deps in pending.values():
                deps.discard(first)
        return order

    # --- queries ---------------------------------------------------------------------------

    @property
    def initiator(self) -> str:
        """The party that submits and drives the job (the guest unless `initiator:` says)."""
        return self._initiator

    def party_ids(self) -> list[str]:
        """Every party of the pipeline, guest first, then hosts, then the arbiter."""
        ids = [self.parties.guest, *self.parties.hosts]
        if self.parties.arbiter is not None and self.parties.arbiter not in ids:
            ids.append(self.parties.arbiter)
        return ids

    def roles_of(self, party_id: str) -> list[str]:
        """The roles `party_id` plays ([] for a party not in the pipeline)."""
        return [role for role, ids in self.parties.by_role().items() if party_id in ids]

    def components_in_order(self) -> list[ComponentSpec]:
        """Components in a topological order of the DAG (stable: ties keep file order)."""
        return list(self._order)

    def component(self, name: str) -> ComponentSpec:
        try:
            return self._components[name]
        except KeyError:
            raise PipelineError(f"no component {name!r} in pipeline {self.name}") from None

    def task_parties(self, component: str) -> list[PartyTask]:
        """Where `component` runs: one (party, role) per task."""
        return list(self.component(component).tasks)

    def tasks_for(self, party_id: str) -> list[tuple[ComponentSpec, str]]:
        """(component, role) for every task `party_id` runs, in DAG order."""
        return [(spec, role) for spec in self._order for role in spec.roles_at(party_id)]

    def params_for(self, component: str, role: str, party_id: str) -> dict[str, Any]:
        return self.component(component).params_for(role, party_id)

    def downstream_of(self, component: str) -> list[str]:
        """Every component fed (directly or not) by `component`, in DAG order."""
        reached = {component}
        found: list[str] = []
        for spec in self._order:
            if spec.name != component and reached.intersection(spec.upstream):
                reached.add(spec.name)
                found.append(spec.name)
        return found

    def tables_read_by(self, party_id: str) -> list[TableUse]:
        """The tables `party_id`'s readers read, with the types of the components downstream
        of each reader that run at `party_id` (what the party's grants must cover before it
        accepts the job)."""
        uses: list[TableUse] = []
        for spec in self._order:
            ctype = spec.component_type
            if ctype.table_param is None:
                continue
            # Only components that run at this party use its data (evaluation at the guest
            # sees the intersection of the guest's rows, none of the host's).
            downstream: list[str] = []
            for name in self.downstream_of(spec.name):
                below = self._components[name]
                if below.roles_at(party_id) and below.type not in downstream:
                    downstream.append(below.type)
            for role in spec.roles_at(party_id):
                table = spec.params_for(role, party_id)[ctype.table_param]
                uses.append(TableUse(spec.name, str(table), downstream))
        return uses

    def to_dict(self) -> dict[str, Any]:
        """A JSON-like summary (for APIs and logs)."""
        return {
            "name": self.name,
            "initiator": self.initiator,
            "parties": self.parties.by_role(),
            "components": [
                {
                    "name": spec.name,
                    "type": spec.type,
                    "inputs": spec.inputs_as_strings(),
                    "tasks": [{"party_id": t.party_id, "role": t.role} for t in spec.tasks],
                }
                for spec in self._order
            ],
        }
