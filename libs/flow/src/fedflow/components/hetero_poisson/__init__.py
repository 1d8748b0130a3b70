"""hetero_poisson / hetero_poisson_predict: vertical Poisson regression (log link), one guest
and one host, under Paillier, with an optional exposure column at the guest.

The guest holds the count label y, its features X_g (plus an intercept) and, optionally, an
exposure column e (> 0, not a feature); the host holds other features X_h of the same rows
(aligned by an upstream psi). Each party has its own Paillier key pair; there is no third
party. The model is mu = e * exp(u_g + u_h) (u = X w), trained by mini-batch SGD on the half
mean Poisson deviance plus (alpha/2) |w|^2 (the intercept not penalised): scikit-learn's
PoissonRegressor(alpha) on the joined table. Per mini-batch, c = e * exp(u_g) at the guest,
r = exp(u_h) at the host, mu = c * r:

  order 1  guest -> host   guest_rate     [[c]]_G                     (b, c)
  order 1  guest -> host   labels         [[y]]_G                     (b, c)
  order 1  host  -> guest  host_rate      [[r]]_H                     (b, c)
  order 2  host  -> guest  host_gradient  [[X_h^T (r [[c]] - [[y]]) + R_h]]_G
  order 2  host  -> guest  label_score    [[y . u_h]]_G (one ciphertext, re-randomised)
  order 2  guest -> host   guest_gradient [[(c X_g)^T r + R_g]]_H
  order 3  masked answers (host_gradient_masked, guest_gradient_masked)
  order 4  guest -> host   epoch_end

What each learns (docs/hetero_poisson.md): the host its gradient X_h^T (mu - y) per batch; the
guest its gradient's term X_g^T mu (which includes sum mu, the intercept's) and y . u_h per
batch. Neither sees the other's per-row values: c, y and r only travel encrypted under their
owner's key, so exp(u_h) is hidden from the guest and exp(u_g), e, y from the host.

Prediction (hetero_poisson_predict) is hetero_lr_predict's exchange: each host sends its
per-row partial scores u_h in plaintext; the guest outputs `prediction` = e * exp(u_g + u_h).
"""

from __future__ import annotations

from pydantic import Field

from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec, LabelRule
from fedflow.components.hetero_lr.params import HeteroLinrParams
from fedflow.components.hetero_lr.protocol import predict_protocol
from fedflow.kit import HE_DIMS, ciphertext_rule, masked_rule, public_key_rules
from fedflow.protocol import Protocol, control_rule


class HeteroPoissonParams(HeteroLinrParams):
    """hetero_linr's parameters plus `exposure`; `tol` applies to the half mean Poisson
    deviance."""

    exposure: str | None = Field(default=None, min_length=1)
    """The guest's exposure column (values > 0; not a feature): mu = exposure * exp(X w)."""


class HeteroPoissonPredictParams(ComponentParams):
    exposure: str | None = Field(default=None, min_length=1)
    """The guest's exposure column of the table to predict (as in training)."""


HETERO_POISSON_PROTOCOL = Protocol(
    component_type="hetero_poisson",
    description="vertical Poisson regression (log link), two Paillier keys, integer masks, "
    "one host, no arbiter",
    dims={**HE_DIMS, "k_g1": "the guest's feature count + 1 (intercept)"},
    messages=(
        *public_key_rules(
            "the guest's Paillier public key",
            "the host's Paillier public key; meta: its feature count",
        ),
        ciphertext_rule(
            "guest_rate", "guest", "host", 1, "*", "[[e exp(u_g)]], guest key", decrypt=False
        ),
        ciphertext_rule("labels", "guest", "host", 1, "*", "[[y]], guest key", decrypt=False),
        ciphertext_rule(
            "host_rate", "host", "guest", 1, "*", "[[exp(u_h)]], host key", decrypt=False
        ),
        ciphertext_rule(
            "host_gradient", "host", "guest", 2, "*", "[[X_h^T (mu - y) + R_h]], guest key"
        ),
        ciphertext_rule("label_score", "host", "guest", 2, "1", "[[y . u_h]], guest key"),
        ciphertext_rule(
            "guest_gradient", "guest", "host", 2, "k_g1", "[[X_g^T mu + R_g]], host key"
        ),
        masked_rule("host_gradient_masked", "guest", "host", "*", "X_h^T (mu - y) + R_h"),
        masked_rule("guest_gradient_masked", "host", "guest", "k_g1", "X_g^T mu + R_g"),
        control_rule(
            "epoch_end",
            "guest",
            "host",
            4,
            "after an epoch's last batch: stop (early stopping) or go on",
        ),
    ),
)

HETERO_POISSON = ComponentDescriptor(
    name="hetero_poisson",
    description="vertical Poisson regression (log link, exposure) under Paillier (guest + host)",
    entry={
        "guest": "fedflow.components.hetero_poisson.train:guest",
        "host": "fedflow.components.hetero_poisson.train:host",
    },
    roles=("guest", "host"),
    params=HeteroPoissonParams,
    inputs=(InputSpec("data", description="rows aligned across parties (psi output)"),),
    outputs=("model",),
    protocol=HETERO_POISSON_PROTOCOL,
    labels={"guest": LabelRule("classes")},
)

HETERO_POISSON_PREDICT = ComponentDescriptor(
    name="hetero_poisson_predict",
    description="predictions of a hetero_poisson model: the guest gets e exp(u_g + u_h) per row",
    entry={
        "guest": "fedflow.components.hetero_poisson.predict:guest",
        "host": "fedflow.components.hetero_lr.predict:host",
    },
    roles=("guest", "host"),
    params=HeteroPoissonPredictParams,
    inputs=(
        InputSpec("model", description="this party's part of a hetero_poisson model"),
        InputSpec("data", description="rows aligned across parties"),
    ),
    outputs=("data",),
    protocol=predict_protocol("hetero_poisson_predict", "exposure * exp(u_g + sum u_h)"),
)
