"""homo_feature_scale: horizontal standard scaling from a secure sum of per-client statistics.

Every client (the guest and each host) holds its own rows with the same feature columns. The
aggregator is the arbiter when the pipeline names one (it has no data: the guest tells it the
column count, `model_shape`), else the guest, which is then also a client (homo_lr's layout,
docs/homo_lr.md). Two steps, each one Bonawitz secure aggregation (homo_lr's sa_* messages,
secure.py), then the result:

  step 0   aggregator -> clients  stats  zeros; meta features: the column-name digest
           each client contributes per column: count of present values, sum x
  step 1   aggregator -> clients  stats  the global mean m per column
           each client contributes: count, sum (x - m), sum (x - m)^2
  final    aggregator -> clients  stats  mean and std per column (meta final)

What each party learns: the aggregator learns only the sums over the clients of each step
(the global count, sum and centred sum of squares per column) and which clients took part;
never one client's statistics when three or more clients take part (with the guest
aggregating for a single host it learns that host's, by subtracting its own: name an arbiter).
The clients learn the global mean and standard deviation. A client that drops out of a step is
left out of that step's sums (secure aggregation recovers the others' sum): the final mean and
std are then those of the rows of step 1's clients, exactly (metrics clients, dropped).

Precision: the statistics cross in homo_lr's 64-bit fixed point, split into two limbs (hi, lo)
so that a sum is exact to 2^-(2f+1) of its scaled range per client (secure.py): the mean and
std equal numpy's over the union of the clients' rows to float64 rounding. The scales are
public: value_bound bounds every |x| (a client with a larger value refuses, naming the
column), and a client holds at most 2^24 rows.

Methods: standard only. min_max needs the global minimum and maximum, which no sum gives; it
is refused (a secure sum cannot hide one client's extreme, and revealing each client's
min/max to the aggregator is the leak this component exists to avoid). homo_feature_binning's
histogram gives approximate global quantiles instead.

Outputs: `data` (the scaled table; missing values stay missing) and `model`, a feature_scale
model (kind feature_scale: the method, the columns, their center and scale), so feature_scale
or homo_feature_scale given it as `model` applies it without fitting and without exchanging
anything (a predict pipeline).

Layout: this `__init__` (the declaration, light), protocol.py (the messages, shared with
homo_feature_binning), secure.py (the steps and the fixed point, shared), component.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec
from fedflow.components.homo_feature_scale.protocol import HOMO_FEATURE_SCALE_PROTOCOL


class HomoPreprocessingParams(ComponentParams):
    """What homo_feature_scale and homo_feature_binning share."""

    columns: list[str] | None = Field(default=None, min_length=1)
    """The columns to fit and transform (the same at every client); None: every feature."""
    value_bound: float = Field(default=1e9, gt=0.0, le=1e150)
    """The fixed-point scale every client shares: every |value| in the fitted columns is at
    most this (a client holding a larger one refuses, naming the column)."""
    round_timeout_s: float = Field(default=120.0, gt=0.0, le=86_400.0)
    """How long the aggregator waits at each step of a secure sum before it treats the
    clients it has not heard from as dropped for that step."""
    aggregator_wait_s: float = Field(default=7_200.0, gt=0.0, le=30 * 86_400.0)
    """How long in all a client waits for the aggregator's next message (homo_lr's)."""
    min_summed_updates: int = Field(default=1, ge=1, le=10_000)
    """homo_lr's: the fewest clients' statistics the aggregator may learn only as one sum with
    this client's. With 2 or more a client refuses, before it sends anything, the guest
    aggregating for it alone (name an arbiter and use enough clients), and to unmask a step
    whose survivors would sum fewer (its policy: components.<type>.bounds.
    min_summed_updates.min)."""


class HomoFeatureScaleParams(HomoPreprocessingParams):
    method: Literal["standard", "min_max"] = "standard"
    """standard: x' = (x - mean) / std (ddof 0; a constant column: 0). min_max is refused."""

    @model_validator(mode="after")
    def _no_min_max(self) -> HomoFeatureScaleParams:
        if self.method == "min_max":
            raise ValueError(
                "homo_feature_scale: method min_max needs the global minimum and maximum, "
                "which a secure sum does not give (each client's would have to be shown to "
                "the aggregator): use method standard, or homo_feature_binning (bucket) for "
                "an approximate global range"
            )
        return self


HOMO_FEATURE_SCALE = ComponentDescriptor(
    name="homo_feature_scale",
    description=(
        "horizontal standard scaling: global mean and std from secure sums of the clients' "
        "statistics (the arbiter aggregates when the pipeline names one, else the guest)"
    ),
    entry="fedflow.components.homo_feature_scale.component:run",
    roles=("guest", "host", "arbiter"),
    params=HomoFeatureScaleParams,
    inputs=(
        InputSpec(
            "data",
            description="this client's own rows (same columns everywhere)",
            roles=("guest", "host"),
        ),
        InputSpec(
            "model",
            required=False,
            description="a feature_scale model to apply instead of fitting one",
            roles=("guest", "host"),
        ),
    ),
    outputs=("data", "model"),
    protocol=HOMO_FEATURE_SCALE_PROTOCOL,
)
