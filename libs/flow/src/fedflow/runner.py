"""Running one party's task of one component: the part the worker and standalone mode share.

`PartyRuntime(endpoint, tables)` holds a party's stores (checkpoints, artifacts, metrics, its
table store) next to its FederationEndpoint. `run_task(spec)`:
  1. looks up the component type and validates the parameters against its params model for
     the task's role (a role the type does not run on is a no-op success);
  2. loads the inputs ("<component>.<output>") from this party's artifacts;
  3. if the task has a checkpoint (it is resuming after a crash), re-publishes the task's
     recorded messages of the checkpoint's iteration (the resume rule, docs/components.md);
  4. builds the ComponentContext (a BusFederation guarded by the component's protocol) and
     runs the component for the role;
  5. stores the outputs as artifacts and returns their references.
It does not delete the checkpoint, outbox or mailbox rows: the caller calls `finish(key)` once
the task's end is durably recorded, so a crash between the component's return and that record
resumes from the last checkpoint instead of starting over against peers that moved on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from fedflow.artifacts import ArtifactMissing, ArtifactStore
from fedflow.bus_federation import BusFederation, FederationEndpoint
from fedflow.checkpoints import CheckpointScope, CheckpointStore
from fedflow.components import REGISTRY
from fedflow.components.base import ComponentType
from fedflow.context import ComponentContext, RuntimeOptions
from fedflow.cryptopool import local_executor
from fedflow.db import create_flow_tables
from fedflow.label_classes import align_inputs, with_trained_classes
from fedflow.metrics import MetricsWriter
from fedflow.protocol import ProtocolGuard
from fedflow.sealing import CheckpointSealer
from fedflow.tables import Table, TableError, TableStore, carry_label_classes
from fedflow.task import TaskKey, TaskSpec

log = structlog.get_logger("fedflow.runner")


class TaskError(Exception):
    """A task that cannot run as specified (unknown type, bad params, missing input)."""


def _check_label_names(
    ctype: ComponentType, role: str, params: Mapping[str, Any], inputs: Mapping[str, object]
) -> None:
    """Refuse a text label column (class names) where the model takes numbers (hetero_linr's
    target, hetero_poisson's counts): its classes 0 .. K-1 would train silently."""
    rule = ctype.labels_for(params).get(role)
    if rule is None or rule.takes_names():
        return
    for table in inputs.values():
        if isinstance(table, Table) and table.label_classes is not None:
            raise TaskError(rule.names_problem(ctype.name, table.label_name, table.label_classes))


@dataclass(frozen=True)
class TaskResult:
    outputs: dict[str, str]
    """output name -> reference ("<component>.<output>")."""
    resumed_from: int | None = None
    """The checkpoint iteration the task resumed from, None for a fresh start."""


class PartyRuntime:
    """One party's task execution: endpoint, checkpoints, artifacts, metrics, tables."""

    def __init__(
        self,
        endpoint: FederationEndpoint,
        tables: TableStore | None = None,
        *,
        executor: Executor | None = None,
        sealer: CheckpointSealer | None = None,
        options: RuntimeOptions | None = None,
    ) -> None:
        """`executor`: where components' crypto chunks run (ctx.executor); None: this process's
        shared thread pool (fedflow.cryptopool.local_executor). `sealer`: seals the secrets
        components keep in checkpoints (fedflow.sealing); None: a secret held by this runtime
        only, so a task resumed by another process cannot open them. `options`: the threads and
        priorities this party lets components use (ctx.runtime); None: the defaults."""
        self.endpoint = endpoint
        self.executor: Executor = executor if executor is not None else local_executor()
        self.engine = endpoint.engine
        self.tables = tables
        self.sealer = sealer if sealer is not None else CheckpointSealer.in_memory()
        self.options = options if options is not None else RuntimeOptions()
        create_flow_tables(self.engine)
        self.checkpoints = CheckpointStore(self.engine)
        self.artifacts = ArtifactStore(self.engine)

    @property
    def party_id(self) -> str:
        return self.endpoint.party_id

    def run_task(
        self,
        spec: TaskSpec,
        *,
        cancel: threading.Event | None = None,
        on_progress: Callable[[float], None] | None = None,
        recv_timeout: float | None = None,
    ) -> TaskResult:
        if spec.party_id != self.party_id:
            raise TaskError(f"task for party {spec.party_id} sent to party {self.party_id}")
        ctype = REGISTRY.get(spec.component_type)
        if ctype is None:
            raise TaskError(f"unknown component type {spec.component_type!r}")
        key = spec.key
        if spec.role not in ctype.roles:
            return TaskResult({})
        try:
            params = ctype.params_model(spec.role).model_validate(dict(spec.params))
        except ValidationError as exc:
            raise TaskError(f"{spec.component} ({ctype.name}) params: {exc}") from None
        inputs = {}
        for slot in ctype.inputs:
            if not slot.taken_at(spec.role):
                continue
            ref = spec.inputs.get(slot.name)
            if ref is None:
                if slot.required:
                    raise TaskError(f"{spec.component}: missing input {slot.name!r}")
                continue
            try:
                inputs[slot.name] = self.artifacts.get_artifact(
                    spec.job_id, self.party_id, spec.role, ref
                )
            except ArtifactMissing as exc:
                raise TaskError(str(exc)) from None
        if spec.role not in ctype.remaps_labels:
            try:
                inputs = align_inputs(inputs, f"{spec.component} ({ctype.name})")
            except TableError as exc:
                raise TaskError(str(exc)) from None
        cancel = cancel or threading.Event()
        guard = ProtocolGuard(ctype.declared_protocol(), spec.role)
        parties = {role: list(ids) for role, ids in spec.parties.items()}
        federation = BusFederation(
            self.endpoint,
            key,
            ctype.name,
            parties,
            guard,
            cancel=cancel,
            default_timeout=recv_timeout,
        )
        latest = self.checkpoints.latest(key)
        resumed_from = None
        if latest is not None:
            resumed_from = latest.iteration
            log.info(
                "task_resuming",
                job_id=spec.job_id,
                component=spec.component,
                iteration=latest.iteration,
            )
            self.endpoint.resend_iteration(key, latest.iteration)

        def pruned(iteration: int) -> None:
            self.endpoint.outbox.prune(key, before_iteration=iteration)

        ctx = ComponentContext(
            job_id=spec.job_id,
            component=spec.component,
            component_type=ctype.name,
            attempt=spec.attempt,
            party_id=self.party_id,
            role=spec.role,
            parties=parties,
            params=params.model_dump(mode="json"),
            inputs=inputs,
            federation=federation,
            checkpoints=CheckpointScope(self.checkpoints, key, on_save=pruned, sealer=self.sealer),
            metrics=MetricsWriter(self.engine, key),
            tables=self.tables,
            cancel=cancel,
            on_progress=on_progress,
            executor=self.executor,
            runtime=self.options,
        )
        _check_label_names(ctype, spec.role, ctx.params, inputs)
        outputs = ctype.run(ctx)
        if spec.role not in ctype.remaps_labels:
            outputs = with_trained_classes(carry_label_classes(outputs, inputs), inputs)
        unknown = sorted(set(outputs) - set(ctype.outputs))
        if unknown:
            raise TaskError(f"{ctype.name} returned undeclared outputs {unknown}")
        refs = {
            name: self.artifacts.put(
                spec.job_id, spec.component, self.party_id, spec.role, name, table, spec.attempt
            )
            for name, table in outputs.items()
        }
        return TaskResult(refs, resumed_from)

    def finish(self, key: TaskKey) -> None:
        """Forget a task's checkpoint, outbox and mailbox rows (after its end is recorded)."""
        self.checkpoints.clear(key)
        self.endpoint.task_finished(key)
