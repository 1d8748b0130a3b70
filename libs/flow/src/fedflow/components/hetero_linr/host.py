"""hetero_linr at a host: hetero_lr's training with the squared-loss objective."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fedflow.components.hetero_lr import host
from fedflow.components.hetero_lr.math import SQUARED
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def train(ctx: ComponentContext) -> Mapping[str, Table]:
    return host.train_with(ctx, SQUARED)
