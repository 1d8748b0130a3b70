"""hetero_lr test helpers: a plaintext reference of the protocol's arithmetic, and tasks run
party by party in this process (tests/flow/running.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fedflow.components.hetero_lr.math import reference_sgd
from fedflow.standalone import LocalWorld
from fedflow.tables import Table, read_table
from fedflow.task import TaskSpec
from numpy.typing import NDArray

from tests.flow.running import Running, start_task
from tests.worker.conftest import start_worker  # noqa: F401  (fixture of the RabbitMQ test)

GUEST, HOST = "9999", "10000"
PARTIES = {"guest": [GUEST], "host": [HOST]}
EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
Floats = NDArray[np.float64]

SHORT_KEY_PARAMS: dict[str, Any] = {
    "epochs": 3,
    "batch_size": 64,
    "learning_rate": 0.3,
    "alpha": 0.05,
    "seed": 4,
    "key_bits": 512,
    "insecure_short_keys": True,
    "early_stop": False,
    "sigmoid": "taylor",
}
"""hetero_lr params the protocol tests share: 3 epochs of batches of 64, without early stopping
(so a run's iterations are known), 512-bit keys to keep them fast, and the Taylor sigmoid named
(the default, `auto`, is the separable one with one host: test_separable.py trains it)."""


def breast() -> tuple[Table, Table]:
    """The breast example, the host's rows aligned to the guest's ids."""
    guest = read_table(EXAMPLE_DATA / "breast_hetero_guest.csv")
    host = read_table(EXAMPLE_DATA / "breast_hetero_host.csv", label_column=None)
    return guest, host.align_to(guest.ids)


def synthetic(rows: int, k_guest: int, k_host: int, seed: int = 0) -> tuple[Table, Table]:
    """Rows whose label depends on both parties' features."""
    rng = np.random.default_rng(seed)
    xg, xh = rng.normal(size=(rows, k_guest)), rng.normal(size=(rows, k_host))
    z = xg @ rng.normal(size=k_guest) + xh @ rng.normal(size=k_host)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(np.float64)
    ids = np.array([f"id{i}" for i in range(rows)], dtype=np.str_)
    guest = Table(ids, xg, [f"g{i}" for i in range(k_guest)], labels, "y")
    host = Table(ids, xh, [f"h{i}" for i in range(k_host)], None)
    return guest, host


def taylor_sgd(
    guest: Table, host: Table, params: dict[str, Any], epochs_run: int | None = None
) -> tuple[Floats, Floats]:
    """The same mini-batch SGD on the joined data in plaintext (no early stopping)."""
    wg, wh, _ = taylor_sgd_with_loss(guest, host, params, epochs_run)
    return wg, wh


def taylor_sgd_with_loss(
    guest: Table, host: Table, params: dict[str, Any], epochs_run: int | None = None
) -> tuple[Floats, Floats, list[float]]:
    """taylor_sgd, plus each epoch's mean Taylor loss log 2 - y'z/2 + z^2/8 (each batch's
    loss taken before its update, as the protocol computes it): hetero_lr's public plaintext
    reference (fedflow.components.hetero_lr.math.reference_sgd)."""
    assert guest.labels is not None
    return reference_sgd(guest.features, host.features, guest.labels, params, epochs=epochs_run)


def sigmoid_sgd(guest: Table, host: Table, params: dict[str, Any]) -> tuple[Floats, Floats]:
    """The same mini-batch SGD with the exact sigmoid (what reveal_host_scores computes)."""
    assert guest.labels is not None
    wg, wh, _ = reference_sgd(guest.features, host.features, guest.labels, params, taylor=False)
    return wg, wh


def start(world: LocalWorld, spec: TaskSpec, **kwargs: Any) -> Running:
    return start_task(world, spec, recv_timeout=60, join_timeout=300, **kwargs)


def lr_tasks(
    world: LocalWorld,
    job: str,
    guest: Table,
    host: Table,
    params: dict[str, Any],
    component: str = "lr_0",
) -> dict[str, TaskSpec]:
    for party, role, table in ((GUEST, "guest", guest), (HOST, "host", host)):
        world.parties[party].runtime.artifacts.put(job, "src", party, role, "data", table, 0)
    return {
        role: world.parties[party].task(
            job, component, "hetero_lr", role, PARTIES, params=params, inputs={"data": "src.data"}
        )
        for party, role in ((GUEST, "guest"), (HOST, "host"))
    }


def weights(world: LocalWorld, job: str, component: str = "lr_0") -> tuple[Floats, Floats]:
    got = []
    for party, role in ((GUEST, "guest"), (HOST, "host")):
        model = world.parties[party].runtime.artifacts.get(job, party, role, f"{component}.model")
        got.append(model.features[:, 0].copy())
    return got[0], got[1]


@contextmanager
def trained(
    tmp_path: Path, job: str, guest: Table, host: Table, params: dict[str, Any]
) -> Iterator[LocalWorld]:
    """A two-party world in which hetero_lr ran `params` on the tables as `job`'s lr_0, both
    parties without error (asserted)."""
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        g, h = run_both(world, lr_tasks(world, job, guest, host, params))
        assert not g.error and not h.error, (g.error, h.error)
        yield world


def run_both(
    world: LocalWorld, tasks: dict[str, TaskSpec], **by_role: Callable[[float], None]
) -> tuple[Running, Running]:
    guest = start(world, tasks["guest"], on_progress=by_role.get("guest"))
    host = start(world, tasks["host"], on_progress=by_role.get("host"))
    guest.join()
    host.join()
    return guest, host
