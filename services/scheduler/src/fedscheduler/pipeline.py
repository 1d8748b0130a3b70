"""The pipeline model the scheduler works with: `Pipeline`, `PipelineError`, `TableUse`.

TEMPORARY: a minimal parser behind the names of the shared contract (fedflow.pipeline), until
fedflow lands; then this module only re-exports fedflow's. It checks what the scheduler itself
relies on (parties, component names, inputs that name earlier components, no cycle) and nothing
about component types or parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

ROLES = ("guest", "host", "arbiter")


class PipelineError(ValueError):
    """A pipeline that cannot run; the message names the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TableUse:
    """A table a party's reader reads, and the component types its data flows into."""

    component: str
    table: str
    downstream_types: list[str]


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    type: str
    inputs: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def upstream(self) -> list[str]:
        return sorted({ref.split(".", 1)[0] for ref in self.inputs.values()})

    def params_for(self, role: str) -> dict[str, Any]:
        common = self.params.get("common") or {}
        own = self.params.get(role) or {}
        return {**common, **own}


@dataclass(frozen=True)
class Pipeline:
    name: str
    parties: dict[str, list[str]]
    components: list[ComponentSpec]

    @classmethod
    def from_yaml(cls, text: str) -> Pipeline:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PipelineError(f"pipeline is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise PipelineError("pipeline must be a mapping with name, parties and components")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise PipelineError("pipeline needs a name")
        parties = _parties(data.get("parties"))
        raw = data.get("components")
        if not isinstance(raw, list) or not raw:
            raise PipelineError("pipeline needs a non-empty list of components")
        components = [_component(i, c) for i, c in enumerate(raw)]
        names = [c.name for c in components]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise PipelineError(f"duplicate component names: {', '.join(dupes)}")
        for c in components:
            for key, ref in c.inputs.items():
                up = ref.split(".", 1)[0]
                if up not in names:
                    raise PipelineError(
                        f"component {c.name}: input {key} names unknown component {up!r}"
                    )
        pipeline = cls(name=name, parties=parties, components=components)
        pipeline.components_in_order()  # raises on a cycle
        return pipeline

    def components_in_order(self) -> list[ComponentSpec]:
        by_name = {c.name: c for c in self.components}
        done: list[ComponentSpec] = []
        placed: set[str] = set()
        remaining = list(self.components)
        while remaining:
            ready = [c for c in remaining if set(c.upstream()) <= placed]
            if not ready:
                cycle = ", ".join(sorted(c.name for c in remaining))
                raise PipelineError(f"the components form a cycle: {cycle}")
            first = ready[0]  # stable: file order among the ready ones
            done.append(by_name[first.name])
            placed.add(first.name)
            remaining.remove(first)
        return done

    def party_ids(self) -> list[str]:
        seen: list[str] = []
        for role in ROLES:
            for party in self.parties.get(role, []):
                if party not in seen:
                    seen.append(party)
        return seen

    def roles_of(self, party_id: str) -> list[str]:
        return [r for r in ROLES if party_id in self.parties.get(r, [])]

    @property
    def initiator(self) -> str:
        return self.parties["guest"][0]

    def tables_read_by(self, party_id: str) -> list[TableUse]:
        uses: list[TableUse] = []
        for c in self.components_in_order():
            if c.type != "reader":
                continue
            for role in self.roles_of(party_id):
                table = c.params_for(role).get("table")
                if isinstance(table, str):
                    uses.append(TableUse(c.name, table, self._downstream_types(c.name)))
        return uses

    def _downstream_types(self, name: str) -> list[str]:
        reached: set[str] = {name}
        types: set[str] = set()
        for c in self.components_in_order():
            if set(c.upstream()) & reached:
                reached.add(c.name)
                types.add(c.type)
        return sorted(types)


def _parties(raw: Any) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        raise PipelineError("pipeline needs parties: {guest: ..., host: [...]}")
    out: dict[str, list[str]] = {}
    for role, value in raw.items():
        if role not in ROLES:
            raise PipelineError(f"unknown role {role!r} in parties (known: {', '.join(ROLES)})")
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        ids = [str(v) for v in values]
        if role in ("guest", "arbiter") and len(ids) != 1:
            raise PipelineError(f"{role} must be one party")
        out[role] = ids
    if "guest" not in out:
        raise PipelineError("parties needs a guest")
    return out


def _component(index: int, raw: Any) -> ComponentSpec:
    if not isinstance(raw, dict):
        raise PipelineError(f"component #{index} must be a mapping")
    name, ctype = raw.get("name"), raw.get("type")
    if not isinstance(name, str) or not isinstance(ctype, str):
        raise PipelineError(f"component #{index} needs a name and a type")
    inputs = raw.get("inputs") or {}
    params = raw.get("params") or {}
    if not isinstance(inputs, dict) or not all(
        isinstance(v, str) and "." in v for v in inputs.values()
    ):
        raise PipelineError(f"component {name}: inputs must map names to '<component>.<output>'")
    if not isinstance(params, dict):
        raise PipelineError(f"component {name}: params must be a mapping")
    return ComponentSpec(name=name, type=ctype, inputs=dict(inputs), params=dict(params))
