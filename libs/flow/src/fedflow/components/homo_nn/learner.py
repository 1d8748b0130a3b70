"""homo_nn's Learners over homo_lr's secure-aggregation rounds: the built-in MLP in numpy
(math.py), or a PyTorch module named by the params' `model` (torch_learner.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr.aggregator import guest as lr_guest
from fedflow.components.homo_lr.aggregator import train as lr_aggregate
from fedflow.components.homo_lr.client import train as lr_client
from fedflow.components.homo_lr.learner import Learner
from fedflow.components.homo_lr.params import HomoLrParams
from fedflow.components.homo_nn import math as nmath
from fedflow.components.homo_nn.params import HomoNnParams
from fedflow.components.homo_nn.torch_learner import TorchLearner, factory_of
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def _hidden(params: HomoLrParams) -> int:
    assert isinstance(params, HomoNnParams)
    return params.hidden_units


class Mlp:
    name = "homo_nn"
    params_type: type[HomoLrParams] = HomoNnParams

    def length(self, features: int, params: HomoLrParams) -> int:
        return nmath.length(features, _hidden(params))

    def initial(self, features: int, params: HomoLrParams) -> hmath.Floats:
        return nmath.initial(features, _hidden(params), params.seed)

    def loss(self, weights: hmath.Floats, x1: hmath.Floats, y: hmath.Floats) -> float:
        k1 = x1.shape[1]
        hidden = (weights.shape[0] - 1) // (k1 + 1)
        return nmath.log_loss(weights, x1, y, hidden)

    def train(
        self,
        weights: hmath.Floats,
        x1: hmath.Floats,
        y: hmath.Floats,
        training: hmath.LocalTraining,
        stream: Sequence[int],
        params: HomoLrParams,
    ) -> hmath.Floats:
        return nmath.local_sgd(weights, x1, y, training, stream, _hidden(params))

    def table(self, names: list[str], weights: hmath.Floats, params: HomoLrParams) -> Table:
        return Table(
            ids=np.array(nmath.parameter_names(names, _hidden(params)), dtype=np.str_),
            features=np.asarray(weights, dtype=np.float64).reshape(-1, 1),
            feature_names=["weight"],
            labels=None,
        )


MLP = Mlp()


def learner_for(ctx: ComponentContext) -> Learner:
    """The built-in network, or the params' PyTorch module; built here, before the role sends
    anything, so that a party without torch (or without the module) fails at once, naming
    itself (torch_learner.TorchMissing, ModelError)."""
    params = ctx.params_as(HomoNnParams)
    if params.model is None:
        return MLP
    where = f"at party {ctx.party_id}"
    factory_of(params.model, where)  # imports torch and the module's code, or refuses
    return TorchLearner(params.model, where=where)


def guest(ctx: ComponentContext) -> Mapping[str, Table]:
    return lr_guest(ctx, learner_for(ctx))


def host(ctx: ComponentContext) -> Mapping[str, Table]:
    return lr_client(ctx, learner_for(ctx))


def arbiter(ctx: ComponentContext) -> Mapping[str, Table]:
    return lr_aggregate(ctx, learner_for(ctx))
