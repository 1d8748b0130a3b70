"""hetero_lr test helpers: a plaintext reference of the protocol's arithmetic, and tasks run
party by party in this process (as tests/flow/test_resume.py does)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fedflow.components.hetero_lr import _batches
from fedflow.runner import TaskResult
from fedflow.standalone import LocalWorld
from fedflow.tables import Table, read_table
from fedflow.task import TaskSpec
from numpy.typing import NDArray

from tests.worker.conftest import start_worker  # noqa: F401  (fixture of the RabbitMQ test)

GUEST, HOST = "9999", "10000"
PARTIES = {"guest": [GUEST], "host": [HOST]}
EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
Floats = NDArray[np.float64]


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
    loss taken before its update, as the protocol computes it)."""
    assert guest.labels is not None
    y = guest.labels
    xg = np.hstack([guest.features, np.ones((guest.rows, 1))])
    xh = host.features
    wg, wh = np.zeros(xg.shape[1]), np.zeros(xh.shape[1])
    penalty = np.r_[np.ones(xg.shape[1] - 1), 0.0]
    alpha, lr0, decay = params.get("alpha", 0.01), params["learning_rate"], params.get("decay", 0)
    losses: list[float] = []
    t = 0
    for epoch in range(epochs_run or params["epochs"]):
        total = 0.0
        for rows in _batches(len(y), params["batch_size"], params.get("seed", 0), epoch):
            z = xg[rows] @ wg + xh[rows] @ wh
            total += float(np.sum(np.log(2) - 0.5 * (2 * y[rows] - 1) * z + z**2 / 8))
            d = 0.25 * z + 0.5 - y[rows]
            lr = lr0 / np.sqrt(1 + decay * t)
            gg, gh = xg[rows].T @ d / len(rows), xh[rows].T @ d / len(rows)
            wg = wg - lr * (gg + alpha * penalty * wg)
            wh = wh - lr * (gh + alpha * wh)
            t += 1
        losses.append(total / len(y))
    return wg, wh, losses


def sigmoid_sgd(guest: Table, host: Table, params: dict[str, Any]) -> tuple[Floats, Floats]:
    """The same mini-batch SGD with the exact sigmoid (what reveal_host_scores computes)."""
    assert guest.labels is not None
    y = guest.labels
    xg = np.hstack([guest.features, np.ones((guest.rows, 1))])
    xh = host.features
    wg, wh = np.zeros(xg.shape[1]), np.zeros(xh.shape[1])
    penalty = np.r_[np.ones(xg.shape[1] - 1), 0.0]
    alpha, lr0, decay = params.get("alpha", 0.01), params["learning_rate"], params.get("decay", 0)
    t = 0
    for epoch in range(params["epochs"]):
        for rows in _batches(len(y), params["batch_size"], params.get("seed", 0), epoch):
            z = xg[rows] @ wg + xh[rows] @ wh
            d = 1 / (1 + np.exp(-z)) - y[rows]
            lr = lr0 / np.sqrt(1 + decay * t)
            gg, gh = xg[rows].T @ d / len(rows), xh[rows].T @ d / len(rows)
            wg = wg - lr * (gg + alpha * penalty * wg)
            wh = wh - lr * (gh + alpha * wh)
            t += 1
    return wg, wh


@dataclass
class Running:
    thread: threading.Thread
    cancel: threading.Event
    result: list[TaskResult] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)

    def join(self, timeout: float = 300) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "task did not finish"


def start(world: LocalWorld, spec: TaskSpec, **kwargs: Any) -> Running:
    cancel = threading.Event()
    running: Running

    def target() -> None:
        try:
            running.result.append(
                world.parties[spec.party_id].runtime.run_task(
                    spec, cancel=cancel, recv_timeout=60, **kwargs
                )
            )
        except BaseException as exc:  # inspected by the test
            running.error.append(exc)

    running = Running(threading.Thread(target=target, daemon=True), cancel)
    running.thread.start()
    return running


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


def run_both(
    world: LocalWorld, tasks: dict[str, TaskSpec], **by_role: Callable[[float], None]
) -> tuple[Running, Running]:
    guest = start(world, tasks["guest"], on_progress=by_role.get("guest"))
    host = start(world, tasks["host"], on_progress=by_role.get("host"))
    guest.join()
    host.join()
    return guest, host
