"""fedserving.scoring's linear parts skip numpy's copies for all-finite rows: the scores stay
those of the offline arithmetic ([x, 1] . w with missing values as 0, as hetero_lr_predict
computes them) within 1e-12, with and without missing or infinite values."""

from __future__ import annotations

import numpy as np
import pytest
from fedflow.components.hetero_lr import math as lrmath
from fedserving import scoring


def offline_guest(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.asarray(lrmath.with_intercept(np.nan_to_num(x, nan=0.0)) @ w)


@pytest.mark.parametrize("rows", [1, 7, 500])
def test_guest_and_host_parts_equal_the_offline_arithmetic(rows: int) -> None:
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, 10)) * 3
    w = rng.normal(size=11)
    np.testing.assert_allclose(scoring.guest_linear(x, w), offline_guest(x, w), atol=1e-12)
    x[0, 3] = np.nan  # a missing value counts as 0
    np.testing.assert_allclose(scoring.guest_linear(x, w), offline_guest(x, w), atol=1e-12)
    assert np.isfinite(scoring.guest_linear(x, w)).all()
    h = rng.normal(size=(rows, 20))
    wh = rng.normal(size=20)
    np.testing.assert_allclose(scoring.host_linear(h, wh), h @ wh, atol=1e-12)
    h[-1, 0] = np.nan
    np.testing.assert_allclose(
        scoring.host_linear(h, wh), np.nan_to_num(h, nan=0.0) @ wh, atol=1e-12
    )


def test_an_infinite_host_feature_is_clipped_as_nan_to_num_does() -> None:
    h = np.array([[np.inf, 1.0], [2.0, -np.inf]])
    wh = np.array([1e-300, 0.5])
    expected = np.nan_to_num(h, nan=0.0) @ wh
    np.testing.assert_array_equal(scoring.host_linear(h, wh), expected)
    assert not np.isnan(scoring.host_linear(h, wh)).any()
