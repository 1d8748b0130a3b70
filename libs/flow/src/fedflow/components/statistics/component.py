"""statistics' code: each own column's profile, as an artifact and as metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedschemas.audit_payloads import MAX_PROFILED_COLUMNS, ColumnStat, ColumnStats

from fedflow.artifacts import ModelArtifact
from fedflow.components.statistics import PROFILE_REPORT_TAG, StatisticsParams
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
    _report_profile(ctx, table.rows, profiles)
    return {"profile": ModelArtifact(document={"rows": table.rows, "columns": profiles})}


def _report_profile(ctx: ComponentContext, rows: int, profiles: dict[str, dict[str, Any]]) -> None:
    """This profile (missing share, min and max per column; the first MAX_PROFILED_COLUMNS)
    to the party's own audit, as report.column_stats: where the input is a table read by a
    reader (through psi or data_split at most, which keep the values), the audit takes it as
    that table's profile for data.profile_drift (docs/audit.md). `table` names this
    component's input; the audit finds the table from the job's pipeline."""
    columns = [
        ColumnStat(
            name=name[:256] or "?",
            null_share=float(p["nulls"] or 0.0) / rows if rows else 0.0,
            min=_finite(p["min"]),
            max=_finite(p["max"]),
        )
        for name, p in list(profiles.items())[:MAX_PROFILED_COLUMNS]
    ]
    ctx.federation.report(
        ColumnStats(
            job_id=ctx.job_id,
            component=ctx.component,
            attempt=ctx.attempt,
            party_id=ctx.party_id,
            table=f"{ctx.component}.data",
            rows=rows,
            columns=columns,
        ),
        tag=f"{PROFILE_REPORT_TAG}.{ctx.component}",
    )


def _finite(value: float | None) -> float | None:
    # As the read's column_stats: an infinite bound is left out (the wire takes finite floats)
    return value if value is not None and math.isfinite(value) else None
