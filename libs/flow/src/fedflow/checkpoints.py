"""CheckpointStore: the last checkpoint of each task, durable in SQL.

One row per task (job, component, attempt, party, role): the iteration it completed and the
state needed to continue from there, encoded by fedflow.statecodec (msgpack + numpy arrays, no
pickle). `save` replaces the row in one transaction, so a crash leaves either the old
checkpoint or the new one. A new attempt (a rerun) starts from nothing: its key differs.
Secrets a component must keep across a restart go in sealed (`CheckpointScope.secret`,
fedflow.sealing), never in the clear: under SEALED_KEY of every state the task saves once the
secret exists, {purpose: sealed mapping}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fedflow.db import flow_metadata, task_columns, task_rows
from fedflow.sealing import CheckpointSealer
from fedflow.statecodec import decode_state, encode_state
from fedflow.task import TaskKey

SEALED_KEY: Final = "sealed_secrets"
"""Where a checkpoint's state keeps the task's sealed secrets (`CheckpointScope.secret`)."""

checkpoints_table = sa.Table(
    "flow_checkpoints",
    flow_metadata,
    *task_columns("job_id", "component", "attempt", "party_id", "role", primary_key=True),
    sa.Column("iteration", sa.BigInteger, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Checkpoint:
    iteration: int
    state: Any
    saved_at: datetime


class CheckpointStore:
    """Checkpoints of every task at this party."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, key: TaskKey, iteration: int, state: Any) -> None:
        blob = encode_state(state)  # before the transaction: a bad state changes nothing
        with self.engine.begin() as conn:
            conn.execute(sa.delete(checkpoints_table).where(task_rows(checkpoints_table, key)))
            conn.execute(
                sa.insert(checkpoints_table),
                {
                    "job_id": key.job_id,
                    "component": key.component,
                    "attempt": key.attempt,
                    "party_id": key.party_id,
                    "role": key.role,
                    "iteration": iteration,
                    "state": blob,
                    "saved_at": datetime.now(UTC),
                },
            )

    def latest(self, key: TaskKey) -> Checkpoint | None:
        query = sa.select(
            checkpoints_table.c.iteration, checkpoints_table.c.state, checkpoints_table.c.saved_at
        ).where(task_rows(checkpoints_table, key))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return Checkpoint(int(row.iteration), decode_state(row.state), row.saved_at)

    def clear(self, key: TaskKey) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(checkpoints_table).where(task_rows(checkpoints_table, key)))


class CheckpointScope:
    """The checkpoint store as one task sees it (what a component's context holds)."""

    def __init__(
        self,
        store: CheckpointStore,
        key: TaskKey,
        on_save: Callable[[int], None] | None = None,
        sealer: CheckpointSealer | None = None,
    ) -> None:
        """`sealer`: the party's (PartyRuntime's); None: one private to this scope, so what it
        seals opens only through this very scope."""
        self._store = store
        self.key = key
        self._on_save = on_save
        self._sealer = sealer if sealer is not None else CheckpointSealer.in_memory()
        self._secrets: dict[str, dict[str, Any]] = {}
        """purpose -> sealed secret, written into every state saved (SEALED_KEY)."""

    def save(self, iteration: int, state: Any) -> None:
        """Record that `iteration` is complete; `state` is everything needed to go on (the
        task's sealed secrets are added to a mapping state)."""
        if self._secrets and isinstance(state, Mapping):
            state = {**state, SEALED_KEY: dict(self._secrets)}
        self._store.save(self.key, iteration, state)
        if self._on_save is not None:
            self._on_save(iteration)

    def latest(self) -> Checkpoint | None:
        return self._store.latest(self.key)

    def seal(self, purpose: str, secret: bytes) -> dict[str, Any]:
        """`secret` sealed for this task: what a component puts in its state instead of it."""
        return self._sealer.seal(self.key, purpose, secret)

    def open_sealed(self, purpose: str, sealed: Mapping[str, Any]) -> bytes:
        """A secret `seal(purpose, ...)` sealed for this task (SealedStateError if it does not
        open: another party secret, another process's in-memory one, or altered bytes)."""
        return self._sealer.open(self.key, purpose, sealed)

    def secret(
        self,
        purpose: str,
        factory: Callable[[], bytes],
        *,
        legacy: Callable[[Mapping[str, Any]], bytes | None] | None = None,
        iteration: int = -1,
    ) -> bytes:
        """The task's secret for `purpose` (ComponentContext.secret).

        Found sealed in the latest checkpoint, it is opened (SealedStateError if it does not
        open); else `legacy(state)` may read it from a checkpoint written in an older layout;
        else `factory()` makes it and a checkpoint holding it sealed is saved at once (at the
        latest checkpoint's iteration, or `iteration` when there is none): a restarted task
        must present the same secret, e.g. the same key pair its peer already encrypts under."""
        sealed = self._secrets.get(purpose)
        if sealed is not None:
            return self.open_sealed(purpose, sealed)
        saved = self.latest()
        state: Mapping[str, Any] = (
            saved.state if saved is not None and isinstance(saved.state, Mapping) else {}
        )
        stored = state.get(SEALED_KEY) or {}
        for name, found in stored.items():
            self._secrets.setdefault(str(name), dict(found))
        if purpose in self._secrets:
            return self.open_sealed(purpose, self._secrets[purpose])
        value = legacy(state) if legacy is not None and saved is not None else None
        fresh = value is None
        if value is None:
            value = factory()
        self._secrets[purpose] = self.seal(purpose, value)
        if fresh:
            self.save(saved.iteration if saved is not None else iteration, dict(state))
        return value

    def clear(self) -> None:
        self._store.clear(self.key)
