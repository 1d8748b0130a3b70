"""hetero_feature_binning: each party bins its own columns; WOE and IV of every column, the
hosts' computed from the guest's Paillier-encrypted labels.

Runs at the guest (which holds the binary label) and every host. Each party bins its own
columns (`method` quantile or bucket, `bin_num` bins, a missing value in its own bin; math.py)
and never shows its values or split points to anyone. The guest computes WOE/IV of its own
columns in plaintext. For each host's columns:

  order 1  guest -> host   public_key        the guest's Paillier public key
  order 1  guest -> host   encrypted_labels  [[y]] per row, guest key                (m, c)
  order 2  host  -> guest  bin_events        [[sum of y over the rows of each bin]],
                                             re-randomised, guest key; decrypted once (b, c)
  order 2  host  -> guest  bin_counts        rows per bin (plaintext aggregate)      (b,)
  order 3  guest -> host   host_woe          reveal_woe_to_host only: WOE per bin    (b,)

b = the host's binned columns x (bin_num + 1): every column has bin_num + 1 slots (the last
for missing values), empty ones included, so the guest does not learn how many distinct bins
a host column has. The guest learns, per host bin, how many rows fall in it and how many of
them are labelled 1 (what WOE and IV are made of); it does not learn the host's values, split
points, column names (host columns are `host_<party>_<i>` at the guest) or which rows are in
a bin (the sums are re-randomised, so they cannot be matched against [[y]]). The host learns
nothing of the labels (it only computes on ciphertexts), unless `reveal_woe_to_host` sends it
the WOE of its bins for `transform: woe`, from which, with its own bin counts, it can work out
the number of rows labelled 1 in each of its bins.

Outputs: `data` (the table, with `transform`: `none` unchanged, `bin` each binned column
replaced by its bin index, `woe` by its bin's WOE) and `model` (split points per column; at the
guest also events, non-events, WOE and IV of every column, its own and the hosts'). With a
`model` input (a training job's binning model) nothing is exchanged: each party applies that
model's bins to new rows. docs/hetero_feature_binning.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec, LabelRule
from fedflow.kit import HE_DIMS, ciphertext_rule
from fedflow.kit import public_key_rules as _key_rules
from fedflow.protocol import Protocol, array_rule

SECURE_KEY_BITS = 2048
MAX_HOSTS = 16


class HeteroFeatureBinningParams(ComponentParams):
    method: Literal["quantile", "bucket"] = "quantile"
    bin_num: int = Field(default=10, ge=2, le=100)
    """Bins per column (missing values get one more)."""
    columns: list[str] | None = Field(default=None, min_length=1)
    """This party's columns to bin; None: every feature column."""
    transform: Literal["none", "bin", "woe"] = "none"
    """What the output table holds in the binned columns: the values (none), the bin index,
    or the bin's WOE (at a host only with reveal_woe_to_host)."""
    adjustment_factor: float = Field(default=0.5, gt=0.0, le=10.0)
    """Added to the events and non-events of a bin where one of them is 0 (WOE stays finite)."""
    reveal_woe_to_host: bool = Field(
        default=False,
        json_schema_extra={
            "policy": "reveals",
            "reveals": "guest",
            "what": "the WOE of each host bin goes to that host, which with its own bin counts "
            "gives it the number of rows labelled 1 in each of its bins",
        },
    )
    """Send each host the WOE of its bins (needed for transform: woe at a host)."""
    key_bits: int = Field(default=2048, ge=256, le=8192, json_schema_extra={"policy": "key_bits"})
    """The guest's Paillier key length."""
    insecure_short_keys: bool = Field(
        default=False, json_schema_extra={"policy": "insecure_short_keys"}
    )
    """Allow keys shorter than 2048 bits (tests only)."""

    @model_validator(mode="after")
    def _checked(self) -> HeteroFeatureBinningParams:
        if self.key_bits < SECURE_KEY_BITS and not self.insecure_short_keys:
            raise ValueError(
                f"key_bits {self.key_bits} is below {SECURE_KEY_BITS}: such keys are insecure "
                "(set insecure_short_keys: true for tests)"
            )
        return self


class HostBinningParams(HeteroFeatureBinningParams):
    @model_validator(mode="after")
    def _woe_needs_reveal(self) -> HostBinningParams:
        if self.transform == "woe" and not self.reveal_woe_to_host:
            raise ValueError(
                "transform: woe at a host needs reveal_woe_to_host: true (the host's WOE "
                "comes from the guest's labels); use transform: bin to keep the labels hidden"
            )
        return self


PROTOCOL = Protocol(
    component_type="hetero_feature_binning",
    description="WOE/IV of the hosts' bins from the guest's encrypted labels (guest key only)",
    dims={**HE_DIMS, "m": "rows (aligned by psi)"},
    messages=(
        _key_rules("the guest's Paillier public key")[0],
        ciphertext_rule(
            "encrypted_labels", "guest", "host", 1, "m", "[[y]] per row, guest key", decrypt=False
        ),
        ciphertext_rule(
            "bin_events",
            "host",
            "guest",
            2,
            "*",
            "[[events per bin]] (host columns x (bin_num + 1) slots), re-randomised, guest key; "
            "decrypted once per host",
            per_iteration_decrypts=MAX_HOSTS,
        ),
        array_rule(
            "bin_counts",
            "host",
            "guest",
            "aggregate",
            2,
            "(*,)",
            "rows per host bin (host columns x (bin_num + 1) slots)",
            per_iteration=True,
        ),
        array_rule(
            "host_woe",
            "guest",
            "host",
            "aggregate",
            3,
            "(*,)",
            "reveal_woe_to_host only: the WOE of each of the host's bins",
            per_iteration=True,
        ),
    ),
)

HETERO_FEATURE_BINNING = ComponentDescriptor(
    name="hetero_feature_binning",
    description="quantile/bucket binning of each party's columns; WOE and IV for all at the guest",
    entry={
        "guest": "fedflow.components.hetero_feature_binning.component:guest",
        "host": "fedflow.components.hetero_feature_binning.component:host",
    },
    roles=("guest", "host"),
    params=HeteroFeatureBinningParams,
    role_params={"host": HostBinningParams},
    inputs=(
        InputSpec("data", description="rows aligned across parties (psi output)"),
        InputSpec(
            "model",
            required=False,
            description="a hetero_feature_binning model to apply instead of fitting one",
        ),
    ),
    outputs=("data", "model"),
    protocol=PROTOCOL,
    labels={"guest": LabelRule("binary", (0.0, 1.0))},
)
