"""noop: a component that does nothing, for measuring the runtime's own cost per component.

It runs at the guest and every host, exchanges no message (its protocol is empty, so the
Federation layer refuses any send it might attempt) and reads no table. The pipeline model
orders components only through data inputs, so noop has an optional `after` input and one
output, `done`: an empty table (no rows, no features) that a later noop names as its `after`
to run strictly after this one (bench/jobs chains 20 of them). The runner stores every
declared output it is given and a downstream input must find its artifact, so `done` is
always returned; it holds nothing about the party's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.components.base import ComponentType, InputSpec
from fedflow.protocol import Protocol
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


NOOP_PROTOCOL = Protocol(
    component_type="noop",
    description="no messages: the component exchanges nothing",
)


def empty_table() -> Table:
    """No rows, no features, no labels."""
    return Table(
        ids=np.array([], dtype=np.str_),
        features=np.zeros((0, 0), dtype=np.float64),
        feature_names=[],
        labels=None,
    )


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    ctx.check_canceled()
    ctx.report_progress(1.0)
    return {"done": empty_table()}


NOOP = ComponentType(
    name="noop",
    description="does nothing (runtime overhead benchmarks); `after` orders it after another",
    run=run,
    roles=("guest", "host"),
    inputs=(
        InputSpec(
            "after",
            required=False,
            description="any upstream output: run after that component (the data is unused)",
        ),
    ),
    outputs=("done",),
    protocol=NOOP_PROTOCOL,
)
