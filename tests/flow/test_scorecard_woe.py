"""The scorecard example (split, binning with WOE/IV, selection by IV, scaling, hetero_lr,
evaluation of validate rows through the train fits) runs end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline

from tests.flow.conftest import EXAMPLE_DATA, GUEST, HOST

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/pipelines/scorecard_woe.yaml"


@pytest.mark.timeout(300)
def test_the_woe_scorecard_example_selects_by_iv_and_scores_validate_rows(tmp_path: Path) -> None:
    # Prepare: the example on breast instead of default_credit, short keys, few epochs
    spec = yaml.safe_load(EXAMPLE.read_text())
    by_name = {c["name"]: c for c in spec["components"]}
    by_name["reader_0"]["params"] = {
        "guest": {"table": "breast_hetero_guest"},
        "host": {"table": "breast_hetero_host"},
    }
    short = {"key_bits": 512, "insecure_short_keys": True}
    by_name["binning_train"]["params"]["common"].update(short)
    # breast's columns all pass IV 0.02: keep the 12 best instead
    by_name["select_train"]["params"]["common"] = {"iv_top_k": 12, "max_missing_rate": 0.5}
    by_name["hetero_lr_0"]["params"]["common"].update(
        epochs=2, batch_size=228, learning_rate=0.5, **short
    )

    # Execute
    result = run_pipeline(
        Pipeline.from_dict(spec), {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp_path
    )

    # Assert: some columns dropped by IV at both parties; validate went through the train fits
    guest_kept = result.output(GUEST, "guest", "select_train", "data").feature_names
    host_kept = result.output(HOST, "host", "select_train", "data").feature_names
    assert len(guest_kept) + len(host_kept) == 12
    assert len(guest_kept) < 10 and len(host_kept) < 20
    assert result.output(HOST, "host", "select_validate", "data").feature_names == host_kept
    binned = result.output(HOST, "host", "binning_validate", "data")
    assert set(np.unique(binned.features).tolist()) <= set(range(11))
    scored = result.output(GUEST, "guest", "predict_validate", "data")
    assert len(scored.ids) == result.metric("eval_validate", "rows") == 114
    assert result.metric("eval_validate", "auc") > 0.95
    assert result.metric("binning_train", "iv.host_10000_0", GUEST) > 0.0
    # The board's WOE curves: one point per non-empty bin of each column, host's included
    curve = result.curve("binning_train", "woe.host_10000_0", GUEST)
    assert 2 <= len(curve.y) <= 11 and all(v is not None for v in curve.y)
