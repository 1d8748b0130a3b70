"""noop's code: an empty `done` table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


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
