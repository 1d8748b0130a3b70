"""Hetero LR scoring for online requests: pure numpy, the same arithmetic as the offline
`hetero_lr_predict` (fedflow.components.hetero_lr.predict), so online scores equal offline
scores of the same rows.

Guest: z = [x_g, 1] . w_g + sum over hosts of u_h, score = sigmoid(z). Host: u_h = x_h . w_h.
A missing value (NaN) counts as 0, as in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr.session import INTERCEPT
from numpy.typing import NDArray

Floats = NDArray[np.float64]


class FeatureError(ValueError):
    """A request's features do not fit the model (-> 422)."""


def guest_features(model_names: Sequence[str]) -> list[str]:
    """The features a guest request must give: the model's names without the intercept."""
    return [name for name in model_names if name != INTERCEPT]


def guest_matrix(rows: Sequence[Mapping[str, object]], model_names: Sequence[str]) -> Floats:
    """The request rows' features in the model's order; FeatureError naming the first row and
    feature that is missing, unknown or not a finite number (null is a missing value: 0)."""
    names = guest_features(model_names)
    wanted = set(names)
    out = np.empty((len(rows), len(names)), dtype=np.float64)
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - wanted)
        if unknown:
            raise FeatureError(f"row {i}: unknown feature {unknown[0]!r}; the model takes {names}")
        for j, name in enumerate(names):
            if name not in row:
                raise FeatureError(f"row {i}: feature {name!r} is missing")
            value = row[name]
            if value is None:
                out[i, j] = np.nan
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FeatureError(f"row {i}: feature {name!r} is not a number")
            if not np.isfinite(value):
                raise FeatureError(f"row {i}: feature {name!r} is not finite")
            out[i, j] = float(value)
    return out


def _missing_as_zero(features: Floats) -> Floats:
    # np.nan_to_num's result, without its cost on the usual all-finite rows (it makes four
    # masks and copies: ~20 µs per call for one row, issue #15).
    if np.isfinite(features).all():
        return features
    return np.nan_to_num(features, nan=0.0)


def guest_linear(features: Floats, weights: Floats) -> Floats:
    """u_g = [x_g, 1] . w_g per row (weights in the model's order, intercept last)."""
    # x . w[:-1] + w[-1] equals [x, 1] . w up to the order of one addition (< 1e-15 apart);
    # hstack-ing a column of ones copied the rows for that.
    x = _missing_as_zero(features)
    return np.asarray(x @ weights[:-1] + weights[-1], dtype=np.float64)


def host_linear(features: Floats, weights: Floats) -> Floats:
    """u_h = x_h . w_h per row."""
    return np.asarray(_missing_as_zero(features) @ weights, dtype=np.float64)


def scores(linear: Floats) -> Floats:
    return lrmath.sigmoid(linear)
