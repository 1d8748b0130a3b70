"""Helpers every fedmq metrics module shares (fedbus.metrics, fedcommon.http, the services').

Histogram buckets for latencies follow the 1-2.5-5 series per decade, which keeps the relative
error of a quantile read from them about even across the range; `decade_buckets` spells it once
instead of each module writing its own tuple of literals.
"""

from __future__ import annotations

import math

_STEPS = ("1", "2.5", "5")


def decade_buckets(low: float, high: float) -> tuple[float, ...]:
    """The 1-2.5-5 bucket bounds from `low` to `high`, both included and both of the series
    (decade_buckets(0.001, 0.01) == (0.001, 0.0025, 0.005, 0.01)).

    Each bound is parsed from its decimal text, so it is the very float the literal would be
    (0.0025, never 2.5 * 0.001 = 0.0025000000000000005)."""
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high, got {low}, {high}")
    bounds: list[float] = []
    for exponent in range(math.floor(math.log10(low)), math.floor(math.log10(high)) + 1):
        for step in _STEPS:
            bound = float(f"{step}e{exponent}")
            if low <= bound <= high:
                bounds.append(bound)
    if not bounds or bounds[0] != low or bounds[-1] != high:
        raise ValueError(f"{low} and {high} must both be of the 1-2.5-5 series")
    return tuple(bounds)
