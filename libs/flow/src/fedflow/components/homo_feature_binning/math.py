"""homo_feature_binning's arithmetic (numpy only, no IO): the fine grid, a client's histogram
over it, and split points from the summed histogram.

The grid of a column with global mean m and std s: `cells` cells of width w = 2 k s / cells
from lo = m - k s (k = grid_std); cell i holds lo + i w <= x < lo + (i + 1) w, and values
beyond the grid are clamped into the end cells. A constant column (s = 0) gets no split
points.

quantile  for i = 1 .. bin_num - 1 the cell where the cumulative count first reaches
          ceil(i N / bin_num), and the split point its upper edge. The exact point (the
          smallest present value v with at least i / bin_num of the values <= v,
          hetero_feature_binning's definition, numpy's inverted_cdf) lies in that cell, so the
          split point is above it by at most w. By Chebyshev's inequality at most 1 / k^2 of
          the values lie outside m +- k s, so for bin_num <= k^2 (64 at k = 8) every exact
          point is inside the grid and the bound holds; a point in an end cell, where values
          beyond the grid are clamped, has no bound (counted: points_in_end_cells).
bucket    equal width between the lower edge of the first non-empty cell and the upper edge of
          the last: each edge within w of the global minimum / maximum when they lie inside
          the grid (clamped end cells: the grid's ends instead).

Split points are deduplicated, and a point at or above the last non-empty cell's upper edge is
dropped (hetero_feature_binning drops the maximum the same way).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]


def grid(mean: Floats, std: Floats, k: float, cells: int) -> tuple[Floats, Floats]:
    """Each column's grid: lower end and cell width (a constant column: width 1 around it)."""
    spread = std > 0.0
    width = np.where(spread, 2.0 * k * std / cells, 1.0)
    lo = np.where(spread, mean - k * std, mean - cells / 2.0)
    return lo.astype(np.float64), width.astype(np.float64)


def cell_of(column: Floats, lo: float, width: float, cells: int) -> NDArray[np.int64]:
    """The cell of each present value of `column` (missing values left out), clamped."""
    present = column[~np.isnan(column)]
    return np.clip(np.floor((present - lo) / width), 0, cells - 1).astype(np.int64)


def histogram(x: Floats, lo: Floats, width: Floats, cells: int) -> Floats:
    """Per column, the count of present values in each cell: (columns * cells,)."""
    out = np.zeros((x.shape[1], cells), dtype=np.float64)
    for j in range(x.shape[1]):
        out[j] = np.bincount(cell_of(x[:, j], lo[j], width[j], cells), minlength=cells)
    return out.ravel()


def split_points(
    counts: Floats, lo: float, width: float, method: str, bin_num: int
) -> tuple[Floats, int]:
    """One column's split points from its summed histogram, and how many of them lie in an end
    cell, where values beyond the grid are clamped (no error bound for those)."""
    cells = counts.size
    total = float(counts.sum())
    filled = np.flatnonzero(counts > 0)
    if total == 0 or filled.size == 0:
        return np.zeros(0), 0
    first, last = int(filled[0]), int(filled[-1])
    if method == "quantile":
        cumulative = np.cumsum(counts)
        ranks = np.ceil(np.arange(1, bin_num) * total / bin_num)
        at = np.searchsorted(cumulative, ranks, side="left")
        points = lo + (at + 1) * width
    elif method == "bucket":
        low, high = lo + first * width, lo + (last + 1) * width
        at = np.array([first, last])
        points = low + (high - low) * np.arange(1, bin_num) / bin_num
    else:
        raise ValueError(f"homo_feature_binning: unknown method {method!r} (quantile, bucket)")
    ends = int(np.count_nonzero((at == 0) | (at == cells - 1)))
    points = np.unique(points)
    return np.asarray(points[points < lo + (last + 1) * width], dtype=np.float64), ends
