"""Which task a piece of state belongs to, and what a task runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedschemas.payloads import task_scope_id


@dataclass(frozen=True)
class TaskKey:
    """One party's task of one component, in one role and attempt."""

    job_id: str
    component: str
    attempt: int
    party_id: str
    role: str

    @property
    def task_id(self) -> str:
        """The envelope's task id, "<job>/<component>/<party>/<role>": receivers file
        federation data by the component it names (job ids and component names hold no "/")."""
        return task_scope_id(self.job_id, self.component, self.party_id, self.role)


@dataclass(frozen=True)
class TaskSpec:
    """Everything a party needs to run its side of one component (task.run's content)."""

    job_id: str
    component: str
    component_type: str
    attempt: int
    role: str
    party_id: str
    parties: Mapping[str, list[str]]
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    """input name -> "<upstream component>.<output>"."""

    @property
    def key(self) -> TaskKey:
        return TaskKey(self.job_id, self.component, self.attempt, self.party_id, self.role)
