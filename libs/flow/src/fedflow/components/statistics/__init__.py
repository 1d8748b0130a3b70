"""statistics: a profile of this party's own columns, recorded at this party.

Runs at the guest and every host, each on its own table; exchanges nothing. Per column:
count (present values), nulls, mean, std (ddof 0), min, max, the `quantiles` asked for
(linear interpolation), skew and excess kurtosis (the population moments, as
scipy.stats.skew / kurtosis with their defaults), missing values left out.

Output: `profile`, a ModelArtifact whose document is {"rows": n, "columns": {name: {stat:
value}}} (a statistic that has no value, e.g. the mean of an all-missing column, is null), the
table's profile at this party. Metrics: `rows`, `columns`, and `<column>.<stat>` for every
column and statistic (quantiles as `q0.25` ...), so `fedmq job metrics` shows them.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec
from fedflow.protocol import Protocol

PROFILE_REPORT_TAG = "column_profile"
"""The tag prefix of the profile a statistics run reports to the party's audit
("column_profile.<component>"; a table read reports "column_stats.<table>")."""


class StatisticsParams(ComponentParams):
    quantiles: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75], max_length=99)
    """Quantiles to report, each in [0, 1]."""
    columns: list[str] | None = Field(default=None, min_length=1)
    """This party's columns to profile; None: every feature column."""

    @field_validator("quantiles")
    @classmethod
    def _in_unit_interval(cls, quantiles: list[float]) -> list[float]:
        bad = [q for q in quantiles if not 0.0 <= q <= 1.0]
        if bad:
            raise ValueError(f"quantiles must be in [0, 1], got {bad[0]:g}")
        return quantiles


STATISTICS = ComponentDescriptor(
    name="statistics",
    description="count, nulls, mean, std, min/max, quantiles, skew, kurtosis of own columns",
    entry="fedflow.components.statistics.component:run",
    roles=("guest", "host"),
    params=StatisticsParams,
    inputs=(InputSpec("data", description="this party's table"),),
    outputs=("profile",),
    protocol=Protocol(component_type="statistics", description="exchanges nothing"),
)
