"""hetero_poisson / hetero_poisson_predict: vertical Poisson regression (log link), one guest
and one or more hosts, under Paillier, with an optional exposure column at the guest.

The guest holds the count label y, its features X_g (plus an intercept) and, optionally, an
exposure column e (> 0, not a feature); each host j holds other features X_j of the same rows
(aligned by an upstream psi). Each party has its own Paillier key pair; there is no third
party. The model is mu = e * exp(u_g + sum_j u_j) (u = X w), trained by mini-batch SGD on the
half mean Poisson deviance plus (alpha/2) |w|^2 (the intercept not penalised): scikit-learn's
PoissonRegressor(alpha) on the joined table. Per mini-batch, c = e * exp(u_g) at the guest,
r_j = exp(u_j) at host j, mu = c * r_1 * ... * r_m. The hosts H_1 .. H_m are taken in the job's
order; H_1 is the key host (its key carries the chain of the hosts' rates to the guest), H_m
the last:

  order 1  guest -> H_1    guest_rate        [[c]]_G                              (b, c)
  order 1  guest -> hosts  labels            [[y]]_G                              (b, c)
  order 1  H_j -> H_j+1    rate_chain        [[r_1 .. r_j]]_H1, re-randomised     (b, c)
  order 1  H_j -> H_j+1    guest_rate_chain  [[c r_1 .. r_j]]_G, re-randomised    (b, c)
  order 1  H_m -> guest    host_rate         [[r_1 .. r_m]]_H1 (one host: [[r]]_H)
  order 2  H_m -> hosts    rate_product      [[mu]]_G, re-randomised (several hosts)
  order 2  host  -> guest  host_gradient     [[X_j^T (mu - y) + R_j]]_G  (each host)
  order 2  host  -> guest  label_score       [[y . u_j]]_G (one ciphertext, re-randomised)
  order 2  guest -> H_1    guest_gradient    [[(c X_g)^T (r_1 .. r_m) + R_g]]_H1
  order 3  masked answers (host_gradient_masked to each host, guest_gradient_masked from H_1)
  order 4  guest -> host   epoch_end

With one host this is the two-party exchange (no chain messages). What each learns
(docs/hetero_poisson.md): a host its gradient X_j^T (mu - y) per batch; the guest its gradient's
term X_g^T mu (which includes sum mu, the intercept's) and y . u_j per host and batch. Neither
sees another's per-row values: c and y only travel under the guest's key and never come back to
it, the rates r_j only under the key host's key (the guest holds their product encrypted, and
H_1 decrypts only the guest's masked gradient), so exp(u_j) is hidden from the guest and from
the other hosts, and exp(u_g), e, y from the hosts (semi-honest parties that do not collude).

With a validate_data input, every host sends its partial scores of the validation rows in
plaintext after each epoch (validate_scores, as for prediction); the guest logs their half mean
deviance (validate_loss) and, with patience, stops early and has every party keep the best
epoch's weights (epoch_end says which).

Prediction (hetero_poisson_predict) is hetero_lr_predict's exchange: each host sends its
per-row partial scores u_j in plaintext; the guest outputs `prediction` = e * exp(u_g + sum u_j).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedflow.alignment_protocol import with_alignment
from fedflow.components.base import ComponentDescriptor, ComponentParams, InputSpec, LabelRule
from fedflow.components.hetero_lr.params import HeteroLrParams
from fedflow.components.hetero_lr.protocol import MAX_HOSTS, predict_protocol
from fedflow.kit import (
    HE_DIMS,
    PAILLIER_KEY_FORMAT,
    ciphertext_rule,
    masked_rule,
    public_key_rules,
)
from fedflow.protocol import NONE, MessageRule, Protocol, array_rule, control_rule


class HeteroPoissonParams(HeteroLrParams):
    """hetero_linr's parameters plus `exposure`, and hetero_lr's `patience` / `min_delta` (a
    validate_data input's half mean Poisson deviance); `tol` applies to the training rows'."""

    reveal_host_scores: Literal[False] = False
    multi_class: Literal[False] = False
    sigmoid: Literal["taylor"] = "taylor"
    exposure: str | None = Field(default=None, min_length=1)
    """The guest's exposure column (values > 0; not a feature): mu = exposure * exp(X w)."""


class HeteroPoissonPredictParams(ComponentParams):
    exposure: str | None = Field(default=None, min_length=1)
    """The guest's exposure column of the table to predict (as in training)."""


_TRAINING_EXCHANGE = Protocol(
    component_type="hetero_poisson",
    description="vertical Poisson regression (log link), a Paillier key per party, integer "
    "masks, one or more hosts (their rates multiplied along a chain), no arbiter",
    dims={
        **HE_DIMS,
        "k_g1": "the guest's feature count + 1 (intercept)",
        "v": "validation rows (validate_data; every party has the same)",
    },
    messages=(
        *public_key_rules(
            "the guest's Paillier public key",
            "the host's Paillier public key; meta: its feature count",
        ),
        MessageRule(
            tag="public_key",
            sender="host",
            receiver="host",
            kinds=("public_key",),
            order=1,
            shape=NONE,
            blob_formats=(PAILLIER_KEY_FORMAT,),
            description="several hosts: each host's public key to the others (the key "
            "host's encrypts the rate chain); meta: its feature count",
        ),
        ciphertext_rule(
            "guest_rate",
            "guest",
            "host",
            1,
            "*",
            "[[e exp(u_g)]], guest key, to the key host",
            decrypt=False,
        ),
        ciphertext_rule(
            "labels", "guest", "host", 1, "*", "[[y]], guest key, to every host", decrypt=False
        ),
        ciphertext_rule(
            "rate_chain",
            "host",
            "host",
            1,
            "*",
            "several hosts: [[r_1 .. r_j]] under the key host's key, re-randomised, to the "
            "next host",
            decrypt=False,
        ),
        ciphertext_rule(
            "guest_rate_chain",
            "host",
            "host",
            1,
            "*",
            "several hosts: [[c r_1 .. r_j]] under the guest's key, re-randomised, to the next "
            "host",
            decrypt=False,
        ),
        ciphertext_rule(
            "host_rate",
            "host",
            "guest",
            1,
            "*",
            "[[r_1 .. r_m]] under the key host's key, from the last host (one host: [[exp(u_h)]])",
            decrypt=False,
        ),
        ciphertext_rule(
            "rate_product",
            "host",
            "host",
            2,
            "*",
            "several hosts: [[mu]] under the guest's key, re-randomised, from the last host to "
            "the others",
            decrypt=False,
        ),
        # Rows: each host's feature count, checked against what it announced.
        ciphertext_rule(
            "host_gradient",
            "host",
            "guest",
            2,
            "*",
            "[[X_h^T (mu - y) + R_h]], guest key",
            per_iteration_decrypts=MAX_HOSTS,  # one per host (the guard counts per tag)
        ),
        ciphertext_rule(
            "label_score",
            "host",
            "guest",
            2,
            "1",
            "[[y . u_h]], guest key",
            per_iteration_decrypts=MAX_HOSTS,
        ),
        ciphertext_rule(
            "guest_gradient",
            "guest",
            "host",
            2,
            "k_g1",
            "[[X_g^T mu + R_g]], key host's key, to the key host",
        ),
        masked_rule("host_gradient_masked", "guest", "host", "*", "X_h^T (mu - y) + R_h"),
        masked_rule(
            "guest_gradient_masked", "host", "guest", "k_g1", "X_g^T mu + R_g (the key host)"
        ),
        array_rule(
            "validate_scores",
            "host",
            "guest",
            "partial_score",
            4,
            "(v,)",
            "validate_data only, after each epoch: u_h = X_h w_h for each validation row, in "
            "plaintext (as hetero_poisson_predict sends them); the guest learns the host's "
            "partial score of every validation row once per epoch",
            per_iteration=True,
        ),
        control_rule(
            "epoch_end",
            "guest",
            "host",
            4,
            "after an epoch's last batch: stop (early stopping) or go on; with validate_data "
            "whether this epoch is the best so far (each party keeps its weights)",
        ),
    ),
)
HETERO_POISSON_PROTOCOL = with_alignment(_TRAINING_EXCHANGE)
"""hetero_poisson's messages: the row-alignment check (fedflow.kit.alignment), then the above."""

HETERO_POISSON = ComponentDescriptor(
    name="hetero_poisson",
    description="vertical Poisson regression (log link, exposure) under Paillier (guest + hosts)",
    entry={
        "guest": "fedflow.components.hetero_poisson.train:guest",
        "host": "fedflow.components.hetero_poisson.train:host",
    },
    roles=("guest", "host"),
    params=HeteroPoissonParams,
    inputs=(
        InputSpec("data", description="rows aligned across parties (psi output)"),
        InputSpec(
            "validate_data",
            required=False,
            description="other rows, aligned across parties, with the training columns: their "
            "half mean deviance per epoch (validate_loss), early stopping on it (patience); "
            "reveals each host's partial scores of these rows to the guest each epoch",
            reveals="host",
            reveals_what="the host's partial scores of every validation row go to the guest "
            "in plaintext, once per epoch",
        ),
    ),
    outputs=("model",),
    protocol=HETERO_POISSON_PROTOCOL,
    labels={"guest": LabelRule("classes", names=False)},  # counts, not named classes
)

HETERO_POISSON_PREDICT = ComponentDescriptor(
    name="hetero_poisson_predict",
    description="predictions of a hetero_poisson model: the guest gets e exp(u_g + u_h) per row",
    entry={
        "guest": "fedflow.components.hetero_poisson.predict:guest",
        "host": "fedflow.components.hetero_poisson.predict:host",
    },
    roles=("guest", "host"),
    params=HeteroPoissonPredictParams,
    inputs=(
        InputSpec("model", description="this party's part of a hetero_poisson model"),
        InputSpec("data", description="rows aligned across parties"),
    ),
    outputs=("data",),
    protocol=with_alignment(
        predict_protocol("hetero_poisson_predict", "exposure * exp(u_g + sum u_h)")
    ),
)
