"""Helpers every fedmq metrics module shares (fedbus.metrics, fedcommon.http, the services').

Histogram buckets for latencies follow the 1-2.5-5 series per decade, which keeps the relative
error of a quantile read from them about even across the range; `decade_buckets` spells it once
instead of each module writing its own tuple of literals.
"""

from __future__ import annotations

import math
from typing import Any

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


class CachedLabels:
    """A labelled Prometheus metric whose `labels(*values)` children are remembered.

    prometheus_client's `labels()` checks and converts every value and takes the metric's lock
    on each call (~10-20 µs; a serving request made nine such calls per process, issue #15). A
    child, once made, stays the same object as long as nobody `remove()`s it, which fedmq never
    does; so here the first call per tuple of values makes it and later calls are one dict
    lookup. Values must be given positionally and as the strings the series will carry (a
    tuple of other types would be a different key for the same child, still correct, only
    cached twice). Everything else (`collect`, `_name`, ...) is the metric's."""

    __slots__ = ("_children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            # two threads may both get here: labels() gives both the same child
            child = self._children[values] = self.metric.labels(*values)
        return child

    def __getattr__(self, name: str) -> Any:
        return getattr(self.metric, name)
