"""Components: psi gives both sides the intersection only, in the same order; evaluation's
metrics match direct computations; the standalone runner runs a whole pipeline."""

from __future__ import annotations

import itertools
import os
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from fedflow.components.evaluation.math import binary_metrics
from fedflow.pipeline import Pipeline
from fedflow.runner import TaskResult
from fedflow.standalone import LocalWorld, StandaloneError, run_pipeline
from fedflow.tables import Table, TableError

from tests.flow.conftest import EXAMPLE_DATA, make_table, put_input

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipelines" / "psi_eval.yaml"


def run_psi(
    world: LocalWorld, tables: dict[tuple[str, str], Table], chunk: int
) -> dict[str, Table]:
    parties = {
        "guest": [p for p, r in tables if r == "guest"],
        "host": [p for p, r in tables if r == "host"],
    }
    results: dict[str, TaskResult] = {}
    errors: list[BaseException] = []

    def one(party: str, role: str) -> None:
        try:
            runtime = world.parties[party].runtime
            spec = world.parties[party].task(
                "job-psi",
                "psi_0",
                "psi",
                role,
                parties,
                params={"chunk_size": chunk},
                inputs={"data": "src.data"},
            )
            results[party] = runtime.run_task(spec, recv_timeout=60)
        except BaseException as exc:
            errors.append(exc)

    for (party, role), table in tables.items():
        put_input(world, party, role, table, "job-psi")
    threads = [threading.Thread(target=one, args=key) for key in tables]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return {
        party: world.parties[party].runtime.artifacts.get("job-psi", party, role, "psi_0.data")
        for party, role in tables
    }


def test_psi_leaves_both_sides_the_shared_rows_in_the_same_order(tmp_path: Path) -> None:
    # Prepare: 300 guest ids, 250 host ids, 150 shared; chunks of 64 points per message.
    guest_ids = [f"u{i:04d}" for i in range(300)]
    host_ids = [f"u{i:04d}" for i in range(150, 400)]
    rng = np.random.default_rng(5)
    rng.shuffle(guest_ids)
    rng.shuffle(host_ids)
    guest_table, host_table = make_table(guest_ids, 2, seed=1), make_table(host_ids, 5, seed=2)

    # Execute
    with LocalWorld(["9999", "10000"], tmp_path / "w") as world:
        out = run_psi(world, {("9999", "guest"): guest_table, ("10000", "host"): host_table}, 64)
        crossed = world.crossings.snapshot()

    # Assert
    shared = sorted(set(guest_ids) & set(host_ids))
    assert out["9999"].ids.tolist() == shared
    assert out["10000"].ids.tolist() == shared
    # Each side keeps its own rows (features, labels) for those ids.
    np.testing.assert_array_equal(
        out["10000"].features, host_table.align_to(np.array(shared)).features
    )
    assert out["9999"].labels is not None
    # Only blinded points crossed: id_set arrays, never an id in the clear.
    assert {c.kind for c in crossed} == {"id_set"}
    assert len([c for c in crossed if c.tag == "guest_blinded"]) == 5  # 300 points / 64


def test_psi_with_two_hosts_keeps_the_ids_all_three_share(tmp_path: Path) -> None:
    guest = make_table([str(i) for i in range(0, 60)], seed=1)
    host_a = make_table([str(i) for i in range(20, 90)], seed=2)
    host_b = make_table([str(i) for i in range(40, 50)] + [str(i) for i in range(55, 70)], seed=3)
    with LocalWorld(["1", "2", "3"], tmp_path / "w") as world:
        out = run_psi(
            world, {("1", "guest"): guest, ("2", "host"): host_a, ("3", "host"): host_b}, 1000
        )
    expected = sorted({str(i) for i in range(40, 50)} | {str(i) for i in range(55, 60)})
    assert [out[p].ids.tolist() for p in ("1", "2", "3")] == [expected] * 3


def _pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return float(wins / (len(pos) * len(neg)))


