"""The plaintext reference (fedflow.components.hetero_secureboost.math.fit) against XGBoost
on the joined table with the same trees, depth, learning rate, bins, lambda and
min_child_weight: binary train AUC within 0.005 (and above the guest-only model), multi-class
accuracy and regression RMSE within 1%."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from fedflow.components.hetero_secureboost import math as sb
from fedflow.components.hetero_secureboost.params import HeteroSecureBoostParams
from sklearn.datasets import load_diabetes, load_digits
from sklearn.metrics import roc_auc_score

from tests.secureboost.data import example, xgboost_settings

SHORT = {"key_bits": 512, "insecure_short_keys": True}


def _xgboost(x: np.ndarray, y: np.ndarray, params: HeteroSecureBoostParams, base: float):
    booster = xgb.train(
        xgboost_settings(params, base), xgb.DMatrix(x, label=y), num_boost_round=params.num_trees
    )
    return booster.predict(xgb.DMatrix(x))


@pytest.mark.parametrize(
    ("name", "trees"), [("breast", 5), ("default_credit", 2)], ids=["breast", "default_credit"]
)
def test_binary_train_auc_is_within_0_005_of_xgboost_and_above_guest_only(
    name: str, trees: int
) -> None:
    # Prepare
    guest, host = example(name)
    assert guest.labels is not None
    y = np.asarray(guest.labels, dtype=np.float64)
    params = HeteroSecureBoostParams(num_trees=trees, max_depth=3, max_bin=32, **SHORT)
    blocks = [guest.features, host.features]

    # Execute
    joined = sb.fit(blocks, y, params)
    guest_only = sb.fit([guest.features], y, params)
    reference = _xgboost(np.hstack(blocks), y, params, base=0.5)

    # Assert
    ours = roc_auc_score(y, joined.predict(blocks))
    theirs = roc_auc_score(y, reference)
    alone = roc_auc_score(y, guest_only.predict([guest.features]))
    print(f"{name}: ours {ours:.5f} xgboost {theirs:.5f} guest-only {alone:.5f}")
    assert abs(ours - theirs) <= 0.005
    assert ours > alone


def _vertical(x: np.ndarray) -> list[np.ndarray]:
    half = x.shape[1] // 2
    return [x[:, :half], x[:, half:]]


def test_multiclass_digits_accuracy_is_within_1_percent_of_xgboost() -> None:
    # Prepare: 10 classes, 3 rounds (accuracy still well below 1, so the comparison bites)
    x, y = load_digits(return_X_y=True)
    y = y.astype(np.float64)
    params = HeteroSecureBoostParams(
        objective="multi:softmax", num_class=10, num_trees=3, max_depth=3, max_bin=32, **SHORT
    )

    # Execute
    model = sb.fit(_vertical(x), y, params)
    ours = float(np.mean(np.argmax(model.predict(_vertical(x)), axis=1) == y))
    theirs = float(np.mean(np.argmax(_xgboost(x, y, params, base=0.5), axis=1) == y))

    # Assert
    print(f"digits accuracy: ours {ours:.4f} xgboost {theirs:.4f}")
    assert abs(ours - theirs) <= 0.01 * theirs
    assert len(model.trees) == 30  # one tree per class per round


def test_regression_diabetes_rmse_is_within_1_percent_of_xgboost() -> None:
    # Prepare
    x, y = load_diabetes(return_X_y=True)
    params = HeteroSecureBoostParams(
        objective="reg:squarederror", num_trees=10, max_depth=3, max_bin=32, **SHORT
    )

    # Execute
    model = sb.fit(_vertical(x), y, params)
    ours = float(np.sqrt(np.mean((model.predict(_vertical(x)) - y) ** 2)))
    predicted = _xgboost(x, y, params, base=float(np.mean(y)))
    theirs = float(np.sqrt(np.mean((predicted - y) ** 2)))

    # Assert
    print(f"diabetes RMSE: ours {ours:.3f} xgboost {theirs:.3f}")
    assert abs(ours - theirs) <= 0.01 * theirs


def test_missing_values_go_to_the_learned_side() -> None:
    # Prepare: the label is 1 exactly where the only feature is missing or large
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 1))
    y = (x[:, 0] > 1.0).astype(np.float64)
    missing = rng.random(400) < 0.3
    x[missing, 0] = np.nan
    y[missing] = 1.0
    params = HeteroSecureBoostParams(num_trees=3, max_depth=2, max_bin=16, **SHORT)

    # Execute
    model = sb.fit([x], y, params)

    # Assert: the root sends missing values right, with the large values
    root = model.trees[0]
    assert root.kind[0] == sb.SPLIT and not root.missing_left[0]
    assert roc_auc_score(y, model.predict([x])) > 0.99


def test_binning_gives_every_distinct_value_a_bin_when_few_and_quantiles_otherwise() -> None:
    few = np.array([3.0, 1.0, 2.0, 2.0, np.nan])
    many = np.arange(1000, dtype=np.float64)

    assert sb.quantile_cuts(few, 32).tolist() == [2.0, 3.0]
    assert sb.bin_features(few[:, None], [sb.quantile_cuts(few, 32)], 32).ravel().tolist() == [
        2,
        0,
        1,
        1,
        32,
    ]
    cuts = sb.quantile_cuts(many, 4)
    counts = np.bincount(sb.bin_features(many[:, None], [cuts], 4).ravel())
    assert counts.tolist() == [250, 250, 250, 250]
