"""fedflow test helpers: parties in this process on in-memory brokers linked by a LocalRelay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedflow.db import create_flow_tables
from fedflow.standalone import LocalWorld
from fedflow.tables import Table
from fedflow.task import TaskKey
from sqlalchemy.engine import Engine

GUEST, HOST = "9999", "10000"
PARTIES = {"guest": [GUEST], "host": [HOST]}
EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
KEY = TaskKey("job-1", "lr_0", 0, GUEST, "guest")
"""A task's key, for tests of one party's stores."""


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """One party's database (SQLite) with the flow_ tables."""
    engine = make_engine(f"sqlite:///{tmp_path / 'party.db'}")
    create_flow_tables(engine)
    return engine


@pytest.fixture
def world(tmp_path: Path) -> Iterator[LocalWorld]:
    with LocalWorld([GUEST, HOST], tmp_path / "world") as local:
        yield local


def make_table(ids: list[str], features: int = 3, seed: int = 0) -> Table:
    rng = np.random.default_rng(seed)
    return Table(
        ids=np.array(ids, dtype=np.str_),
        features=rng.normal(size=(len(ids), features)),
        feature_names=[f"x{i}" for i in range(features)],
        labels=(rng.random(len(ids)) > 0.5).astype(np.float64),
        label_name="y",
    )


def put_input(
    world: LocalWorld, party: str, role: str, table: Table, job_id: str, ref: str = "src.data"
) -> str:
    """Store `table` as an upstream output at `party`, as a finished component would."""
    component, _, name = ref.partition(".")
    runtime = world.parties[party].runtime
    runtime.artifacts.put(job_id, component, party, role, name, table, 0)
    return ref
