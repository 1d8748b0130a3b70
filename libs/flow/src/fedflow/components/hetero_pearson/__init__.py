"""hetero_pearson: the Pearson correlation of every guest column with every host column, the
guest's standardised values under the guest's Paillier key.

Each party standardises its own columns (z = (x - mean) / std over the rows, ddof 0; a constant
column is all 0, so its correlations are 0 and it is listed in the model) and computes its own
columns' correlations in plaintext. Across parties, with m rows (aligned by psi):

  order 1  guest -> host   public_key   the guest's Paillier public key
  order 1  guest -> host   encrypted_z  [[Z_g]], column after column, guest key    (m * k_g, c)
  order 2  host  -> guest  cross        [[Z_g^T Z_h]], re-randomised, guest key;
                                        the guest decrypts it once                (k_g * k_h, c)
  order 3  guest -> host   correlation  share_with_host only: C = Z_g^T Z_h / m   (k_g, k_h)

What each party learns: the guest learns C, the k_g x k_h correlations of its columns with the
host's, and nothing else of the host's columns (not their names, which are host_<party>_<i> at
the guest); the host computes on ciphertexts only and learns nothing unless share_with_host
sends it C (the guest's columns named guest_<i>). C itself is k_g * k_h linear functions of the
other party's standardised columns: a party whose own standardised columns span the rows
(at least m independent columns) could solve for the other's, so the component refuses to run
when either party has as many columns as there are rows; with fewer, C still tells the
receiver the projection of each of the other's standardised columns onto its own columns.
Missing values are refused (impute first: the imputation component).

Outputs: `model` (this party's columns, their correlations with each other, and at the guest
(and at a host with share_with_host) the cross correlations). Metrics: `rows`, `columns`, and
at the guest `max_abs_cross`. docs/hetero_pearson.md.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec
from fedflow.kit import HE_DIMS, ciphertext_rule
from fedflow.kit import public_key_rules as _key_rules
from fedflow.protocol import Protocol, array_rule

SECURE_KEY_BITS = 2048
MAX_HOSTS = 16


class HeteroPearsonParams(ComponentParams):
    columns: list[str] | None = Field(default=None, min_length=1)
    """This party's columns; None: every feature column."""
    share_with_host: bool = Field(
        default=False,
        json_schema_extra={
            "policy": "reveals",
            "reveals": "guest",
            "what": "the correlations of the guest's columns with the host's go to the host",
        },
    )
    """Send each host the correlation matrix of the guest's columns with its own."""
    key_bits: int = Field(default=2048, ge=256, le=8192, json_schema_extra={"policy": "key_bits"})
    insecure_short_keys: bool = Field(
        default=False, json_schema_extra={"policy": "insecure_short_keys"}
    )

    @model_validator(mode="after")
    def _checked(self) -> HeteroPearsonParams:
        if self.key_bits < SECURE_KEY_BITS and not self.insecure_short_keys:
            raise ValueError(
                f"key_bits {self.key_bits} is below {SECURE_KEY_BITS}: such keys are insecure "
                "(set insecure_short_keys: true for tests)"
            )
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            raise ValueError("columns names a column twice")
        return self


PROTOCOL = Protocol(
    component_type="hetero_pearson",
    description="guest x host Pearson correlations; the guest's z-scores under its own key",
    dims={**HE_DIMS},
    messages=(
        _key_rules("the guest's Paillier public key; meta: its column count")[0],
        ciphertext_rule(
            "encrypted_z",
            "guest",
            "host",
            1,
            "*",
            "[[Z_g]] column after column (rows x guest columns), guest key",
            decrypt=False,
        ),
        ciphertext_rule(
            "cross",
            "host",
            "guest",
            2,
            "*",
            "[[Z_g^T Z_h]] (guest columns x host columns), re-randomised, guest key; "
            "decrypted once per host",
            per_iteration_decrypts=MAX_HOSTS,
        ),
        array_rule(
            "correlation",
            "guest",
            "host",
            "aggregate",
            3,
            "(*, *)",
            "share_with_host only: the guest x host correlation matrix",
            per_iteration=True,
        ),
    ),
)

HETERO_PEARSON = ComponentDescriptor(
    name="hetero_pearson",
    description="Pearson correlations of the guest's columns with each host's (Paillier)",
    entry={
        "guest": "fedflow.components.hetero_pearson.component:guest",
        "host": "fedflow.components.hetero_pearson.component:host",
    },
    roles=("guest", "host"),
    params=HeteroPearsonParams,
    inputs=(InputSpec("data", description="rows aligned across parties (psi output)"),),
    outputs=("model",),
    protocol=PROTOCOL,
)
