"""homo_nn / homo_nn_predict: a horizontal neural network over homo_lr's secure-aggregation
rounds: the built-in network in numpy (one tanh hidden layer, a logistic output), or a PyTorch
module named in the params by import path (`model`; torch is the optional extra
fedmq-flow[torch], and a party without it refuses the task, saying so).

The network is a `Learner` (fedflow.components.homo_lr.learner) run by homo_lr's client and
aggregator code: the same roles (clients: guest and hosts; the aggregator: the arbiter when the
pipeline names one, else the guest), messages (homo_lr's protocol under this component type),
Bonawitz secure aggregation with dropout recovery, bad-update sit-outs, checkpoints and resume,
FedProx, FedAdam/FedYogi, differential privacy and min_summed_updates. Only the parameter vector
differs: the network's weights (math.py, or the module's flattened parameters) instead of the
logistic regression's.

Layout: this `__init__` (declarations, light: no numpy, no torch), params.py, math.py (numpy
only: the built-in network, backpropagation and the plaintext references), torch_learner.py
(the PyTorch backend; torch imported only there, only when a pipeline names a module),
learner.py (picks the Learner; the role entry points), predict.py.
"""

from __future__ import annotations

from fedflow.components.base import ComponentDescriptor, InputSpec, LabelRule
from fedflow.components.homo_lr.protocol import HOMO_LR_PREDICT_PROTOCOL, secagg_protocol
from fedflow.components.homo_nn.params import HomoNnParams, HomoNnPredictParams
from fedflow.protocol import Protocol

BINARY_LABELS = LabelRule("binary", (0.0, 1.0))

HOMO_NN_PROTOCOL = secagg_protocol("homo_nn", "network (weights and biases of both layers)")

HOMO_NN = ComponentDescriptor(
    name="homo_nn",
    description=(
        "horizontal neural network (a built-in one-hidden-layer network in numpy, or a PyTorch "
        "module by import path): FedAvg over secure aggregation (the arbiter aggregates when "
        "the pipeline names one, else the guest)"
    ),
    entry={
        "guest": "fedflow.components.homo_nn.learner:guest",
        "host": "fedflow.components.homo_nn.learner:host",
        "arbiter": "fedflow.components.homo_nn.learner:arbiter",
    },
    roles=("guest", "host", "arbiter"),
    params=HomoNnParams,
    inputs=(
        InputSpec(
            "data",
            description="this client's own rows (same columns everywhere)",
            roles=("guest", "host"),
        ),
        InputSpec(
            "validate_data",
            required=False,
            description="this client's validation rows (data's columns): early_stop watches "
            "the global model's loss on every client's, securely summed (all clients or none)",
            roles=("guest", "host"),
        ),
    ),
    outputs=("model",),
    protocol=HOMO_NN_PROTOCOL,
    labels={"guest": BINARY_LABELS, "host": BINARY_LABELS},
)

HOMO_NN_PREDICT = ComponentDescriptor(
    name="homo_nn_predict",
    description="scores of a homo_nn model: each party scores its own rows, nothing crosses",
    entry="fedflow.components.homo_nn.predict:run",
    roles=("guest", "host"),
    params=HomoNnPredictParams,
    inputs=(
        InputSpec("model", description="the shared homo_nn model"),
        InputSpec("data", description="this party's rows to score"),
    ),
    outputs=("data",),
    protocol=Protocol(
        component_type="homo_nn_predict",
        description=HOMO_LR_PREDICT_PROTOCOL.description,
        messages=(),
    ),
)
