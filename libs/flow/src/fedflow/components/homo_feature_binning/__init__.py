"""homo_feature_binning: horizontal quantile or equal-width bins from secure sums of per-client
statistics and histograms.

Every client (the guest and each host) holds its own rows with the same feature columns; the
aggregator is the arbiter when the pipeline names one, else the guest (homo_lr's layout).
Three steps, each one Bonawitz secure aggregation over homo_lr's sa_* messages (the steps and
the fixed point are homo_feature_scale's, secure.py), then the result:

  step 0, 1  homo_feature_scale's: the global mean m and std s per column
  step 2     aggregator -> clients  stats  the grid per column: lo = m - k s, width 2 k s / cells
             each client contributes its histogram over the grid (values beyond it clamped
             into the end cells; counts over 2^24, exact in the ring)
  final      aggregator -> clients  stats  the split points per column (meta final)

The aggregator derives bin_num bins per column from the summed histogram (math.py: the
quantile split points within one cell width, 2 k s / cells, above the exact quantiles of the
pooled rows when bin_num <= k^2). What each party learns: the aggregator, the global count,
sum and centred sum of squares per column and the global histogram over the grid, never one
client's (with three clients or more; with the guest aggregating for one host the guest
learns the host's, as in homo_feature_scale); the clients, the global mean and std (through
the grid) and the split points.

Outputs: `data` (`transform`: none, the rows unchanged; bin, each binned column replaced by
its bin index, hetero_feature_binning's bins: bin 0 is x <= s_0, ..., a missing value in slot
bin_num) and `model`, a hetero_feature_binning model (split points per column, no WOE), so
hetero_feature_binning or homo_feature_binning given it as `model` applies its bins to new
rows without exchanging anything. docs/homo_preprocessing.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedflow.components.base import ComponentDescriptor, InputSpec
from fedflow.components.homo_feature_scale import HomoPreprocessingParams
from fedflow.components.homo_feature_scale.protocol import HOMO_FEATURE_BINNING_PROTOCOL


class HomoFeatureBinningParams(HomoPreprocessingParams):
    method: Literal["quantile", "bucket"] = "quantile"
    """quantile: bins of (nearly) equal counts over the pooled rows; bucket: equal width
    between the (approximate) global minimum and maximum."""
    bin_num: int = Field(default=10, ge=2, le=100)
    """Bins per column (missing values get one more)."""
    transform: Literal["none", "bin"] = "none"
    """What the output table holds in the binned columns: the values, or the bin index."""
    grid_cells: int = Field(default=2048, ge=64, le=65_536)
    """Cells of the fine grid per column: the split points are within one cell width (2
    grid_std std / grid_cells) of the exact ones."""
    grid_std: float = Field(default=8.0, gt=1.0, le=1_000.0)
    """The grid spans mean +- grid_std std: every exact quantile split point lies inside it
    when bin_num <= grid_std^2 (Chebyshev)."""


HOMO_FEATURE_BINNING = ComponentDescriptor(
    name="homo_feature_binning",
    description=(
        "horizontal quantile or equal-width binning from secure sums of the clients' "
        "statistics and histograms (the arbiter aggregates when the pipeline names one, else "
        "the guest)"
    ),
    entry="fedflow.components.homo_feature_binning.component:run",
    roles=("guest", "host", "arbiter"),
    params=HomoFeatureBinningParams,
    inputs=(
        InputSpec(
            "data",
            description="this client's own rows (same columns everywhere)",
            roles=("guest", "host"),
        ),
        InputSpec(
            "model",
            required=False,
            description="a hetero_feature_binning or homo_feature_binning model to apply",
            roles=("guest", "host"),
        ),
    ),
    outputs=("data", "model"),
    protocol=HOMO_FEATURE_BINNING_PROTOCOL,
)
