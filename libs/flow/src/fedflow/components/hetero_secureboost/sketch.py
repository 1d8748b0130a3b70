"""A mergeable quantile sketch of a numeric column, for tables too large to sort at once or
read in one piece (chunks, partitions, a streaming import): summarise each piece, merge the
summaries, read the cut points off the result. Exact while it holds every distinct value.

    sketch = QuantileSketch.of(chunk_1).merge(QuantileSketch.of(chunk_2))
    cuts = sketch.cuts(max_bin=32)     # the same rule as math.quantile_cuts

A summary is the column's distinct finite values, sorted, each with a weight (how many rows it
stands for). While it has at most `size` entries it is exact: `cuts` then equals
`math.quantile_cuts` on the whole column (tests/secureboost/test_sketch.py). Above `size` it is
pruned to `size` entries kept at evenly spaced ranks, each kept entry taking the weight of the
dropped ones just below it; a rank query is then off by at most total / (size - 1) rows per
prune a value went through (a merge prunes once), i.e. `rank_error` of the total. Pruning is
XGBoost's weighted-quantile summary idea in its simplest form (Chen and Guestrin, 2016).

NaN and infinite values are not summarised (a missing value has its own bin); weights are
row counts (floats, so that weighted rows could be summarised too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]

DEFAULT_SIZE: Final = 8192
"""Entries a summary keeps: rank error at most total / 8191 per prune (0.012%)."""


@dataclass(frozen=True)
class QuantileSketch:
    values: Floats
    """Distinct finite values, ascending."""
    weights: Floats
    """Rows each value stands for (> 0), aligned with `values`."""
    size: int = DEFAULT_SIZE
    prunes: int = 0
    """How many prunes the deepest value went through (0: exact)."""

    def __post_init__(self) -> None:
        if self.size < 2:
            raise ValueError(f"a quantile sketch keeps at least 2 entries (size {self.size})")
        if self.values.shape != self.weights.shape or self.values.ndim != 1:
            raise ValueError("a quantile sketch's values and weights must be equal 1-d arrays")

    @classmethod
    def of(
        cls, column: NDArray[np.floating] | NDArray[np.integer], size: int = DEFAULT_SIZE
    ) -> QuantileSketch:
        """The summary of one piece of a column (its finite values)."""
        data = np.asarray(column, dtype=np.float64).ravel()
        finite = data[np.isfinite(data)]
        values, counts = np.unique(finite, return_counts=True)
        return cls(values, counts.astype(np.float64), size)._pruned(0)

    @property
    def exact(self) -> bool:
        return self.prunes == 0

    @property
    def total(self) -> float:
        return float(self.weights.sum())

    @property
    def rank_error(self) -> float:
        """The most a rank read off this summary is off by, as a fraction of the total."""
        return self.prunes / (self.size - 1)

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """The summary of both pieces (pruned to the smaller size if it grew beyond it)."""
        values = np.concatenate([self.values, other.values])
        weights = np.concatenate([self.weights, other.weights])
        distinct, inverse = np.unique(values, return_inverse=True)
        summed = np.bincount(inverse, weights=weights, minlength=distinct.size).astype(np.float64)
        merged = QuantileSketch(distinct, summed, min(self.size, other.size))
        return merged._pruned(max(self.prunes, other.prunes))

    def _pruned(self, prunes: int) -> QuantileSketch:
        if self.values.size <= self.size:
            return QuantileSketch(self.values, self.weights, self.size, prunes)
        cum = np.cumsum(self.weights)
        # the entry holding each evenly spaced rank (0-based ranks 0 .. total - 1); the first
        # and the last entry are always kept (the column's minimum and maximum)
        targets = np.linspace(0.0, cum[-1] - 1.0, self.size)
        keep = np.unique(np.searchsorted(cum, targets, side="right"))
        keep = np.unique(np.concatenate([[0], keep, [self.values.size - 1]]))
        kept_cum = cum[keep]
        weights = np.diff(np.concatenate([[0.0], kept_cum]))
        return QuantileSketch(self.values[keep], weights, self.size, prunes + 1)

    def value_at_rank(self, rank: Floats) -> Floats:
        """The value at each 0-based rank (the rank-th smallest row's value)."""
        cum = np.cumsum(self.weights)
        at = np.searchsorted(cum, np.asarray(rank, dtype=np.float64), side="right")
        return self.values[np.minimum(at, self.values.size - 1)]

    def cuts(self, max_bin: int) -> Floats:
        """Cut points c_0 < c_1 < ... (at most max_bin - 1), math.quantile_cuts' rule: every
        distinct value its own bin when there are at most max_bin of them (exact summaries
        only), else the quantiles at i / max_bin (numpy's method "higher": the value at rank
        ceil(p (N - 1))) above the minimum."""
        if max_bin < 2:
            raise ValueError(f"max_bin must be at least 2 (got {max_bin})")
        if self.values.size == 0:
            return np.zeros(0)
        if self.exact and self.values.size <= max_bin:
            return self.values[1:].astype(np.float64)
        levels = np.arange(1, max_bin) / max_bin
        ranks = np.ceil(levels * (self.total - 1))
        cuts = self.value_at_rank(ranks)
        return np.unique(cuts[cuts > self.values[0]]).astype(np.float64)


def sketch_of(pieces: Iterable[Floats], size: int = DEFAULT_SIZE) -> QuantileSketch:
    """One column's summary from its pieces: each summarised, then merged pairwise (a tree
    of merges, so a value goes through about log2(pieces) prunes, not one per piece)."""
    level = [QuantileSketch.of(piece, size) for piece in pieces]
    if not level:
        return QuantileSketch(np.zeros(0), np.zeros(0), size)
    while len(level) > 1:
        pairs = [level[i].merge(level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def sketch_cuts(pieces: Iterable[Floats], max_bin: int, size: int = DEFAULT_SIZE) -> Floats:
    """One column's cut points from its pieces (math.quantile_cuts' rule; exact while the
    summary holds every distinct value)."""
    return sketch_of(pieces, size).cuts(max_bin)
