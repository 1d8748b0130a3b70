"""homo_feature_binning's code: the global bins in secure steps (or a given model), applied to
this client's rows; the model is a hetero_feature_binning model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import structlog
from numpy.typing import NDArray

from fedflow.artifacts import Artifact
from fedflow.components.hetero_feature_binning.component import (
    Binning,
    from_model,
    to_model,
    transformed,
)
from fedflow.components.homo_feature_binning import HomoFeatureBinningParams
from fedflow.components.homo_feature_binning import math as hbmath
from fedflow.components.homo_feature_scale import secure
from fedflow.components.homo_feature_scale.component import columns_table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

NAME = "homo_feature_binning"
log = structlog.get_logger("fedflow.components.homo_feature_binning")
Floats = secure.Floats


@dataclass
class BinningPlan:
    """homo_feature_scale's steps 0 and 1, then step 2: the histograms over the grid.

    step 2  stats: lo, width per column (2f)   vector: histograms over 2^24 (f cells), 1 limb
    final   stats: split point counts (f), then the points, padded with 0 (f (bin_num - 1))
    """

    params: HomoFeatureBinningParams
    moments: secure.MomentsPlan = field(init=False)
    constant: NDArray[np.bool_] = field(init=False, default_factory=lambda: np.zeros(0, bool))
    points_in_end_cells: int = 0

    def __post_init__(self) -> None:
        self.moments = secure.MomentsPlan(self.params.value_bound)

    def first(self, features: int) -> Floats:
        return self.moments.first(features)

    def length(self, r: int, features: int) -> int:
        return features * self.params.grid_cells if r == 2 else self.moments.length(r, features)

    def limbs(self, r: int) -> int:
        return 1 if r == 2 else self.moments.limbs(r)

    def vector(self, r: int, stats: Floats, x: Floats) -> Floats:
        if r < 2:
            return self.moments.vector(r, stats, x)
        f = x.shape[1]
        return hbmath.histogram(x, stats[:f], stats[f:], self.params.grid_cells) / secure.ROW_SCALE

    def next(self, r: int, stats: Floats, total: Floats) -> tuple[Floats, bool]:
        p = self.params
        if r == 0:
            return self.moments.next(r, stats, total)
        if r == 1:
            found, _ = self.moments.next(r, stats, total)
            f = stats.size
            mean, std = found[:f], found[f:]
            self.constant = std <= 0.0
            lo, width = hbmath.grid(mean, std, p.grid_std, p.grid_cells)
            return np.concatenate([lo, width]), False
        f = stats.size // 2
        counts = np.rint(total * secure.ROW_SCALE).reshape(f, p.grid_cells)
        points, self.points_in_end_cells = [], 0
        for j in range(f):
            if self.constant[j]:
                points.append(np.zeros(0))
                continue
            found, ends = hbmath.split_points(
                counts[j], float(stats[j]), float(stats[f + j]), p.method, p.bin_num
            )
            points.append(found)
            self.points_in_end_cells += ends
        matrix = np.zeros((f, p.bin_num - 1))
        for j, found in enumerate(points):
            matrix[j, : found.size] = found
        sizes = np.array([found.size for found in points], dtype=np.float64)
        return np.concatenate([sizes, matrix.ravel()]), True


def binning_of(stats: Floats, columns: list[str], params: HomoFeatureBinningParams) -> Binning:
    """The final stats as hetero_feature_binning's Binning."""
    f = len(columns)
    sizes = stats[:f].astype(np.int64)
    matrix = stats[f:].reshape(f, params.bin_num - 1)
    points = [matrix[j, : sizes[j]].copy() for j in range(f)]
    return Binning(params.method, params.bin_num, list(columns), points)


def run(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(HomoFeatureBinningParams)
    plan = BinningPlan(params)
    if ctx.role == "arbiter":
        secure.fit(ctx, plan, None, params)
        ctx.metrics.log("points_in_end_cells", float(plan.points_in_end_cells))
        return {}
    table = ctx.input("data")
    if "model" in ctx.inputs:
        model = ctx.model("model")
        binning, transform, woe = from_model(model)
        secure.tell_arbiter_apply(ctx)
        ctx.metrics.log("binned_columns", float(len(binning.columns)))
        return {"data": transformed(table, binning, transform, woe), "model": model}
    columns = params.columns or list(table.feature_names)
    part = secure.checked_rows(columns_table(table, columns, NAME), NAME, params.value_bound)
    stats = secure.fit(ctx, plan, part, params)
    assert stats is not None
    if plan.constant.size:  # this party aggregated
        ctx.metrics.log("points_in_end_cells", float(plan.points_in_end_cells))
        if plan.points_in_end_cells:
            log.warning(
                "split_points_in_end_cells",
                count=plan.points_in_end_cells,
                reason="a split point fell in a grid end cell, where values beyond mean +- "
                "grid_std std are clamped: it may be far from the exact one; raise grid_std",
            )
    binning = binning_of(stats, columns, params)
    ctx.metrics.log("binned_columns", float(len(columns)))
    ctx.metrics.log("rows", float(table.rows))
    return {
        "data": transformed(table, binning, params.transform, None),
        "model": to_model(binning, params.transform, None),
    }
