"""What a horizontal model is to the secure-aggregation rounds: its parameter vector's length,
its start, its local training and loss, and its output table. homo_lr's logistic regression is
`LOGISTIC`; homo_nn's MLP (fedflow.components.homo_nn) is another Learner over the same
client and aggregator code (client.py, aggregator.py), so both share secure aggregation,
dropouts, resume, FedProx and the server optimizers.

A learner sees a client's rows as x1: the features (a missing value counted as 0) with a last
column of ones, so a model's intercept / first-layer bias is the weight of that column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr.params import HomoLrParams
from fedflow.tables import Table


class Learner(Protocol):
    name: str
    """The component type ("homo_lr", "homo_nn"): error messages and the secagg session."""
    params_type: type[HomoLrParams]

    def length(self, features: int, params: HomoLrParams) -> int:
        """The parameter vector's length for `features` columns."""
        ...

    def initial(self, features: int, params: HomoLrParams) -> hmath.Floats:
        """The global model of round 0 (the aggregator's; a function of the params only)."""
        ...

    def loss(self, weights: hmath.Floats, x1: hmath.Floats, y: hmath.Floats) -> float: ...

    def train(
        self,
        weights: hmath.Floats,
        x1: hmath.Floats,
        y: hmath.Floats,
        training: hmath.LocalTraining,
        stream: Sequence[int],
        params: HomoLrParams,
    ) -> hmath.Floats:
        """The local model after `training` from `weights` (`stream` seeds the batch order)."""
        ...

    def table(self, names: list[str], weights: hmath.Floats, params: HomoLrParams) -> Table:
        """The shared model as a table (one row per parameter, its value)."""
        ...


INTERCEPT = "intercept"


class Logistic:
    """homo_lr: w = (feature weights, intercept), zeros at the start."""

    name = "homo_lr"
    params_type = HomoLrParams

    def length(self, features: int, params: HomoLrParams) -> int:
        return features + 1

    def initial(self, features: int, params: HomoLrParams) -> hmath.Floats:
        return np.zeros(features + 1)

    def loss(self, weights: hmath.Floats, x1: hmath.Floats, y: hmath.Floats) -> float:
        return hmath.log_loss(weights, x1, y)

    def train(
        self,
        weights: hmath.Floats,
        x1: hmath.Floats,
        y: hmath.Floats,
        training: hmath.LocalTraining,
        stream: Sequence[int],
        params: HomoLrParams,
    ) -> hmath.Floats:
        return hmath.local_sgd(weights, x1, y, training, stream)

    def table(self, names: list[str], weights: hmath.Floats, params: HomoLrParams) -> Table:
        return Table(
            ids=np.array([*names, INTERCEPT], dtype=np.str_),
            features=np.asarray(weights, dtype=np.float64).reshape(-1, 1),
            feature_names=["weight"],
            labels=None,
        )


LOGISTIC = Logistic()
