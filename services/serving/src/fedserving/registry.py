"""The serving registry in SQL: published model versions, service bindings, lifecycle events.

Nothing here talks to the bus or to other parties: `fedserving.handlers` decides, this module
stores. Every change is written with its `serving_events` row in one transaction, so the event
log never misses an action that took effect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from fedbus.sql_inbox import make_engine
from numpy.typing import NDArray
from sqlalchemy.engine import Connection, Engine

from fedserving.migrations import MIGRATIONS
from fedserving.models import events_table, models_table, services_table

READY, PENDING, PARTIAL = "ready", "pending", "partial"
"""Model states: usable; waiting for this party's operator (host); some host has not accepted
(guest)."""
SERVING, DRAINING = "serving", "draining"
FALLBACKS = ("refuse", "guest_only")


class RegistryError(Exception):
    """A refused registry action; `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def now() -> str:
    return datetime.now(UTC).isoformat()


def open_engine(url: str) -> Engine:
    engine = make_engine(url)
    MIGRATIONS.upgrade_head(engine)
    return engine


@dataclass(frozen=True)
class ModelVersion:
    """This party's part of one published model version."""

    owner_party: str
    name: str
    version: int
    algorithm: str
    role: str
    job_id: str
    component: str
    state: str
    feature_names: tuple[str, ...]
    weights: NDArray[np.float64]
    hosts: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    artifact: bytes | None = None
    """A tree model's part (fedflow ModelArtifact bytes; fedserving.secureboost); None for
    hetero_lr, whose part is `weights`."""

    def view(self) -> dict[str, Any]:
        return {
            "owner_party": self.owner_party,
            "name": self.name,
            "version": self.version,
            "algorithm": self.algorithm,
            "role": self.role,
            "job_id": self.job_id,
            "component": self.component,
            "state": self.state,
            "feature_names": list(self.feature_names),
            "hosts": dict(self.hosts),
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Binding:
    """A service id's routing: the primary version, an optional canary and its share."""

    service_id: str
    model_name: str
    version: int
    canary_version: int | None
    canary_percent: float
    previous_version: int | None
    fallback: str
    state: str
    updated_at: str = ""

    def view(self) -> dict[str, Any]:
        return {
            "service_id": self.service_id,
            "model_name": self.model_name,
            "version": self.version,
            "canary_version": self.canary_version,
            "canary_percent": self.canary_percent,
            "previous_version": self.previous_version,
            "fallback": self.fallback,
            "state": self.state,
            "updated_at": self.updated_at,
        }


def _model(row: Any) -> ModelVersion:
    return ModelVersion(
        owner_party=row.owner_party,
        name=row.name,
        version=int(row.version),
        algorithm=row.algorithm,
        role=row.role,
        job_id=row.job_id,
        component=row.component,
        state=row.state,
        feature_names=tuple(json.loads(row.feature_names)),
        weights=np.frombuffer(row.weights, dtype="<f8").copy(),
        hosts=json.loads(row.hosts),
        created_at=row.created_at,
        artifact=row.artifact,
    )


def _binding(row: Any) -> Binding:
    return Binding(
        service_id=row.service_id,
        model_name=row.model_name,
        version=int(row.version),
        canary_version=None if row.canary_version is None else int(row.canary_version),
        canary_percent=float(row.canary_percent),
        previous_version=None if row.previous_version is None else int(row.previous_version),
        fallback=row.fallback,
        state=row.state,
        updated_at=row.updated_at,
    )


class Registry:
    def __init__(
        self, engine: Engine, party_id: str, *, on_events: Callable[[], None] | None = None
    ) -> None:
        """`on_events`: called after each transaction that wrote events has committed (the
        audit forwarder's wake-up; fedserving.audit_events)."""
        self.engine = engine
        self.party_id = party_id
        self.on_events = on_events

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn
        if self.on_events is not None:
            self.on_events()

    def _event(
        self,
        conn: Connection,
        action: str,
        *,
        service_id: str = "",
        model_name: str = "",
        version: int | None = None,
        **detail: Any,
    ) -> None:
        if "job_id" not in detail and model_name and version is not None:
            # Which training job the model version came from, in every event that names one
            # (bind, switch, canary...: not only the publish), so the serving log ties back
            # to the job's own audit records.
            c = models_table.c
            detail["job_id"] = conn.execute(
                sa.select(c.job_id).where(
                    c.owner_party == detail.get("owner_party", self.party_id),
                    c.name == model_name,
                    c.version == version,
                )
            ).scalar()
        conn.execute(
            events_table.insert().values(
                at=now(),
                action=action,
                service_id=service_id,
                model_name=model_name,
                version=version,
                detail=json.dumps(detail, sort_keys=True, default=str),
            )
        )

    # -- models ---------------------------------------------------------------------------

    def next_version(self, name: str) -> int:
        c = models_table.c
        with self.engine.connect() as conn:
            top = conn.execute(
                sa.select(sa.func.max(c.version)).where(
                    c.owner_party == self.party_id, c.name == name
                )
            ).scalar()
        return int(top or 0) + 1

    def add_model(self, model: ModelVersion, *, action: str = "publish", **detail: Any) -> None:
        weights = np.ascontiguousarray(model.weights, dtype="<f8").tobytes()
        with self._tx() as conn:
            c = models_table.c
            exists = conn.execute(
                sa.select(c.id).where(
                    c.owner_party == model.owner_party,
                    c.name == model.name,
                    c.version == model.version,
                )
            ).first()
            if exists is not None:
                raise RegistryError(
                    409,
                    f"model {model.name} version {model.version} of party {model.owner_party} "
                    "exists already",
                )
            conn.execute(
                models_table.insert().values(
                    owner_party=model.owner_party,
                    name=model.name,
                    version=model.version,
                    algorithm=model.algorithm,
                    role=model.role,
                    job_id=model.job_id,
                    component=model.component,
                    state=model.state,
                    feature_names=json.dumps(list(model.feature_names)),
                    weights=weights,
                    hosts=json.dumps(model.hosts, sort_keys=True),
                    created_at=model.created_at or now(),
                    artifact=model.artifact,
                )
            )
            self._event(
                conn,
                action,
                model_name=model.name,
                version=model.version,
                owner_party=model.owner_party,
                job_id=model.job_id,
                state=model.state,
                **detail,
            )

    def model(self, name: str, version: int, owner_party: str | None = None) -> ModelVersion:
        owner = owner_party or self.party_id
        c = models_table.c
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(models_table).where(
                    c.owner_party == owner, c.name == name, c.version == version
                )
            ).first()
        if row is None:
            raise RegistryError(
                404, f"party {self.party_id} has no model {name} version {version} of {owner}"
            )
        return _model(row)

    def models(self, name: str | None = None) -> list[ModelVersion]:
        c = models_table.c
        query = sa.select(models_table).order_by(c.owner_party, c.name, c.version)
        if name is not None:
            query = query.where(c.name == name)
        with self.engine.connect() as conn:
            return [_model(row) for row in conn.execute(query)]

    def set_model_state(
        self,
        name: str,
        version: int,
        state: str,
        *,
        owner_party: str | None = None,
        hosts: dict[str, str] | None = None,
        action: str = "accept",
    ) -> None:
        owner = owner_party or self.party_id
        c = models_table.c
        values: dict[str, Any] = {"state": state}
        if hosts is not None:
            values["hosts"] = json.dumps(hosts, sort_keys=True)
        with self._tx() as conn:
            done = conn.execute(
                sa.update(models_table)
                .where(c.owner_party == owner, c.name == name, c.version == version)
                .values(**values)
            )
            if done.rowcount != 1:
                raise RegistryError(404, f"no model {name} version {version} of party {owner}")
            self._event(
                conn,
                action,
                model_name=name,
                version=version,
                owner_party=owner,
                state=state,
                hosts=hosts,
            )

    def delete_model(self, name: str, version: int, owner_party: str | None = None) -> None:
        owner = owner_party or self.party_id
        c, s = models_table.c, services_table.c
        with self._tx() as conn:
            if owner == self.party_id:
                using = conn.execute(
                    sa.select(s.service_id).where(
                        s.model_name == name,
                        sa.or_(s.version == version, s.canary_version == version),
                    )
                ).first()
                if using is not None:
                    raise RegistryError(
                        409,
                        f"model {name} version {version} is bound to service "
                        f"{using.service_id}: unbind or switch it first",
                    )
            which = (c.owner_party == owner, c.name == name, c.version == version)
            job_id = conn.execute(sa.select(c.job_id).where(*which)).scalar()
            done = conn.execute(sa.delete(models_table).where(*which))
            if done.rowcount != 1:
                raise RegistryError(404, f"no model {name} version {version} of party {owner}")
            self._event(
                conn, "delete", model_name=name, version=version, owner_party=owner, job_id=job_id
            )

    # -- services -------------------------------------------------------------------------

    def binding(self, service_id: str) -> Binding | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(services_table).where(services_table.c.service_id == service_id)
            ).first()
        return None if row is None else _binding(row)

    def bindings(self) -> list[Binding]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(services_table).order_by(services_table.c.service_id))
            return [_binding(row) for row in rows]

    def _usable(self, name: str, version: int) -> None:
        model = self.model(name, version)
        if model.role != "guest":
            raise RegistryError(
                409,
                f"model {name} version {version} is a host part: services are bound at the guest",
            )
        if model.state != READY:
            raise RegistryError(
                409,
                f"model {name} version {version} is {model.state} (hosts: {model.hosts}): "
                "every host must accept it first",
            )

    def bind(self, service_id: str, name: str, version: int, fallback: str) -> Binding:
        if fallback not in FALLBACKS:
            raise RegistryError(422, f"fallback must be one of {FALLBACKS}")
        self._usable(name, version)
        with self._tx() as conn:
            if conn.execute(
                sa.select(services_table.c.service_id).where(
                    services_table.c.service_id == service_id
                )
            ).first():
                raise RegistryError(
                    409, f"service {service_id} is bound already: switch or unbind it"
                )
            conn.execute(
                services_table.insert().values(
                    service_id=service_id,
                    model_name=name,
                    version=version,
                    canary_version=None,
                    canary_percent=0.0,
                    previous_version=None,
                    fallback=fallback,
                    state=SERVING,
                    updated_at=now(),
                )
            )
            self._event(
                conn,
                "bind",
                service_id=service_id,
                model_name=name,
                version=version,
                fallback=fallback,
            )
        return self._must(service_id)

    def _must(self, service_id: str) -> Binding:
        found = self.binding(service_id)
        if found is None:
            raise RegistryError(404, f"no service {service_id} at party {self.party_id}")
        return found

    def _change(
        self, service_id: str, action: str, event_version: int | None, **values: Any
    ) -> Binding:
        current = self._must(service_id)
        if current.state != SERVING:
            raise RegistryError(409, f"service {service_id} is {current.state}")
        with self._tx() as conn:
            conn.execute(
                sa.update(services_table)
                .where(services_table.c.service_id == service_id)
                .values(updated_at=now(), **values)
            )
            self._event(
                conn,
                action,
                service_id=service_id,
                model_name=current.model_name,
                version=event_version,
                before=current.view(),
                changes=values,
            )
        return self._must(service_id)

    def canary(self, service_id: str, version: int | None, percent: float) -> Binding:
        if not 0 <= percent <= 100:
            raise RegistryError(422, "canary percent must be within 0..100")
        current = self._must(service_id)
        if version is not None:
            self._usable(current.model_name, version)
        return self._change(
            service_id,
            "canary",
            version,
            canary_version=version,
            canary_percent=float(percent) if version is not None else 0.0,
        )

    def switch(self, service_id: str, version: int) -> Binding:
        current = self._must(service_id)
        self._usable(current.model_name, version)
        return self._change(
            service_id,
            "switch",
            version,
            version=version,
            previous_version=current.version,
            canary_version=None,
            canary_percent=0.0,
        )

    def rollback(self, service_id: str) -> Binding:
        current = self._must(service_id)
        if current.canary_version is not None:  # a canary is rolled back by dropping it
            return self._change(
                service_id, "rollback", current.version, canary_version=None, canary_percent=0.0
            )
        if current.previous_version is None:
            raise RegistryError(409, f"service {service_id} has no earlier version to return to")
        # The earlier version may have been deleted since (delete guards only the bound and
        # canary versions): returning to it would fail every request after
        try:
            self._usable(current.model_name, current.previous_version)
        except RegistryError as exc:
            raise RegistryError(
                409, f"service {service_id} cannot return to its earlier version: {exc.message}"
            ) from None
        return self._change(
            service_id,
            "rollback",
            current.previous_version,
            version=current.previous_version,
            previous_version=current.version,
        )

    def set_draining(self, service_id: str) -> Binding:
        current = self._must(service_id)
        with self._tx() as conn:
            conn.execute(
                sa.update(services_table)
                .where(services_table.c.service_id == service_id)
                .values(state=DRAINING, updated_at=now())
            )
            self._event(
                conn,
                "unbind_started",
                service_id=service_id,
                model_name=current.model_name,
                version=current.version,
            )
        return self._must(service_id)

    def remove(self, service_id: str, **detail: Any) -> None:
        current = self._must(service_id)
        with self._tx() as conn:
            conn.execute(sa.delete(services_table).where(services_table.c.service_id == service_id))
            self._event(
                conn,
                "unbind",
                service_id=service_id,
                model_name=current.model_name,
                version=current.version,
                **detail,
            )

    def events(self, service_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        e = events_table.c
        query = sa.select(events_table).order_by(e.id).limit(limit)
        if service_id:
            query = query.where(e.service_id == service_id)
        with self.engine.connect() as conn:
            return [
                {**dict(row._mapping), "detail": json.loads(row.detail)}
                for row in conn.execute(query)
            ]

    def unaudited_events(self, limit: int = 500) -> list[dict[str, Any]]:
        """The oldest events the party's audit does not have yet (raw rows: detail as stored)."""
        e = events_table.c
        query = sa.select(events_table).where(e.audited.is_(False)).order_by(e.id).limit(limit)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def mark_audited(self, event_ids: list[int]) -> None:
        if not event_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(events_table).where(events_table.c.id.in_(event_ids)).values(audited=True)
            )
