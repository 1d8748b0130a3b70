"""hetero_feature_binning's arithmetic (numpy only, no IO): split points, bin indices, WOE/IV.

Bins of a column with split points s_0 < s_1 < ... < s_{k-1}: bin 0 is x <= s_0, bin i is
s_{i-1} < x <= s_i, bin k is x > s_{k-1}; a missing value (NaN) goes to the column's missing
bin, which is always slot `bin_num` (the last), so every column has bin_num + 1 slots and a
slot may be empty.

quantile  the split points are values of the column: for i = 1 .. bin_num - 1 the smallest
          value v with at least i / bin_num of the present values <= v; duplicates and the
          maximum dropped, so no bin but the missing one is empty and ties stay together.
bucket    equal width: min + (max - min) * i / bin_num, i = 1 .. bin_num - 1 (bins may be
          empty).

WOE and IV of one column, from each slot's events (label 1) and non-events (label 0), E and N
the totals over the column's rows:
  rate_e = e / E,  rate_n = n / N; a slot with e == 0 or n == 0 (but some rows) uses
  (e + a) / E and (n + a) / N instead (a = adjustment_factor, FATE's default 0.5);
  woe = ln(rate_e / rate_n),  iv = sum over non-empty slots of (rate_e - rate_n) * woe.
An empty slot has woe 0 and adds nothing to iv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]

METHODS = ("quantile", "bucket")


def split_points(column: Floats, method: str, bin_num: int) -> Floats:
    """The split points of one column (missing values left out); none for a constant or an
    all-missing column (one bin)."""
    present = np.sort(column[~np.isnan(column)])
    if present.size == 0 or present[0] == present[-1]:
        return np.zeros(0, dtype=np.float64)
    if method == "quantile":
        ranks = np.ceil(np.arange(1, bin_num) * present.size / bin_num).astype(np.int64) - 1
        points = np.unique(present[np.clip(ranks, 0, present.size - 1)])
    elif method == "bucket":
        low, high = float(present[0]), float(present[-1])
        points = np.unique(low + (high - low) * np.arange(1, bin_num) / bin_num)
    else:
        raise ValueError(f"hetero_feature_binning: unknown method {method!r} (quantile, bucket)")
    return np.asarray(points[points < present[-1]], dtype=np.float64)


def bin_index(column: Floats, points: Floats, bin_num: int) -> Ints:
    """Each row's slot: searchsorted over the split points (upper bounds inclusive), the
    missing slot `bin_num` for NaN."""
    if points.size >= bin_num:
        raise ValueError(f"{points.size} split points do not fit {bin_num} bins")
    slots = np.searchsorted(points, column, side="left").astype(np.int64)
    slots[np.isnan(column)] = bin_num
    return slots


def slot_sums(slots: Ints, values: Floats, bin_num: int) -> Floats:
    """Per slot, the sum of `values` over the rows in it (bin_num + 1 slots)."""
    return np.bincount(slots, weights=values, minlength=bin_num + 1).astype(np.float64)


@dataclass(frozen=True)
class WoeIv:
    """One column's slots: events, non-events, WOE, and the column's IV."""

    events: Floats
    nonevents: Floats
    woe: Floats
    iv_parts: Floats
    iv: float


def woe_iv(events: Floats, nonevents: Floats, adjustment: float) -> WoeIv:
    """WOE per slot and IV of one column from its per-slot counts (see the module doc)."""
    events = np.asarray(events, dtype=np.float64)
    nonevents = np.asarray(nonevents, dtype=np.float64)
    total_e, total_n = float(events.sum()), float(nonevents.sum())
    if total_e <= 0 or total_n <= 0:
        raise ValueError(
            "hetero_feature_binning: WOE needs both label values among the rows "
            f"(found {total_e:g} rows labelled 1 and {total_n:g} labelled 0)"
        )
    used = (events + nonevents) > 0
    pure = used & ((events == 0) | (nonevents == 0))
    e = np.where(pure, events + adjustment, events)
    n = np.where(pure, nonevents + adjustment, nonevents)
    rate_e = np.where(used, e / total_e, 1.0)
    rate_n = np.where(used, n / total_n, 1.0)
    woe = np.where(used, np.log(rate_e / rate_n), 0.0)
    parts = np.where(used, (rate_e - rate_n) * woe, 0.0)
    return WoeIv(events, nonevents, woe, parts, float(parts.sum()))


def woe_of_slots(slots: Ints, woe: Floats) -> Floats:
    """Each row's value replaced by the WOE of its slot."""
    return np.asarray(woe[slots], dtype=np.float64)
