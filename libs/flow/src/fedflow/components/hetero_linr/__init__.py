"""hetero_linr / hetero_linr_predict: vertical linear regression (squared loss), guest + hosts,
under Paillier: hetero_lr's exchange with another residual.

The guest holds the numeric label y and features X_g (plus an intercept column); each host
holds other features X_h of the same rows (aligned by an upstream psi). Each party has its OWN
Paillier key pair; there is no third party. The model is z = u_g + sum over hosts of u_h
(u = X w), trained by mini-batch SGD on (1/2N) sum (z - y)^2 + (alpha/2) |w|^2 (the intercept
not penalised): scikit-learn's Ridge with alpha_ridge = alpha * N.

The residual d = z - y = v + u_h with v = u_g - y is linear in the hosts' scores, so no
approximation is needed (hetero_lr approximates the sigmoid to get there). Every message,
its order, shape and who may decrypt it are hetero_lr's (docs/hetero_lr.md), with:

  order 1  guest -> host   residual       [[u_g - y]]_G        (b, c)  hetero_lr: u_g/4 + 0.5 - y
  order 1  host  -> host   peer_scores    [[u_h]]_G            several hosts; hetero_lr: u_h/4
  order 2  host  -> guest  host_gradient  [[X_h^T d + R_h]]_G  the host adds X_h^T u_h itself
  order 2  guest -> host   guest_gradient [[A^T u_h + R_g]]_H  A = [X_g, y, u_g]
  order 2  host  -> guest  host_cross     [[sum u_h . u_h']]_G several hosts

What each party learns is hetero_lr's (docs/hetero_linr.md): the guest learns per batch the
aggregates y.u_h, u_g.u_h, X_g^T u_h (its own gradient) and |u_h|^2, never a per-row u_h; a
host learns X_h^T d for its batch (its own gradient), never a per-row residual or label. The
same minimum batch size applies. There is no reveal_host_scores mode.

With a validate_data input, every host sends its partial scores of the validation rows in
plaintext after each epoch (validate_scores, as hetero_lr does); the guest logs their half mean
squared error (validate_loss) and RMSE (validate_rmse) and, with patience, stops early and has
every party keep the best epoch's weights (epoch_end says which).

Prediction (hetero_linr_predict) is hetero_lr_predict's exchange: each host sends its per-row
partial scores u_h in plaintext; the guest outputs `prediction` = u_g + sum u_h (no sigmoid).

Layout: this `__init__` (the declarations), guest.py / host.py (hetero_lr's training with the
squared-loss objective, fedflow.components.hetero_lr.math.SQUARED), predict.py, math.py (the
plaintext reference the tests compare with).
"""

from __future__ import annotations

from fedflow.alignment_protocol import with_alignment
from fedflow.components.base import ComponentDescriptor, InputSpec, LabelRule
from fedflow.components.hetero_lr.params import HeteroLinrParams, HeteroLrPredictParams
from fedflow.components.hetero_lr.protocol import predict_protocol, training_protocol

HETERO_LINR_PROTOCOL = with_alignment(
    training_protocol(
        "hetero_linr",
        "vertical linear regression (squared loss), two Paillier keys, integer masks, no arbiter",
        residual="[[u_g - y]], guest key",
        peer_scores="several hosts: [[u_h]] under the guest key, to the other hosts",
        host_cross="several hosts: [[sum over other hosts h' of u_h . u_h']], guest key",
        reveal_mode=False,
        validation=True,
    )
)

HETERO_LINR_PREDICT_PROTOCOL = with_alignment(
    predict_protocol("hetero_linr_predict", "u_g + sum u_h")
)

HETERO_LINR = ComponentDescriptor(
    name="hetero_linr",
    description="vertical linear regression (squared loss) under Paillier (guest + hosts)",
    entry={
        "guest": "fedflow.components.hetero_linr.guest:train",
        "host": "fedflow.components.hetero_linr.host:train",
    },
    roles=("guest", "host"),
    params=HeteroLinrParams,
    inputs=(
        InputSpec("data", description="rows aligned across parties (psi output)"),
        InputSpec(
            "validate_data",
            required=False,
            description="validation rows aligned across parties (e.g. data_split's validate): "
            "per-epoch validate_loss (half mean squared error) / validate_rmse and early "
            "stopping (patience, min_delta); reveals the host's partial scores of these rows "
            "to the guest each epoch",
            reveals="host",
            reveals_what="the host's partial scores of every validation row go to the guest "
            "in plaintext, once per epoch",
        ),
    ),
    outputs=("model",),
    protocol=HETERO_LINR_PROTOCOL,
    labels={"guest": LabelRule("numeric")},
)

HETERO_LINR_PREDICT = ComponentDescriptor(
    name="hetero_linr_predict",
    description="predictions of a hetero_linr model: the guest gets u_g + sum u_h per row",
    entry={
        "guest": "fedflow.components.hetero_linr.predict:guest",
        "host": "fedflow.components.hetero_linr.predict:host",
    },
    roles=("guest", "host"),
    params=HeteroLrPredictParams,
    inputs=(
        InputSpec("model", description="this party's part of a hetero_linr model"),
        InputSpec("data", description="rows aligned across parties"),
    ),
    outputs=("data",),
    protocol=HETERO_LINR_PREDICT_PROTOCOL,
)
