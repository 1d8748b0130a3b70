"""The mergeable quantile sketch (hetero_secureboost.sketch): exact cut points while it holds
every distinct value (equal to math.quantile_cuts), rank-bounded ones once pruned, whatever
the pieces a column comes in; math.fit_cuts uses it for long columns."""

from __future__ import annotations

import numpy as np
import pytest
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.sketch import QuantileSketch, sketch_cuts, sketch_of


def _columns() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    skewed = rng.lognormal(size=3000)
    skewed[rng.random(3000) < 0.1] = np.nan
    return [
        rng.normal(size=2500),
        rng.integers(0, 7, size=2000).astype(np.float64),  # few distinct values
        np.repeat(rng.normal(size=40), rng.integers(1, 200, size=40)),  # heavy duplicates
        skewed,
        np.array([np.nan, np.inf, 1.0]),
        np.array([np.nan]),
    ]


@pytest.mark.parametrize("max_bin", [4, 16, 32])
def test_an_unpruned_sketch_of_any_pieces_gives_the_exact_cuts(max_bin: int) -> None:
    for column in _columns():
        # Prepare: the column in uneven pieces
        pieces = np.array_split(column, [7, 500, 1300])

        # Execute
        got = sketch_cuts(pieces, max_bin, size=4096)

        # Assert
        np.testing.assert_array_equal(got, sbmath.quantile_cuts(column, max_bin))
        assert sketch_of(pieces, size=4096).exact


def test_a_pruned_sketch_keeps_each_cut_within_its_rank_bound() -> None:
    # Prepare: 200,000 distinct values in 16 pieces, summaries of 257 entries
    rng = np.random.default_rng(3)
    column = rng.standard_t(3, size=200_000)
    pieces = np.array_split(rng.permutation(column), 16)

    # Execute
    sketch = sketch_of(pieces, size=257)
    cuts = sketch.cuts(32)

    # Assert: rows and extremes kept; each cut's rank is the exact quantile's, give or take
    # the bound the sketch states (4 levels of merges plus the pieces' own prunes)
    assert not sketch.exact and sketch.values.size <= 257
    assert sketch.total == column.size
    assert sketch.values[0] == column.min() and sketch.values[-1] == column.max()
    assert 0 < sketch.rank_error <= 5 / 256
    ordered = np.sort(column)
    wanted = np.ceil(np.arange(1, 32) / 32 * (column.size - 1))
    got_ranks = np.searchsorted(ordered, cuts, side="left")
    assert cuts.size == 31
    assert np.max(np.abs(got_ranks - wanted)) <= sketch.rank_error * column.size
    assert np.max(np.abs(got_ranks - wanted)) > 0  # pruned: not the exact quantiles


def test_merging_is_symmetric_and_refuses_bad_sizes() -> None:
    rng = np.random.default_rng(5)
    a, b = (
        QuantileSketch.of(rng.normal(size=5000), 300),
        QuantileSketch.of(rng.normal(size=700), 300),
    )

    ab, ba = a.merge(b), b.merge(a)

    np.testing.assert_array_equal(ab.values, ba.values)
    np.testing.assert_array_equal(ab.weights, ba.weights)
    assert ab.total == 5700
    with pytest.raises(ValueError, match="at least 2 entries"):
        QuantileSketch.of(np.arange(3.0), size=1)
    with pytest.raises(ValueError, match="max_bin"):
        a.cuts(1)


def test_fit_cuts_sketches_long_columns_and_stays_exact_on_few_distinct_values() -> None:
    # Prepare: a long continuous column and a long one with 5 distinct values
    rng = np.random.default_rng(8)
    x = np.column_stack([rng.normal(size=60_000), rng.integers(0, 5, size=60_000)])

    # Execute: columns above 20,000 rows are sketched (pieces of 20,000 rows)
    sketched = sbmath.fit_cuts(x, 32, sketch_rows=20_000)
    exact = sbmath.fit_cuts(x, 32)

    # Assert: the few-valued column's cuts are exact; the other's within the sketch's bound
    np.testing.assert_array_equal(sketched[1], exact[1])
    assert sketched[0].size == exact[0].size == 31
    ordered = np.sort(x[:, 0])
    ranks = np.searchsorted(ordered, sketched[0]) - np.searchsorted(ordered, exact[0])
    assert np.max(np.abs(ranks)) <= 60_000 * 3 / 8191  # 3 pieces: a prune each, 2 merges
