"""Multi-class hetero_lr trains every class in one exchange per batch (issue #17): each
per-batch message carries one lane per class (fedflow.components.hetero_lr.lanes), a class that
stops early is frozen with its weights while the others go on, and the result is, class by
class, the plaintext one-vs-rest reference (math.reference_ovr) to 1e-6: with two hosts (the
Taylor line), with early stopping per class, and resumed after a party died mid-epoch."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.components.hetero_lr import session
from fedflow.components.hetero_lr.math import one_vs_rest, reference_ovr, reference_sgd
from fedflow.metrics import MetricsReader
from fedflow.protocol import ProtocolGuard
from fedflow.standalone import LocalWorld
from fedflow.tables import Table

from tests.flow.running import crash_after_sends, crash_and_restart, crash_on_progress
from tests.lr.conftest import GUEST, HOST, Running, lr_tasks, run_both, start

HOST2 = "10001"
ROWS, BATCH = 240, 64  # 3 batches per epoch
PARAMS: dict[str, Any] = {
    "multi_class": True,
    "epochs": 6,
    "batch_size": BATCH,
    "learning_rate": 0.3,
    "alpha": 0.05,
    "seed": 4,
    "key_bits": 512,
    "insecure_short_keys": True,
}


def three_classes(count: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Guest features (3), host features (4), labels 0, 1, 2 (.. count - 1) that depend on
    both."""
    rng = np.random.default_rng(5)
    xg, xh = rng.normal(size=(ROWS, 3)), rng.normal(size=(ROWS, 4))
    weights = 1.5 * rng.normal(size=(7, count))
    z = np.hstack([xg, xh]) @ weights + 0.8 * rng.normal(size=(ROWS, count))
    return xg, xh, np.argmax(z, axis=1).astype(np.float64)


def _table(x: np.ndarray, prefix: str, start: int, labels: np.ndarray | None) -> Table:
    ids = np.array([f"id{i}" for i in range(len(x))], dtype=np.str_)
    names = [f"{prefix}{start + i}" for i in range(x.shape[1])]
    return Table(ids, x, names, labels, "y" if labels is not None else None)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int, tuple[int, ...]]]:
    """Every message a party's protocol guard let out: (role, tag, iteration, array shape)."""
    seen: list[tuple[str, str, int, tuple[int, ...]]] = []
    original = ProtocolGuard.check_send

    def record(self: ProtocolGuard, payload: Any, **kwargs: Any) -> Any:
        shape = () if payload.array is None else tuple(payload.array.shape)
        seen.append((self.role, kwargs["tag"], kwargs["iteration"], shape))
        return original(self, payload, **kwargs)

    monkeypatch.setattr(ProtocolGuard, "check_send", record)
    return seen


def test_two_hosts_train_every_class_in_one_exchange_and_a_stopped_class_keeps_its_weights(
    tmp_path: Path, sent: list[tuple[str, str, int, tuple[int, ...]]]
) -> None:
    # Prepare: two hosts (sigmoid auto: the Taylor line), early stopping whose tol stops
    # class 1 after epoch 3 and classes 0 and 2 after epoch 4 (the reference's improvements
    # per epoch: 0.0307 for class 1 at epoch 3, 0.0232 and 0.0225 for classes 0, 2 at epoch 4,
    # every earlier one above 0.032)
    xg, xh, y = three_classes()
    params = {**PARAMS, "early_stop": True, "tol": 0.031}
    tables = {
        GUEST: ("guest", _table(xg, "g", 0, y)),
        HOST: ("host", _table(xh[:, :2], "h", 0, None)),
        HOST2: ("host", _table(xh[:, 2:], "h", 2, None)),
    }
    parties = {"guest": [GUEST], "host": [HOST, HOST2]}
    with LocalWorld([GUEST, HOST, HOST2], tmp_path / "w") as world:
        runs: dict[str, Running] = {}
        for party, (role, table) in tables.items():
            world.parties[party].runtime.artifacts.put(
                "job-k", "src", party, role, "data", table, 0
            )
            spec = world.parties[party].task(
                "job-k",
                "lr_0",
                "hetero_lr",
                role,
                parties,
                params=params,
                inputs={"data": "src.data"},
            )
            runs[party] = start(world, spec)

        # Execute
        for running in runs.values():
            running.join()

        # Assert: every party ends, with the reference's weights per class
        assert all(not r.error for r in runs.values()), {p: r.error for p, r in runs.items()}
        models = {
            party: world.parties[party].runtime.artifacts.get("job-k", party, role, "lr_0.model")
            for party, (role, _) in tables.items()
        }
        metrics = MetricsReader(world.parties[GUEST].engine).metrics("job-k", "lr_0")
    _, wg, wh = reference_ovr(xg, xh, y, params, hosts=2, stop_early=True)
    np.testing.assert_allclose(models[GUEST].features, wg, rtol=0, atol=1e-6)
    np.testing.assert_allclose(models[HOST].features, wh[:2], rtol=0, atol=1e-6)
    np.testing.assert_allclose(models[HOST2].features, wh[2:], rtol=0, atol=1e-6)
    # each class's loss per epoch is the reference's, for the epochs it trained
    losses: dict[str, list[float]] = defaultdict(list)
    for m in sorted(metrics, key=lambda m: m.step):
        if m.name.startswith("loss_"):
            losses[m.name].append(m.value)
    for value in (0, 1, 2):
        _, _, expected = reference_sgd(
            xg, xh, one_vs_rest(y, value), params, hosts=2, stop_early=True
        )
        np.testing.assert_allclose(losses[f"loss_{value}"], expected, rtol=0, atol=1e-6)
    assert [len(losses[f"loss_{v}"]) for v in (0, 1, 2)] == [5, 4, 5]
    # one exchange per batch for all classes: each tag once per iteration, 5 epochs of 3
    # batches (training ended when the last classes stopped), the per-row messages carrying
    # the active classes' rows (3, then 2 from epoch 4 on) and the answers every class lane
    # (the guards know roles, not parties: with two hosts, every tag shows twice per
    # iteration, once per host, or per host it goes to)
    per_iteration = Counter((role, tag, t) for role, tag, t, _ in sent if t >= 0)
    assert set(per_iteration.values()) == {2}
    iterations = sorted({t for _, _, t, _ in sent if t >= 0})
    assert iterations == list(range(15))
    residual_rows = {t: shape[0] for role, tag, t, shape in sent if tag == "residual"}
    batch_rows = [len(rows) for rows in _batches(params)]
    assert residual_rows == {t: (3 if t < 12 else 2) * batch_rows[t % 3] for t in iterations}
    gradients = {shape[0] for role, tag, _, shape in sent if tag == "guest_gradient"}
    assert gradients == {3 * (3 + 1 + 2)}  # every lane of (k_g + intercept + 2 aggregates)
    squares = {shape for role, tag, _, shape in sent if tag == "host_class_score_sq"}
    assert squares == {(3,)}


