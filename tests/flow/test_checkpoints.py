"""Checkpoint state without pickle, the checkpoint store, and the metrics writer."""

from __future__ import annotations

import numpy as np
import pytest
from fedflow.checkpoints import CheckpointStore
from fedflow.metrics import MetricsReader, MetricsWriter
from fedflow.statecodec import StateCodecError, decode_state, encode_state
from fedflow.task import TaskKey
from sqlalchemy.engine import Engine

from tests.flow.conftest import KEY


def test_state_with_arrays_rng_state_and_big_ints_round_trips() -> None:
    # Prepare: an RNG part-way through, its state holds 128-bit ints.
    rng = np.random.default_rng(42)
    rng.standard_normal(5)
    state = {
        "rng": rng.bit_generator.state,
        "weights": np.arange(6, dtype=np.float64).reshape(2, 3),
        "ids": np.array(["a", "bb", "ccc"]),
        "mask": np.array([True, False]),
        "cursor": 17,
        "secret": b"\x00\x01",
        "history": (1.5, None, "x"),
        7: np.int64(3),
    }

    # Execute
    again = decode_state(encode_state(state))

    # Assert
    restored = np.random.default_rng()
    restored.bit_generator.state = again["rng"]
    np.testing.assert_array_equal(restored.standard_normal(3), rng.standard_normal(3))
    np.testing.assert_array_equal(again["weights"], state["weights"])
    assert again["ids"].tolist() == ["a", "bb", "ccc"]
    assert again["mask"].dtype == np.bool_
    assert again["cursor"] == 17 and again["secret"] == b"\x00\x01"
    assert again["history"] == [1.5, None, "x"] and again[7] == 3


@pytest.mark.parametrize(
    "value", [object(), np.array([1 + 2j]), np.array([{}], dtype=object), {1.5: 2}]
)
def test_state_that_cannot_be_stored_safely_is_refused(value: object) -> None:
    with pytest.raises(StateCodecError):
        encode_state({"x": value})


def test_bytes_that_are_not_a_state_are_refused() -> None:
    with pytest.raises(StateCodecError):
        decode_state(b"\xc1\xc1")


def test_the_store_keeps_the_latest_checkpoint_per_task(engine: Engine) -> None:
    store = CheckpointStore(engine)
    other = TaskKey("job-1", "lr_0", 1, "9999", "guest")  # a rerun: a new attempt
    assert store.latest(KEY) is None
    store.save(KEY, 0, {"w": np.zeros(2)})
    store.save(KEY, 1, {"w": np.ones(2)})
    latest = store.latest(KEY)
    assert latest is not None and latest.iteration == 1
    np.testing.assert_array_equal(latest.state["w"], np.ones(2))
    assert store.latest(other) is None
    store.clear(KEY)
    assert store.latest(KEY) is None


def test_metrics_replace_a_step_logged_again_and_curves_round_trip(engine: Engine) -> None:
    writer = MetricsWriter(engine, KEY)
    writer.log("loss", 0.9, step=0)
    writer.log("loss", 0.7, step=1)
    writer.log("loss", 0.6, step=1)  # a resumed component logs its last step again
    writer.log("auc", float("nan"))
    writer.curve("roc", [0.0, 0.5, 1.0], [0.0, 0.8, 1.0], x_label="fpr", y_label="tpr")
    reader = MetricsReader(engine)
    loss = [(m.step, m.value) for m in reader.metrics("job-1") if m.name == "loss"]
    assert loss == [(0, 0.9), (1, 0.6)]
    assert np.isnan(reader.values("job-1", "lr_0")["auc"])
    (roc,) = reader.curves("job-1", "lr_0")
    assert (roc.x, roc.y, roc.x_label) == ([0.0, 0.5, 1.0], [0.0, 0.8, 1.0], "fpr")
