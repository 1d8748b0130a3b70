"""ComponentContext: everything a component's code may touch.

Components are pure apart from their context: a Federation to talk to the other parties, the
task's validated parameters and inputs, a checkpoint scope, a metrics writer, this party's
table store (readers only), a cancellation flag, a progress callback, and the executor that
heavy homomorphic work passes to fedcrypto (`executor=ctx.executor`): this process's thread pool
by default, the party's crypto job pool (fedflow.cryptopool.BusExecutor) when the worker is
configured with crypto replicas; the party's runtime options (`ctx.runtime`: how many threads
and at what priority a component may use, the party's own decision, never a pipeline's); and
sealed per-task secrets (`ctx.secret`). The same component code runs in the worker service
and in standalone mode; only what fills the context differs.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import numpy as np
from fedschemas.audit_payloads import MAX_PROFILED_COLUMNS, ColumnStat, ColumnStats
from pydantic import BaseModel

from fedflow.artifacts import Artifact, ModelArtifact
from fedflow.checkpoints import CheckpointScope
from fedflow.cryptopool import local_executor
from fedflow.federation import Federation, TaskCanceled
from fedflow.metrics import MetricsWriter
from fedflow.tables import Table, TableError, TableStore

M = TypeVar("M", bound=BaseModel)


def column_stats(table: Table) -> list[ColumnStat]:
    """Each feature column's share of missing values (NaN) and its range over the values
    present (None for a column with none; an infinite bound is left out as None too). The
    first MAX_PROFILED_COLUMNS columns of a wider table."""
    features = table.features[:, :MAX_PROFILED_COLUMNS]
    rows = features.shape[0]
    missing = np.isnan(features).sum(axis=0)
    present = features.shape[0] - missing
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: nanmin warns
        lows, highs = np.nanmin(features, axis=0), np.nanmax(features, axis=0)
    return [
        ColumnStat(
            name=name[:256] or "?",
            null_share=float(missing[i]) / rows if rows else 0.0,
            min=float(lows[i]) if present[i] and np.isfinite(lows[i]) else None,
            max=float(highs[i]) if present[i] and np.isfinite(highs[i]) else None,
        )
        for i, name in enumerate(table.feature_names[:MAX_PROFILED_COLUMNS])
    ]


LOWEST_NICE: Final = 19
"""The lowest CPU priority on Linux (nice 19)."""


@dataclass(frozen=True)
class RuntimeOptions:
    """How much of this party's CPU a component may take: set by the party (the worker's
    settings, the standalone runner's options), never by a pipeline, since a pipeline is
    written by whichever party initiates the job."""

    threads: int = 2
    """Threads for homomorphic batch work when the context has no executor (the C kernels
    release the GIL); 0: the task's own thread only."""
    prefetch_threads: int = 2
    """Lowest-priority threads that precompute the plaintext-free part of encryptions under
    the party's own key while it waits for its peer; 0: no precomputation."""
    prefetch_nice: int = LOWEST_NICE
    """CPU priority (nice, Linux) of the prefetch threads: the lowest by default, so they run
    only on cores the protocol's own work leaves idle. On a machine busy with other processes
    they get little CPU; what is not ready in time is computed on the spot."""

    def __post_init__(self) -> None:
        if not 0 <= self.threads <= 64 or not 0 <= self.prefetch_threads <= 64:
            raise ValueError("threads and prefetch_threads must be in 0..64")
        if not 0 <= self.prefetch_nice <= LOWEST_NICE:
            raise ValueError(f"prefetch_nice must be in 0..{LOWEST_NICE}")


@dataclass
class ComponentContext:
    job_id: str
    component: str
    component_type: str
    attempt: int
    party_id: str
    role: str
    parties: Mapping[str, list[str]]
    params: Mapping[str, Any]
    inputs: Mapping[str, Artifact]
    federation: Federation
    checkpoints: CheckpointScope
    metrics: MetricsWriter
    tables: TableStore | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[float], None] | None = None
    executor: Executor | None = field(default_factory=local_executor)
    """Where fedcrypto runs its chunks; None: serially in the component's thread."""
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def params_as(self, model: type[M]) -> M:
        """The parameters as `model` (validated again: a context may be built by hand)."""
        return model.model_validate(dict(self.params))

    def input(self, name: str) -> Table:
        """The table input `name` (TypeError if a model fills the slot: `model`)."""
        found = self._input(name)
        if not isinstance(found, Table):
            raise TypeError(f"{self.component}: input {name!r} is a model, not a table")
        return found

    def model(self, name: str) -> ModelArtifact:
        """The model input `name`: a JSON document plus arrays (fedflow.artifacts)."""
        found = self._input(name)
        if not isinstance(found, ModelArtifact):
            raise TypeError(f"{self.component}: input {name!r} is a table, not a model")
        return found

    def _input(self, name: str) -> Artifact:
        try:
            return self.inputs[name]
        except KeyError:
            have = ", ".join(sorted(self.inputs)) or "none"
            raise KeyError(f"{self.component}: no input {name!r} (inputs: {have})") from None

    def read_table(self, name: str) -> Table:
        """This party's uploaded table `name` (counted as a read by the table store)."""
        if self.tables is None:
            raise TableError(f"{self.component}: no table store at party {self.party_id}")
        if self.tables.get(name) is None:
            raise TableError(f"party {self.party_id} has no table {name!r}")
        table = self.tables.read(name)
        # What was read, column by column, for this party's own audit (data.profile_drift).
        self.federation.report(
            ColumnStats(
                job_id=self.job_id,
                component=self.component,
                attempt=self.attempt,
                party_id=self.party_id,
                table=name,
                rows=table.rows,
                columns=column_stats(table),
            ),
            tag=f"column_stats.{name}",
        )
        return table

    def secret(
        self,
        purpose: str,
        factory: Callable[[], bytes],
        *,
        legacy: Callable[[Mapping[str, Any]], bytes | None] | None = None,
        iteration: int = -1,
    ) -> bytes:
        """This task's secret for `purpose`: the one a checkpoint holds (sealed, so a resumed
        task gets the same one), else `factory()`, sealed into a checkpoint (at `iteration`)
        before it is returned, so before anything derived from it is sent. Every later
        checkpoint of the task keeps it, sealed (CheckpointScope.secret)."""
        return self.checkpoints.secret(purpose, factory, legacy=legacy, iteration=iteration)

    def check_canceled(self) -> None:
        if self.cancel.is_set():
            raise TaskCanceled(f"{self.job_id}/{self.component} at {self.party_id} was canceled")

    def report_progress(self, fraction: float) -> None:
        if self.on_progress is not None:
            self.on_progress(min(max(float(fraction), 0.0), 1.0))
