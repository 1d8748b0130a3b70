"""hetero_secureboost's parameters (light: pydantic only, read by the pipeline validator).

Names and meanings follow XGBoost's where one exists (docs/secureboost.md lists the mapping).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedflow.components.base import ComponentParams

SECURE_KEY_BITS = 2048
MAX_DEPTH = 12
MAX_BIN = 1024

Objective = Literal["binary:logistic", "multi:softmax", "reg:squarederror"]
TreeMode = Literal["standard", "layered", "mix"]


class HeteroSecureBoostParams(ComponentParams):
    objective: Objective = "binary:logistic"
    num_class: int = Field(default=2, ge=2, le=100)
    """Classes of multi:softmax (labels 0 .. num_class - 1); one tree per class per round."""
    num_trees: int = Field(default=5, ge=1, le=10_000)
    """Boosting rounds (multi:softmax grows num_class trees per round)."""
    max_depth: int = Field(default=3, ge=1, le=MAX_DEPTH)
    learning_rate: float = Field(default=0.3, gt=0.0, le=1.0)
    """XGBoost's eta: every leaf weight is multiplied by it."""
    reg_lambda: float = Field(default=1.0, ge=0.0)
    """L2 penalty on leaf weights (XGBoost's lambda)."""
    gamma: float = Field(default=0.0, ge=0.0)
    """Minimum gain to split (XGBoost's gamma / min_split_loss, same scale)."""
    min_child_weight: float = Field(default=1.0, ge=0.0)
    """Minimum hessian sum in each child."""
    min_samples_leaf: int = Field(default=1, ge=1)
    """Minimum rows in each child (FATE's protection: no leaf isolates fewer rows)."""
    max_bin: int = Field(default=32, ge=2, le=MAX_BIN)
    """Quantile bins per feature (plus one bin for missing values)."""
    subsample: float = Field(default=1.0, gt=0.0, le=1.0)
    """Fraction of rows drawn (without replacement) for each tree."""
    colsample: float = Field(default=1.0, gt=0.0, le=1.0)
    """Fraction of each party's features drawn for each tree (each party draws its own)."""
    seed: int = Field(default=0, ge=0)
    goss: bool = False
    """Gradient-based one-side sampling (LightGBM's GOSS) on top of `subsample`: each tree
    learns from the goss_top_rate rows with the largest |g| and goss_other_rate of the rows
    drawn from the rest (their g and h amplified by (1 - top) / other)."""
    goss_top_rate: float = Field(default=0.2, gt=0.0, lt=1.0)
    goss_other_rate: float = Field(default=0.1, gt=0.0, lt=1.0)
    early_stopping_rounds: int = Field(default=0, ge=0)
    """Stop when the validation loss has not improved for this many rounds (0: never) and keep
    the trees up to the best round; needs the `validate_data` input."""
    complete_secure: bool = False
    """FATE's complete-secure mode: the first tree uses the guest's features only, so its
    leaves (which every later tree's gradients depend on) never reflect a host split."""
    tree_mode: TreeMode = "standard"
    """FATE's fast SecureBoost. "layered": the top `host_depth` levels of every tree split
    on the hosts' features only, the levels below on the guest's only (the hosts build no
    histograms there and never learn those nodes' rows). "mix": whole rounds alternate, the
    even ones (0, 2, ...) on the guest's features only (nothing encrypted or sent: the hosts
    sit them out), the odd ones on the hosts' features only. "standard": every level, every
    party's features."""
    host_depth: int = Field(default=1, ge=1, le=MAX_DEPTH)
    """layered: the levels on the hosts' features (at most max_depth; the guest's: the rest)."""
    key_bits: int = Field(default=2048, ge=256, le=8192, json_schema_extra={"policy": "key_bits"})
    """The guest's Paillier key length; each party's policy sets its own floor."""
    insecure_short_keys: bool = Field(
        default=False, json_schema_extra={"policy": "insecure_short_keys"}
    )
    """Allow keys shorter than 2048 bits (tests only; refused unless the party's policy
    allows it)."""

    @model_validator(mode="after")
    def _check(self) -> HeteroSecureBoostParams:
        if self.goss and self.goss_top_rate + self.goss_other_rate > 1.0:
            raise ValueError("goss_top_rate + goss_other_rate must be at most 1")
        if self.tree_mode == "layered" and self.host_depth > self.max_depth:
            raise ValueError(
                f"host_depth {self.host_depth} is above max_depth {self.max_depth}: a layered "
                "tree has max_depth levels, the first host_depth on the hosts' features"
            )
        if self.key_bits < SECURE_KEY_BITS and not self.insecure_short_keys:
            raise ValueError(
                f"key_bits {self.key_bits} is below {SECURE_KEY_BITS}: such keys are insecure "
                "(set insecure_short_keys: true for tests, and the parties' policies must "
                "allow it)"
            )
        return self

    @property
    def trees_per_round(self) -> int:
        return self.num_class if self.objective == "multi:softmax" else 1

    @property
    def total_trees(self) -> int:
        return self.num_trees * self.trees_per_round


class HeteroSecureBoostPredictParams(ComponentParams):
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    """binary:logistic: a row is predicted 1 when its probability is at least this."""
