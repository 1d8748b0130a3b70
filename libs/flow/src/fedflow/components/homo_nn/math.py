"""homo_nn's network in numpy: one tanh hidden layer and a logistic output, trained with
mini-batch SGD on the exact log loss; and the plaintext references the tests compare with.

Parameters of a network over k features with h hidden units, as one vector (the secure sum's):

    W1  (k + 1) x h, row-major: row i is feature i's weights into the hidden units, the last
        row the hidden units' biases (the weight of x1's column of ones)
    W2  h + 1: the hidden units' weights into the output, then the output's bias

length (k + 1) h + h + 1. The start is drawn from the params' seed (the same at every party):
W1 ~ N(0, 1 / (k + 1)), W2 ~ N(0, 1 / h), the output bias 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedflow.components.homo_lr import math as hmath

Floats = hmath.Floats


def length(features: int, hidden: int) -> int:
    return (features + 1) * hidden + hidden + 1


def split(weights: Floats, k1: int, hidden: int) -> tuple[Floats, Floats]:
    """(W1, W2) of the parameter vector (views)."""
    cut = k1 * hidden
    return weights[:cut].reshape(k1, hidden), weights[cut:]


def initial(features: int, hidden: int, seed: int) -> Floats:
    rng = np.random.default_rng([seed, 0x4E4E])
    w1 = rng.normal(scale=np.sqrt(1.0 / (features + 1)), size=(features + 1) * hidden)
    w2 = rng.normal(scale=np.sqrt(1.0 / hidden), size=hidden)
    return np.concatenate([w1, w2, [0.0]])


def logits(weights: Floats, x1: Floats, hidden: int) -> tuple[Floats, Floats]:
    """The output's logit per row, and the hidden activations."""
    w1, w2 = split(weights, x1.shape[1], hidden)
    a = np.tanh(x1 @ w1)
    return a @ w2[:hidden] + w2[hidden], a


def log_loss(weights: Floats, x1: Floats, y: Floats, hidden: int) -> float:
    z, _ = logits(weights, x1, hidden)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def penalty_mask(k1: int, hidden: int) -> Floats:
    """1 for a weight, 0 for a bias (not penalised)."""
    mask = np.ones(length(k1 - 1, hidden))
    w1, w2 = split(mask, k1, hidden)
    w1[-1, :] = 0.0
    w2[hidden] = 0.0
    return mask


def gradient(weights: Floats, x1: Floats, y: Floats, hidden: int) -> Floats:
    """The mean log loss's gradient over the rows (backpropagation)."""
    k1 = x1.shape[1]
    _, w2 = split(weights, k1, hidden)
    z, a = logits(weights, x1, hidden)
    dz = (hmath.sigmoid(z) - y) / len(y)
    g = np.empty_like(weights)
    g1, g2 = split(g, k1, hidden)
    g2[:hidden] = a.T @ dz
    g2[hidden] = dz.sum()
    g1[:] = x1.T @ (np.outer(dz, w2[:hidden]) * (1.0 - a * a))
    return g


def local_sgd(
    weights: Floats,
    x1: Floats,
    y: Floats,
    training: hmath.LocalTraining,
    stream: Sequence[int],
    hidden: int,
) -> Floats:
    """`training.local_epochs` epochs of mini-batch SGD from `weights` (batch order as
    homo_lr's: seeded by `stream` and the epoch), with the L2 penalty and FedProx's term."""
    w = np.array(weights, dtype=np.float64)
    anchor = np.array(weights, dtype=np.float64)
    mask = penalty_mask(x1.shape[1], hidden)
    rows = x1.shape[0]
    for epoch in range(training.local_epochs):
        order = np.random.default_rng([*stream, epoch]).permutation(rows)
        for start in range(0, rows, training.batch_size):
            batch = order[start : start + training.batch_size]
            g = gradient(w, x1[batch], y[batch], hidden) + training.alpha * mask * w
            if training.proximal_mu:
                g = g + training.proximal_mu * (w - anchor)
            w -= training.learning_rate * g
    return w


def reference_fedavg(
    parts: Sequence[tuple[Floats, Floats]],
    training: hmath.LocalTraining,
    rounds: int,
    hidden: int,
    *,
    skip: Sequence[tuple[int, int]] = (),
) -> Floats:
    """The federated run in plaintext (FedAvg weighted by rows), clients in client-id order."""
    k = parts[0][0].shape[1]
    w = initial(k, hidden, training.seed)
    data = [(hmath.with_intercept(np.nan_to_num(x, nan=0.0)), y) for x, y in parts]
    for r in range(rounds):
        total = np.zeros(w.shape[0] + hmath.EXTRA)
        for i, (x1, y) in enumerate(data):
            if (r, i) in skip:
                continue
            round_training = training.at_round(r)
            local = local_sgd(w, x1, y, round_training, (training.seed, r, i + 1), hidden)
            total += hmath.contribution(w, local, log_loss(w, x1, y, hidden), len(y))
        w, _ = hmath.apply_sum(w, total)
    return w


def reference_pooled(
    x: Floats, y: Floats, training: hmath.LocalTraining, rounds: int, hidden: int
) -> Floats:
    """The same network trained on the pooled rows (rounds x local_epochs epochs, round r at
    round r's learning rate); on one party's rows, that party's own network."""
    w = initial(x.shape[1], hidden, training.seed)
    x1 = hmath.with_intercept(np.nan_to_num(x, nan=0.0))
    for r in range(rounds):
        w = local_sgd(w, x1, y, training.at_round(r), (training.seed, r, 0), hidden)
    return w


def scores(weights: Floats, x: Floats, hidden: int) -> Floats:
    z, _ = logits(weights, hmath.with_intercept(np.nan_to_num(x, nan=0.0)), hidden)
    return hmath.sigmoid(z)


def parameter_names(names: list[str], hidden: int) -> list[str]:
    """The model table's row ids, in the vector's order."""
    rows = [*names, "intercept"]
    return [
        *(f"hidden{j}.{row}" for row in rows for j in range(hidden)),
        *(f"output.hidden{j}" for j in range(hidden)),
        "output.intercept",
    ]
