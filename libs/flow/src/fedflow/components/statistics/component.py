"""statistics' code: each own column's profile, as an artifact and as metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedflow.artifacts import ModelArtifact
from fedflow.components.statistics import StatisticsParams
from fedflow.components.statistics.math import column_profile
from fedflow.tables import TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

MAX_METRIC_NAME = 128


def run(ctx: ComponentContext) -> Mapping[str, ModelArtifact]:
    params = ctx.params_as(StatisticsParams)
    table = ctx.input("data")
    columns = params.columns or list(table.feature_names)
    missing = [c for c in columns if c not in table.feature_names]
    if missing:
        raise TableError(
            f"statistics: no column {missing[0]!r} in this party's table "
            f"(features: {', '.join(table.feature_names)})"
        )
    profiles: dict[str, dict[str, Any]] = {}
    rows: list[tuple[str, float, int]] = [("rows", float(table.rows), -1)]
    rows.append(("columns", float(len(columns)), -1))
    for name in columns:
        ctx.check_canceled()
        profile = column_profile(table.column(name), params.quantiles)
        profiles[name] = profile
        for stat, value in profile.items():
            metric = f"{name}.{stat}"
            if value is not None and len(metric) <= MAX_METRIC_NAME:
                rows.append((metric, value, -1))
    ctx.metrics.log_many(rows)
    return {"profile": ModelArtifact(document={"rows": table.rows, "columns": profiles})}