def _batches(params: dict[str, Any]) -> list[np.ndarray]:
    from fedflow.components.hetero_lr.math import batches

    return batches(ROWS, int(params["batch_size"]), int(params["seed"]), 0)


@pytest.mark.parametrize(
    ("count", "early_stop", "groups"),
    [(3, True, [1, 1, 1, 1, 1]), (6, False, [2])],  # 512-bit keys: 4 classes a plaintext
)
def test_the_taylor_line_with_one_host_packs_the_classes_residuals_into_shared_plaintexts(
    tmp_path: Path,
    count: int,
    early_stop: bool,
    groups: list[int],
    sent: list[tuple[str, str, int, tuple[int, ...]]],
) -> None:
    # Prepare: sigmoid taylor, one host: the guest packs up to 4 classes' residuals per
    # plaintext (packing.py); with early stopping the classes stop as in the two-host test
    xg, xh, y = three_classes(count)
    epochs = 6 if early_stop else 1
    params = {
        **PARAMS,
        "sigmoid": "taylor",
        "epochs": epochs,
        "early_stop": early_stop,
        "tol": 0.031,
    }
    guest, host = _table(xg, "g", 0, y), _table(xh, "h", 0, None)

    # Execute
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        g, h = run_both(world, lr_tasks(world, "job-p", guest, host, params))
        assert not g.error and not h.error, (g.error, h.error)
        got = [
            world.parties[p].runtime.artifacts.get("job-p", p, role, "lr_0.model").features
            for p, role in ((GUEST, "guest"), (HOST, "host"))
        ]

    # Assert: the one-vs-rest reference's weights; one packed block of rows per group of (at
    # most 4) classes still training, per iteration
    _, wg, wh = reference_ovr(xg, xh, y, params, stop_early=True)
    np.testing.assert_allclose(got[0], wg, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[1], wh, rtol=0, atol=1e-6)
    batch_rows = [len(rows) for rows in _batches(params)]
    residual = [(t, shape[0]) for _, tag, t, shape in sent if tag == "residual"]
    assert len(residual) == 3 * len(groups)
    blocks = [rows // batch_rows[t % 3] for t, rows in residual]
    assert blocks == [n for n in groups for _ in range(3)]
    answers = {shape[0] for _, tag, _, shape in sent if tag == "host_gradient"}
    assert answers == {n * 4 for n in set(groups)}  # k_h values per packed group


@pytest.mark.parametrize(
    ("party", "crash", "sigmoid"),
    [("guest", "sends", "auto"), ("guest", "sends", "taylor"), ("host", "checkpoint", "auto")],
)
def test_a_party_dying_mid_epoch_resumes_to_the_one_vs_rest_reference(
    tmp_path: Path, party: str, crash: str, sigmoid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: one host, the default sigmoid (separable) or the Taylor line (the residuals
    # packed: packing.py), 3 classes, 2 epochs of 3 batches;
    # the party dies in iteration 4 (mid-epoch 1): the guest right after its 17th send (the
    # residual of iteration 4: the alignment salt and verdict, its public key, 3 sends per
    # iteration, epoch_end after iteration 2), before that iteration's checkpoint; the host
    # after iteration 4's one
    xg, xh, y = three_classes()
    params = {**PARAMS, "epochs": 2, "early_stop": False, "sigmoid": sigmoid}
    guest, host = _table(xg, "g", 0, y), _table(xh, "h", 0, None)
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        tasks = lr_tasks(world, "job-r", guest, host, params)
        doomed: dict[str, Any] = {}
        if crash == "sends":
            crash_after_sends(world, GUEST, 17, monkeypatch)
        else:
            doomed["on_progress"] = crash_on_progress(4, 6, unit="iteration")

        # Execute
        again, _ = crash_and_restart(start, world, tasks, party, **doomed)

        # Assert
        assert again.result[0].resumed_from == (3 if crash == "sends" else 4)
        got = [
            world.parties[p].runtime.artifacts.get("job-r", p, role, "lr_0.model").features
            for p, role in ((GUEST, "guest"), (HOST, "host"))
        ]
    _, wg, wh = reference_ovr(xg, xh, y, params)  # auto, one host: separable
    np.testing.assert_allclose(got[0], wg, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[1], wh, rtol=0, atol=1e-6)


def test_a_checkpoint_of_the_class_after_class_one_vs_rest_is_refused_clearly() -> None:
    # Prepare: the state the previous version checkpointed mid-way (class 0 done, class 1
    # under way)
    extra: dict[str, Any] = {"class_weights": [[0.1, 0.2]], "next": 30, "loss_sum": 1.0}

    # Execute / Assert
    with pytest.raises(ValueError, match="run the job again"):
        session.lane_states(extra, 3, multi=True)
    assert session.lane_states({"loss_sum": 1.0}, 1, multi=False)[0] == {"loss_sum": 1.0}


def test_validation_stops_each_class_on_its_own_and_keeps_its_best_epoch(tmp_path: Path) -> None:
    # Prepare: 180 training rows, 60 validation rows whose classes 0 and 1 are swapped, so
    # that classes 0 and 1 validate worse every epoch (best: epoch 0; patience 2 stops them
    # after epoch 2) while class 2 improves every epoch (all 4 run)
    xg, xh, y = three_classes()
    train, check = slice(0, 180), slice(180, ROWS)
    swapped = np.choose(y[check].astype(int), [1.0, 0.0, 2.0])
    params = {**PARAMS, "epochs": 4, "early_stop": False, "sigmoid": "taylor", "patience": 2}
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        for party, role, data, validate in (
            (
                GUEST,
                "guest",
                _table(xg[train], "g", 0, y[train]),
                _table(xg[check], "g", 0, swapped),
            ),
            (HOST, "host", _table(xh[train], "h", 0, None), _table(xh[check], "h", 0, None)),
        ):
            store = world.parties[party].runtime.artifacts
            store.put("job-v", "src", party, role, "data", data, 0)
            store.put("job-v", "src", party, role, "validate", validate, 0)
        tasks = {
            role: world.parties[party].task(
                "job-v",
                "lr_0",
                "hetero_lr",
                role,
                {"guest": [GUEST], "host": [HOST]},
                params=params,
                inputs={"data": "src.data", "validate_data": "src.validate"},
            )
            for party, role in ((GUEST, "guest"), (HOST, "host"))
        }

        # Execute
        runs = [start(world, tasks["guest"]), start(world, tasks["host"])]
        for running in runs:
            running.join()

        # Assert
        assert not runs[0].error and not runs[1].error, (runs[0].error, runs[1].error)
        models = [
            world.parties[p].runtime.artifacts.get("job-v", p, role, "lr_0.model").features
            for p, role in ((GUEST, "guest"), (HOST, "host"))
        ]
        metrics = MetricsReader(world.parties[GUEST].engine).metrics("job-v", "lr_0")
    series: dict[str, list[float]] = defaultdict(list)
    for m in sorted(metrics, key=lambda m: m.step):
        if m.name.startswith("validate_loss_"):
            series[m.name].append(m.value)
    for value, epochs_run, best in ((0, 3, 1), (1, 3, 1), (2, 4, 4)):
        labels = one_vs_rest(y[train], value)
        expected = []
        for epochs in range(1, epochs_run + 1):
            wg, wh, _ = reference_sgd(xg[train], xh[train], labels, params, epochs=epochs)
            z = np.hstack([xg[check], np.ones((60, 1))]) @ wg + xh[check] @ wh
            expected.append(float(np.mean(np.logaddexp(0, -(2 * (swapped == value) - 1) * z))))
        np.testing.assert_allclose(series[f"validate_loss_{value}"], expected, rtol=0, atol=1e-6)
        wg, wh, _ = reference_sgd(xg[train], xh[train], labels, params, epochs=best)
        np.testing.assert_allclose(models[0][:, value], wg, rtol=0, atol=1e-6)
        np.testing.assert_allclose(models[1][:, value], wh, rtol=0, atol=1e-6)
