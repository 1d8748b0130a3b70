"""feature_scale's arithmetic (numpy only, no IO): fit a scaling, apply it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class Scaling:
    """x' = (x - center) / scale, column by column."""

    method: str
    columns: list[str]
    center: Floats
    scale: Floats

    def apply(self, x: Floats) -> Floats:
        return np.asarray((x - self.center) / self.scale, dtype=np.float64)


def fit(method: str, columns: list[str], x: Floats) -> Scaling:
    """The scaling of `x`'s columns by `method`, missing values left out; a constant (or
    all-missing) column gets scale 1, so it maps to 0."""
    if x.shape[0] == 0:
        raise ValueError("feature_scale: no rows to fit on")
    with warnings.catch_warnings():
        # numpy warns on an all-missing column; it gets center 0 and scale 1 below.
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "standard":
            center, scale = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        elif method == "min_max":
            center = np.nanmin(x, axis=0)
            scale = np.nanmax(x, axis=0) - center
        else:
            raise ValueError(f"feature_scale: unknown method {method!r}")
    center = np.nan_to_num(center, nan=0.0)
    scale = np.where(np.isfinite(scale) & (scale > 0.0), scale, 1.0)
    return Scaling(method, list(columns), center.astype(np.float64), scale.astype(np.float64))
