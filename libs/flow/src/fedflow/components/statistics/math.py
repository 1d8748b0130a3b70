"""statistics' arithmetic (numpy only): one column's profile."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def column_profile(
    values: NDArray[np.float64], quantiles: Sequence[float]
) -> dict[str, float | None]:
    """count, nulls, mean, std, min, max, q<q>, skew, kurtosis of one column (NaN: missing)."""
    present = values[~np.isnan(values)]
    n = len(present)
    profile: dict[str, float | None] = {"count": float(n), "nulls": float(len(values) - n)}
    if n == 0:
        for name in ("mean", "std", "min", "max", *(f"q{q:g}" for q in quantiles)):
            profile[name] = None
        profile["skew"] = profile["kurtosis"] = None
        return profile
    mean = float(present.mean())
    centered = present - mean
    m2 = float(np.mean(centered**2))
    profile["mean"] = mean
    profile["std"] = math.sqrt(m2)
    profile["min"], profile["max"] = float(present.min()), float(present.max())
    for q, value in zip(quantiles, np.quantile(present, list(quantiles)), strict=True):
        profile[f"q{q:g}"] = float(value)
    if m2 > 0.0:
        profile["skew"] = _finite(float(np.mean(centered**3)) / m2**1.5)
        profile["kurtosis"] = _finite(float(np.mean(centered**4)) / m2**2 - 3.0)
    else:  # a constant column: no shape to speak of
        profile["skew"] = profile["kurtosis"] = None
    return profile
