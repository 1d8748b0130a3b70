"""The serving registry on PostgreSQL (each party's registry lives there, docs/serving.md):
its Alembic history makes exactly the tables fedserving.models defines, goes down and up
again, and adopts nothing else of the database (tests/deploy/test_migrations.py checks the
other packages' histories the same way, not this one's); two replicas binding one service id
at the same moment give one service and a 409, not a 503 blaming the database."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fedflow.artifacts import ArtifactStore
from fedflow.components.hetero_lr.session import INTERCEPT, model_table
from fedflow.db import create_flow_tables
from fedserving.features import FeatureStore, RateLimiter
from fedserving.handlers import Serving
from fedserving.metrics import ServingMetrics
from fedserving.migrations import MIGRATIONS
from fedserving.models import metadata
from fedserving.registry import Registry, open_engine

from tests.serving.test_serving_units import GUEST, JOB, W_GUEST, Wire, ok

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    made = sa.create_engine(pg_url)
    yield made
    made.dispose()


def drift(engine: sa.Engine) -> list[object]:
    """How the database's serving tables differ from the code's (Alembic autogenerate)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": MIGRATIONS.version_table, "compare_type": True}
        )
        return list(compare_metadata(context, metadata))


def serving_tables(engine: sa.Engine) -> set[str]:
    return {t for t in sa.inspect(engine).get_table_names() if t.startswith("serving_")}


def test_the_registrys_history_makes_exactly_its_tables_on_postgresql(engine: sa.Engine) -> None:
    # Execute
    MIGRATIONS.upgrade_head(engine)
    MIGRATIONS.upgrade_head(engine)  # idempotent, as every start of the service runs it

    # Assert: at head, the tables as the code defines them, and the version table its own
    assert drift(engine) == []
    assert MIGRATIONS.current_revision(engine) == MIGRATIONS.head_revision()
    assert serving_tables(engine) == set(metadata.tables) | {MIGRATIONS.version_table}


def test_the_registrys_history_goes_down_and_up_again(engine: sa.Engine) -> None:
    MIGRATIONS.upgrade_head(engine)

    MIGRATIONS.downgrade(engine, "base")
    assert serving_tables(engine) & set(metadata.tables) == set()

    MIGRATIONS.upgrade_head(engine)
    assert drift(engine) == []


def guest_on(database_url: str, client: redis.Redis[bytes]) -> Serving:
    """The guest's Serving (test_serving_units' party) with its registry on `database_url`."""
    engine = open_engine(database_url)
    create_flow_tables(engine)
    store = ArtifactStore(engine)
    store.put(
        JOB,
        "hetero_lr_0",
        GUEST,
        "guest",
        "model",
        model_table(["x0", "x1", INTERCEPT], W_GUEST),
        0,
    )
    prefix = f"fedmq-test-{uuid.uuid4().hex[:8]}:{GUEST}:"
    return Serving(
        GUEST,
        Registry(engine, GUEST),
        features=FeatureStore(client, prefix),
        limiter=RateLimiter(client, prefix),
        call=Wire().caller(GUEST),
        artifacts=store,
        tables=None,
        job_parties=lambda job: {GUEST: ["guest"]},
        metrics=ServingMetrics(),
        binding_refresh_s=0,
    )


def test_two_binds_of_one_service_id_at_once_give_one_service_and_a_409(
    pg_url: str, redis_url: str
) -> None:
    # Prepare: the guest's serving service on PostgreSQL (two replicas share it); a model
    # ready to bind. The first bind is held inside its transaction, its row written and not
    # yet committed, while the second checks (and finds nothing) and inserts.
    client = redis.Redis.from_url(redis_url)
    guest = guest_on(pg_url, client)
    ok(guest, "model_publish", job_id=JOB, name="credit", guest_only=True)
    inserted, release = threading.Event(), threading.Event()
    record = guest.registry._event

    def held(conn: Any, action: str, **fields: Any) -> None:
        record(conn, action, **fields)
        if action == "bind" and not inserted.is_set():
            inserted.set()
            release.wait(10)

    guest.registry._event = held  # type: ignore[method-assign]
    answers: list[dict[str, Any]] = []

    def bind() -> None:
        request = {"service_id": "s", "name": "credit", "version": 1}
        answers.append(guest.local({"op": "service_bind", "args": request}))

    # Execute
    first = threading.Thread(target=bind)
    first.start()
    assert inserted.wait(10)
    second = threading.Thread(target=bind)
    second.start()
    time.sleep(0.5)  # the second waits on the first's uncommitted row
    release.set()
    first.join(10)
    second.join(10)
    client.close()
    events = [e["action"] for e in ok(guest, "events")["data"]]
    guest.registry.engine.dispose()

    # Assert: one service, one bind event; the loser told the service is bound (409)
    assert sorted(a["ok"] for a in answers) == [False, True]
    (lost,) = [a for a in answers if not a["ok"]]
    assert lost["status"] == 409, lost
    assert events == ["publish", "bind"]
