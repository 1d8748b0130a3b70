"""hetero_feature_selection: each party keeps some of its own columns, by IV (from a
hetero_feature_binning model), by statistics of its own columns, or by hand.

Filters, each optional (a column is kept when it passes every filter that applies to it):

  local (each party on its own columns, nothing exchanged)
    max_missing_rate   drop a column whose share of missing values is above this
    min_variance       drop a column whose variance (present values, ddof 0) is below this
    min_unique         drop a column with fewer distinct present values than this
    drop_columns       drop these columns (this party's; per party in the params)
  by IV (the guest decides, from its binning model's IVs of its own and the hosts' columns)
    iv_threshold       drop a binned column whose IV is below this
    iv_top_k           keep only the k binned columns of highest IV, guest's and hosts' together
  keep_columns         these columns are kept whatever a filter says

With an IV filter the guest sends each host, once:

  order 1  guest -> host  kept_by_iv  1/0 per column the host binned, in its binning order (k,)

so a host learns which of its own binned columns pass the IV filter, and nothing about the
guest's columns or any IV; the guest learns nothing of the hosts' local filters or of which
host columns remain in the end. A column the binning did not cover is not judged by IV. The
IV filters need the `binning` input (the party's own hetero_feature_binning model) at every
party and must be the same at every party (set them in `common`); top-k counts columns before
the local filters, so fewer than k may remain.

Outputs: `data` (this party's table with the kept columns) and `model` (the kept columns and
why each other one went). With a `model` input nothing is judged or exchanged: the table keeps
that model's columns (a predict path). docs/hetero_feature_selection.md.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec
from fedflow.protocol import Protocol, array_rule


class HeteroFeatureSelectionParams(ComponentParams):
    iv_threshold: float | None = Field(default=None, ge=0.0)
    iv_top_k: int | None = Field(default=None, ge=1)
    max_missing_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    min_variance: float | None = Field(default=None, ge=0.0)
    min_unique: int | None = Field(default=None, ge=1)
    drop_columns: list[str] = Field(default_factory=list)
    keep_columns: list[str] = Field(default_factory=list)

    @property
    def by_iv(self) -> bool:
        return self.iv_threshold is not None or self.iv_top_k is not None

    @model_validator(mode="after")
    def _checked(self) -> HeteroFeatureSelectionParams:
        both = sorted(set(self.drop_columns) & set(self.keep_columns))
        if both:
            raise ValueError(f"column {both[0]!r} is in both drop_columns and keep_columns")
        return self


PROTOCOL = Protocol(
    component_type="hetero_feature_selection",
    description="the guest tells each host which of its binned columns pass the IV filter",
    messages=(
        array_rule(
            "kept_by_iv",
            "guest",
            "host",
            "plain_control",
            1,
            "(*,)",
            "IV filters only: 1/0 per column the host binned (its binning order)",
            dtype="int64",
        ),
    ),
)

HETERO_FEATURE_SELECTION = ComponentDescriptor(
    name="hetero_feature_selection",
    description="each party keeps its own columns by IV, missing share, variance, uniques or hand",
    entry={
        "guest": "fedflow.components.hetero_feature_selection.component:guest",
        "host": "fedflow.components.hetero_feature_selection.component:host",
    },
    roles=("guest", "host"),
    params=HeteroFeatureSelectionParams,
    inputs=(
        InputSpec("data", description="this party's table"),
        InputSpec(
            "binning",
            required=False,
            description="this party's hetero_feature_binning model (for the IV filters)",
        ),
        InputSpec(
            "model",
            required=False,
            description="a hetero_feature_selection model to apply instead of selecting",
        ),
    ),
    outputs=("data", "model"),
    protocol=PROTOCOL,
)