def test_evaluation_metrics_match_direct_computation() -> None:
    # Prepare: scores with ties.
    rng = np.random.default_rng(3)
    labels = rng.random(200) > 0.4
    scores = np.round(rng.random(200) * 0.6 + labels * 0.3, 2)

    # Execute
    m = binary_metrics(labels, scores, threshold=0.5, curve_points=50)

    # Assert
    assert m.auc == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)
    decided = scores >= 0.5
    assert m.accuracy == pytest.approx(np.mean(decided == labels))
    assert m.precision == pytest.approx((decided & labels).sum() / decided.sum())
    assert m.recall == pytest.approx((decided & labels).sum() / labels.sum())
    ks = max(
        abs((scores[labels] >= t).mean() - (scores[~labels] >= t).mean()) for t in np.unique(scores)
    )
    assert m.ks == pytest.approx(ks)
    p = np.clip(scores, 1e-15, 1 - 1e-15)
    assert m.log_loss == pytest.approx(-np.mean(labels * np.log(p) + (~labels) * np.log(1 - p)))
    fpr, tpr = m.roc
    assert len(fpr) <= 50 and (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def test_the_psi_eval_example_runs_in_standalone_mode(tmp_path: Path) -> None:
    # Prepare
    pipeline = Pipeline.from_yaml(EXAMPLE.read_text())
    events: list[tuple[str, str, str]] = []

    # Execute
    result = run_pipeline(
        pipeline,
        {"9999": EXAMPLE_DATA, "10000": EXAMPLE_DATA},
        tmp_path,
        on_event=lambda state, party, role, component, _p: events.append((state, party, component)),
    )

    # Assert
    assert {(t.party_id, t.component, t.state) for t in result.tasks} == {
        ("9999", "reader_0", "success"),
        ("10000", "reader_0", "success"),
        ("9999", "psi_0", "success"),
        ("10000", "psi_0", "success"),
        ("9999", "eval_0", "success"),
    }
    assert result.metric("psi_0", "intersection_size", "9999") == 569
    assert result.metric("psi_0", "intersection_size", "10000") == 569
    assert 0.9 < result.metric("eval_0", "auc") <= 1.0
    assert result.curve("eval_0", "roc").x_label == "fpr"
    assert result.output("10000", "host", "psi_0").features.shape == (569, 20)
    assert {c.kind for c in result.crossings} == {"id_set"}
    assert ("success", "9999", "eval_0") in events


def test_a_failing_task_stops_the_run_and_names_the_party(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("score_column: x0", "score_column: no_such_column")
    pipeline = Pipeline.from_yaml(text)
    with pytest.raises(
        StandaloneError,
        match=r"eval_0 failed at party 9999 \(guest\): TableError: evaluation: score_column "
        r"'no_such_column' is not a column of its input",
    ):
        run_pipeline(pipeline, {"9999": EXAMPLE_DATA, "10000": EXAMPLE_DATA}, tmp_path)


def test_a_table_a_party_does_not_have_is_named(tmp_path: Path) -> None:
    pipeline = Pipeline.from_yaml(EXAMPLE.read_text().replace("breast_hetero_host", "credit_x"))
    with pytest.raises(TableError, match=r"party 10000 has no table 'credit_x' \(tables: "):
        run_pipeline(pipeline, {"9999": EXAMPLE_DATA, "10000": EXAMPLE_DATA}, tmp_path)


def test_psi_checkpoints_hold_its_secrets_sealed_never_in_the_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: record the secrets PSI draws, and every checkpoint state it saves
    from fedflow.checkpoints import CheckpointStore
    from fedflow.components.psi import component as psi
    from fedflow.statecodec import encode_state

    drawn: list[bytes] = []

    def recording_urandom(n: int) -> bytes:
        value = os.urandom(n)
        drawn.append(value)
        return value

    saved: list[bytes] = []
    original_save = CheckpointStore.save

    def save_and_copy(self: CheckpointStore, key: object, iteration: int, state: object) -> None:
        saved.append(encode_state(state))
        original_save(self, key, iteration, state)  # type: ignore[arg-type]

    # Only psi's own draws: the module's `os` is swapped, not the os module everyone uses.
    monkeypatch.setattr(psi, "os", types.SimpleNamespace(urandom=recording_urandom))
    monkeypatch.setattr(CheckpointStore, "save", save_and_copy)
    guest_ids = [f"u{i:04d}" for i in range(120)]
    host_ids = [f"u{i:04d}" for i in range(60, 200)]

    # Execute
    with LocalWorld(["9999", "10000"], tmp_path / "w") as world:
        tables = {
            ("9999", "guest"): make_table(guest_ids, 2, seed=1),
            ("10000", "host"): make_table(host_ids, 2, seed=2),
        }
        out = run_psi(world, tables, 64)

    # Assert: the intersection is right, each party saved its secret once, sealed
    assert out["9999"].ids.tolist() == sorted(set(guest_ids) & set(host_ids))
    assert len(drawn) == 2 and len(saved) == 2
    for state in saved:
        for secret in drawn:
            assert secret not in state and secret.hex().encode() not in state


def test_psi_with_no_shared_id_fails_at_every_party_naming_the_sizes(tmp_path: Path) -> None:
    # Prepare: the guest writes ids as integers, the host as floats: nothing is shared as text.
    guest = make_table([str(i) for i in range(40)], seed=1)
    host = make_table([f"{i}.0" for i in range(40)], seed=2)

    # Execute
    with (
        LocalWorld(["9999", "10000"], tmp_path / "w") as world,
        pytest.raises(AssertionError) as failed,
    ):
        run_psi(world, {("9999", "guest"): guest, ("10000", "host"): host}, 1000)

    # Assert: both parties refuse, each naming its sizes and the likely cause.
    text = str(failed.value)
    assert text.count("psi: 0 of this party's 40 ids are shared with") == 2
    assert "fewer than min_intersection (1)" in text and "'7.0'" in text
