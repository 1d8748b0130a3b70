"""data_split: train / validate / test parts of the aligned rows, the same rows at every party.

Runs at the guest and every host on the rows an upstream psi aligned; exchanges nothing. Each
party ranks the ids by a keyed hash, BLAKE2b(key = "fedmq.data_split" and `seed`, id), and cuts
the ranking at round(n * train_fraction) and round(n * (train_fraction + validate_fraction)):
every party holds the same ids, so every party puts the same rows in the same part without
telling another which rows (nor anything about its labels). The split is seeded (the same
`seed` gives the same parts, in this job and in a later one on the same ids) and exact in
size. It is stratified only in expectation: the hash does not see the labels (no host does),
so each class's share in each part is its share overall up to sampling noise; the guest logs
each part's label mean (`<part>_label_mean`) next to the whole table's (`label_mean`).

Outputs: `train`, `validate`, `test` (an empty part is a table with no rows), each keeping the
input's row order.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec
from fedflow.protocol import Protocol

PARTS = ("train", "validate", "test")


class DataSplitParams(ComponentParams):
    train_fraction: float = Field(default=0.8, ge=0.0, le=1.0)
    validate_fraction: float = Field(default=0.2, ge=0.0, le=1.0)
    test_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0)
    """Keys the hash that ranks the ids (every party must use the same)."""

    @model_validator(mode="after")
    def _fractions_add_up(self) -> DataSplitParams:
        total = self.train_fraction + self.validate_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"train_fraction + validate_fraction + test_fraction must be 1, got {total:g}"
            )
        return self


DATA_SPLIT = ComponentDescriptor(
    name="data_split",
    description="train / validate / test by fraction, the same rows at every party (keyed hash)",
    entry="fedflow.components.data_split.component:run",
    roles=("guest", "host"),
    params=DataSplitParams,
    inputs=(InputSpec("data", description="rows aligned across parties (psi output)"),),
    outputs=PARTS,
    protocol=Protocol(component_type="data_split", description="exchanges nothing"),
)
