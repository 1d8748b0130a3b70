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
        # Each column divided by a power of two near its largest magnitude (exact), so
        # that squares and ranges of values up to 1.8e308 do not overflow (a 1e300 value made
        # std inf, scale 1, and the column stayed unscaled).
        _, exponent = np.frexp(np.nan_to_num(np.nanmax(np.abs(x), axis=0), nan=0.0))
        unit = np.ldexp(1.0, exponent - 1)  # |x| / unit < 2; finite up to the largest float
        y = x / unit
        if method == "standard":
            center, scale = np.nanmean(y, axis=0) * unit, np.nanstd(y, axis=0) * unit
        elif method == "min_max":
            center = np.nanmin(y, axis=0) * unit
            scale = (np.nanmax(y, axis=0) - np.nanmin(y, axis=0)) * unit
        else:
            raise ValueError(f"feature_scale: unknown method {method!r}")
    wide = [name for name, v in zip(columns, scale, strict=True) if np.isinf(v)]
    if wide:
        raise ValueError(
            f"feature_scale: the range of column(s) {', '.join(wide)} exceeds the largest "
            "float (1.8e308); use method standard or bring the values to a smaller unit"
        )
    center = np.nan_to_num(center, nan=0.0)
    scale = np.where(np.isfinite(scale) & (scale > 0.0), scale, 1.0)
    return Scaling(method, list(columns), center.astype(np.float64), scale.astype(np.float64))
