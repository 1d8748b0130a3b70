"""hetero_linr at the guest: hetero_lr's training with the squared-loss objective."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fedflow.components.hetero_lr import guest
from fedflow.components.hetero_lr.math import SQUARED
from fedflow.kit.alignment import check_alignment
from fedflow.kit.inputs import check_linear_inputs
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def train(ctx: ComponentContext) -> Mapping[str, Table]:
    check_linear_inputs(ctx, SQUARED.name)
    check_alignment(ctx)
    return guest.train_with(ctx, SQUARED)
