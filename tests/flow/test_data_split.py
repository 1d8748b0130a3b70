"""data_split: every party puts the same rows in the same part without a message, the parts
have the asked sizes, and the seed decides the split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fedflow.components.data_split import DataSplitParams
from fedflow.components.data_split.component import parts_of
from fedflow.pipeline import Pipeline, PipelineError
from fedflow.standalone import run_pipeline

from tests.lr.conftest import EXAMPLE_DATA, GUEST, HOST

IDS = [f"id{i}" for i in range(1000)]


def test_the_split_depends_on_the_ids_and_the_seed_not_their_order() -> None:
    # Prepare
    shuffled = list(np.random.default_rng(3).permutation(IDS))

    # Execute
    parts = dict(zip(IDS, parts_of(IDS, (0.7, 0.2, 0.1), seed=5).tolist(), strict=True))
    again = dict(zip(shuffled, parts_of(shuffled, (0.7, 0.2, 0.1), seed=5).tolist(), strict=True))
    other_seed = parts_of(IDS, (0.7, 0.2, 0.1), seed=6).tolist()

    # Assert: exact sizes, same parts in any order, another seed another split
    assert parts == again
    assert np.bincount(list(parts.values())).tolist() == [700, 200, 100]
    assert other_seed != list(parts.values())


def test_fractions_that_do_not_add_up_to_1_are_refused_at_submission() -> None:
    with pytest.raises(PipelineError, match=r"must be 1, got 0\.9"):
        Pipeline.from_dict(split_pipeline({"train_fraction": 0.6, "validate_fraction": 0.3}))
    assert DataSplitParams(train_fraction=0.5, validate_fraction=0.25, test_fraction=0.25)


def split_pipeline(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "split",
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            {
                "name": "reader_0",
                "type": "reader",
                "params": {
                    "guest": {"table": "breast_hetero_guest"},
                    "host": {"table": "breast_hetero_host"},
                },
            },
            {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
            {
                "name": "split_0",
                "type": "data_split",
                "inputs": {"data": "psi_0.data"},
                "params": {"common": params},
            },
            {"name": "stats_0", "type": "statistics", "inputs": {"data": "split_0.train"}},
        ],
    }


def test_guest_and_host_hold_the_same_rows_in_each_part_and_nothing_crosses(
    tmp_path: Path,
) -> None:
    # Prepare
    params = {"train_fraction": 0.6, "validate_fraction": 0.25, "test_fraction": 0.15, "seed": 9}

    # Execute
    result = run_pipeline(
        Pipeline.from_dict(split_pipeline(params)),
        {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA},
        tmp_path,
    )

    # Assert: the same ids per part at both parties; the parts cover the rows once
    seen: list[str] = []
    # The ranking is cut at round(569 * 0.6) = 341 and round(569 * 0.85) = 484
    for part, size in (("train", 341), ("validate", 143), ("test", 85)):
        at_guest = result.output(GUEST, "guest", "split_0", part)
        at_host = result.output(HOST, "host", "split_0", part)
        assert at_guest.ids.tolist() == at_host.ids.tolist()
        assert at_guest.labels is not None and at_host.labels is None
        assert len(at_guest.ids) == size
        assert result.metric("split_0", f"{part}_rows", HOST) == len(at_guest.ids)
        seen += at_guest.ids.tolist()
    assert sorted(seen) == sorted(result.output(GUEST, "guest", "psi_0", "data").ids.tolist())
    # Stratified in expectation: each part's label mean near the whole table's
    overall = result.metric("split_0", "label_mean", GUEST)
    assert abs(result.metric("split_0", "train_label_mean", GUEST) - overall) < 0.1
    # Only psi's messages crossed (data_split and statistics exchange nothing)
    assert {c.tag for c in result.crossings} <= {
        "guest_blinded",
        "host_blinded",
        "guest_reblinded",
        "host_reblinded",
    }
    # statistics profiled the train part at each party, its own columns only
    assert result.metric("stats_0", "rows", HOST) == 341
    assert result.metric("stats_0", "columns", HOST) == 20
    assert result.metric("stats_0", "columns", GUEST) == 10


SCORECARD = Path(__file__).resolve().parents[2] / "examples/pipelines/scorecard_credit.yaml"


@pytest.mark.timeout(300)
def test_the_scorecard_example_trains_on_train_rows_and_evaluates_unseen_validate_rows(
    tmp_path: Path,
) -> None:
    # Prepare: the example on breast instead of default_credit, short keys, few epochs
    spec = yaml.safe_load(SCORECARD.read_text())
    by_name = {c["name"]: c for c in spec["components"]}
    by_name["reader_0"]["params"] = {
        "guest": {"table": "breast_hetero_guest"},
        "host": {"table": "breast_hetero_host"},
    }
    by_name["hetero_lr_0"]["params"]["common"].update(
        epochs=3, batch_size=128, learning_rate=0.5, key_bits=512, insecure_short_keys=True
    )

    # Execute
    result = run_pipeline(
        Pipeline.from_dict(spec), {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp_path
    )

    # Assert: evaluated on the 114 validate rows only, none of which trained the model
    train_ids = set(result.output(GUEST, "guest", "split_0", "train").ids.tolist())
    scored = result.output(GUEST, "guest", "predict_validate", "data")
    assert len(scored.ids) == result.metric("eval_validate", "rows") == 114
    assert not train_ids & set(scored.ids.tolist())
    assert result.metric("eval_validate", "auc") > 0.95
    # Validate scores against the train scores: the same population, a small PSI
    assert 0.0 <= result.metric("eval_validate", "psi") < 0.25
    assert sum(result.curve("eval_validate", "psi_actual").y) == pytest.approx(1.0)
    # The validate rows were scaled with the train rows' fit (not their own)
    raw = result.output(HOST, "host", "split_0", "validate")
    train = result.output(HOST, "host", "split_0", "train")
    scaled = result.output(HOST, "host", "scale_validate", "data")
    expected = (raw.features - train.features.mean(0)) / train.features.std(0)
    np.testing.assert_allclose(scaled.features, expected, rtol=0, atol=1e-9)
    assert result.metric("statistics_0", "rows", HOST) == 455
