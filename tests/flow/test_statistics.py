"""statistics: each column's profile equals numpy's and scipy's computations on the values
present; missing values are counted, not used."""

from __future__ import annotations

import numpy as np
import pytest
from fedflow.components.statistics import StatisticsParams
from fedflow.components.statistics.math import column_profile
from pydantic import ValidationError
from scipy import stats
from sklearn.datasets import load_breast_cancer


def test_a_column_profile_matches_numpy_and_scipy() -> None:
    # Prepare: a skewed column with missing values
    values = load_breast_cancer().data[:, 3].copy()  # mean area: right-skewed
    values[[5, 17, 300]] = np.nan
    present = values[~np.isnan(values)]

    # Execute
    profile = column_profile(values, [0.1, 0.5, 0.9])

    # Assert
    assert profile["count"] == len(values) - 3 and profile["nulls"] == 3
    expected = {
        "mean": present.mean(),
        "std": present.std(),
        "min": present.min(),
        "max": present.max(),
        "q0.1": np.quantile(present, 0.1),
        "q0.5": np.median(present),
        "q0.9": np.quantile(present, 0.9),
        "skew": stats.skew(present),
        "kurtosis": stats.kurtosis(present),
    }
    for name, value in expected.items():
        assert profile[name] == pytest.approx(float(value), rel=1e-12), name
    assert profile["skew"] is not None and profile["skew"] > 1.0


def test_an_all_missing_or_constant_column_has_no_moments_rather_than_nan() -> None:
    empty = column_profile(np.array([np.nan, np.nan]), [0.5])
    constant = column_profile(np.array([2.0, 2.0, np.nan]), [0.5])

    assert empty["count"] == 0 and empty["nulls"] == 2 and empty["mean"] is None
    assert constant["mean"] == 2.0 and constant["std"] == 0.0 and constant["skew"] is None


def test_a_quantile_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"quantiles must be in \[0, 1\], got 1.5"):
        StatisticsParams(quantiles=[0.5, 1.5])
