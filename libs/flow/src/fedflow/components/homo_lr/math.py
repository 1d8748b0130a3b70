"""homo_lr's arithmetic, numpy only (no IO, no crypto): local training, the update each client
contributes, FedAvg of the contributions, and the plaintext references the tests compare with
(the federated run without secure aggregation, and one model trained on the pooled rows).

The model is w = (w_1..w_k, intercept) for features in the same order at every client. A
client's contribution to round r is the vector (length k + 3)

    x = (p * (w_local - w_global), p * loss, p),   p = rows / ROW_SCALE

where loss is the log loss of the global model w_global on the client's rows before it trains.
Summed over the clients that complete the round, the sums give FedAvg weighted by sample
counts (sum p * delta / sum p) and the sample-weighted mean loss (sum p * loss / sum p),
whoever dropped out: the aggregator never needs any single client's row count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]

ROW_SCALE: Final = float(2**24)
"""p = rows / ROW_SCALE keeps every client's weight in (0, 1]: a client holds at most 2^24 rows
(16.7 million). Public, the same at every party."""
EXTRA: Final = 2
"""Coordinates after the model delta: p * loss, p."""
VALIDATION: Final = 2
"""With validate_data, two more after those: q * the global model's loss on the client's
validation rows, q = validation rows / ROW_SCALE (summed like the training loss)."""


@dataclass(frozen=True)
class LocalTraining:
    """What a client does with the global model each round (the params' training fields)."""

    local_epochs: int
    batch_size: int
    learning_rate: float
    alpha: float
    seed: int
    proximal_mu: float = 0.0
    """FedProx: (mu / 2) * ||w - w_global||^2 added to every local step's objective."""
    learning_rate_decay: float = 1.0
    """The schedule: round r's local steps take learning_rate * learning_rate_decay ** r."""

    def at_round(self, r: int) -> LocalTraining:
        """This training with round r's learning rate (the schedule applied)."""
        if self.learning_rate_decay == 1.0:
            return self
        return replace(self, learning_rate=self.learning_rate * self.learning_rate_decay**r)


def sigmoid(z: Floats) -> Floats:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def with_intercept(x: Floats) -> Floats:
    return np.hstack([x, np.ones((x.shape[0], 1))])


def log_loss(weights: Floats, x1: Floats, y: Floats) -> float:
    """Mean log loss of sigmoid(x1 @ w) against y in {0, 1} (x1 with its intercept column)."""
    z = x1 @ weights
    # log(1 + e^z) - y z, computed without overflow.
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def penalty_mask(k: int) -> Floats:
    """1 for a feature weight, 0 for the intercept (not penalised)."""
    mask = np.ones(k + 1)
    mask[-1] = 0.0
    return mask


def local_sgd(
    weights: Floats, x1: Floats, y: Floats, training: LocalTraining, stream: Sequence[int]
) -> Floats:
    """`training.local_epochs` epochs of mini-batch SGD on the exact log loss, from `weights`.

    `stream` seeds the batch order (a client uses (seed, round, client id)), so the plaintext
    reference replays a run exactly."""
    w = np.array(weights, dtype=np.float64)
    anchor = np.array(weights, dtype=np.float64)
    rows = x1.shape[0]
    mask = penalty_mask(x1.shape[1] - 1)
    mu = training.proximal_mu
    for epoch in range(training.local_epochs):
        order = np.random.default_rng([*stream, epoch]).permutation(rows)
        for start in range(0, rows, training.batch_size):
            batch = order[start : start + training.batch_size]
            xb, yb = x1[batch], y[batch]
            gradient = xb.T @ (sigmoid(xb @ w) - yb) / len(batch) + training.alpha * mask * w
            if mu:
                gradient = gradient + mu * (w - anchor)
            w -= training.learning_rate * gradient
    return w


def contribution(global_weights: Floats, local_weights: Floats, loss: float, rows: int) -> Floats:
    """The vector a client puts into the round's secure sum (module docstring)."""
    p = rows / ROW_SCALE
    return np.concatenate([p * (local_weights - global_weights), [p * loss, p]])


def validation_loss(total: Floats, k1: int) -> float:
    """The round's global model's mean loss over every summed client's validation rows."""
    weight = float(total[k1 + EXTRA + 1])
    if not weight > 0:
        raise ValueError("the round's sum has no validation rows: no client contributed")
    return float(total[k1 + EXTRA]) / weight


def clip_norm(delta: Floats, bound: float | None) -> tuple[Floats, bool]:
    """delta scaled down to L2 norm `bound` when it is longer (None: unchanged); and whether it
    was clipped."""
    if bound is None:
        return delta, False
    norm = float(np.linalg.norm(delta))
    if norm <= bound:
        return delta, False
    return delta * (bound / norm), True


def average(global_weights: Floats, total: Floats) -> tuple[Floats, float]:
    """The row-weighted mean model delta and the round's sample-weighted mean loss from the
    summed contributions of the clients that completed the round."""
    k1 = global_weights.shape[0]
    weight = float(total[k1 + 1])
    if not weight > 0:
        raise ValueError("the round's sum has no sample weight: no client contributed")
    return total[:k1] / weight, float(total[k1]) / weight


def apply_sum(global_weights: Floats, total: Floats) -> tuple[Floats, float]:
    """The next global model (FedAvg weighted by rows over the clients that completed the
    round) and the round's sample-weighted mean loss."""
    delta, loss = average(global_weights, total)
    return global_weights + delta, loss


@dataclass(frozen=True)
class ServerRule:
    """How the aggregator turns the round's mean delta into the next global model (Reddi et
    al., "Adaptive Federated Optimization", ICLR 2021): `sgd` w + lr * delta (lr 1: FedAvg);
    `adam` / `yogi` keep moments m, v of the deltas (state, checkpointed)."""

    name: str = "sgd"
    learning_rate: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def initial(self, k1: int) -> dict[str, Floats]:
        if self.name == "sgd":
            return {}
        return {"m": np.zeros(k1), "v": np.full(k1, self.tau**2)}

    def step(
        self, weights: Floats, delta: Floats, state: dict[str, Floats]
    ) -> tuple[Floats, dict[str, Floats]]:
        if self.name == "sgd":
            if self.learning_rate == 1.0:
                return weights + delta, state
            return weights + self.learning_rate * delta, state
        m = self.beta1 * state["m"] + (1.0 - self.beta1) * delta
        square = delta * delta
        if self.name == "adam":
            v = self.beta2 * state["v"] + (1.0 - self.beta2) * square
        elif self.name == "yogi":
            v = state["v"] - (1.0 - self.beta2) * square * np.sign(state["v"] - square)
        else:
            raise ValueError(f"unknown server optimizer {self.name!r} (sgd, adam, yogi)")
        return weights + self.learning_rate * m / (np.sqrt(v) + self.tau), {"m": m, "v": v}


def update_problem(vector: Floats, length: int) -> str | None:
    """Why a client's contribution cannot go into the sum (None: it can)."""
    if vector.shape != (length,):
        return f"update has shape {vector.shape}, the model needs ({length},)"
    bad = int(np.count_nonzero(~np.isfinite(vector)))
    if bad:
        return f"update has {bad} NaN or infinite values (local training diverged?)"
    return None


def reference_fedavg(
    parts: Sequence[tuple[Floats, Floats]],
    training: LocalTraining,
    rounds: int,
    *,
    clip: float | None = None,
    skip: Sequence[tuple[int, int]] = (),
    server: ServerRule | None = None,
) -> Floats:
    """The federated run in plaintext: `parts` are the clients' (features, labels) in client-id
    order (id 1 first); `skip` lists (round, client index) pairs that did not contribute;
    `server` the aggregator's rule (None: FedAvg)."""
    k1 = parts[0][0].shape[1] + 1
    w = np.zeros(k1)
    rule = server or ServerRule()
    state = rule.initial(k1)
    data = [(with_intercept(x), y) for x, y in parts]
    for r in range(rounds):
        total = np.zeros(k1 + EXTRA)
        for i, (x1, y) in enumerate(data):
            if (r, i) in skip:
                continue
            local = local_sgd(w, x1, y, training.at_round(r), (training.seed, r, i + 1))
            delta, _ = clip_norm(local - w, clip)
            total += contribution(w, w + delta, log_loss(w, x1, y), len(y))
        mean, _ = average(w, total)
        w, state = rule.step(w, mean, state)
    return w


def reference_pooled(x: Floats, y: Floats, training: LocalTraining, rounds: int) -> Floats:
    """The same model trained on the pooled rows (rounds x local_epochs epochs, round r at
    round r's learning rate), the centralised baseline the federated model is compared with;
    on one party's rows, that party's own model."""
    w = np.zeros(x.shape[1] + 1)
    x1 = with_intercept(x)
    for r in range(rounds):
        w = local_sgd(w, x1, y, training.at_round(r), (training.seed, r, 0))
    return w


class RobustRuleError(ValueError):
    """A robust rule cannot combine this round's updates (too few of them)."""


def coordinate_median(updates: Floats) -> Floats:
    """The coordinate-wise median of the rows of `updates` (n, d); an even n takes the mean
    of the two middle values."""
    return np.asarray(np.median(updates, axis=0), dtype=np.float64)


def trimmed_mean(updates: Floats, fraction: float) -> Floats:
    """The coordinate-wise mean of the rows of `updates` (n, d) after dropping, in every
    coordinate, the floor(fraction * n) largest and as many smallest values."""
    n = updates.shape[0]
    cut = int(np.floor(fraction * n))
    if n - 2 * cut < 1:
        raise RobustRuleError(f"trimmed_mean: trimming {cut} of {n} updates each side leaves none")
    ordered = np.sort(updates, axis=0)
    return np.asarray(ordered[cut : n - cut].mean(axis=0), dtype=np.float64)


def krum(updates: Floats, byzantine: int) -> int:
    """Krum (Blanchard et al., NeurIPS 2017): the index of the row of `updates` (n, d) with the
    smallest sum of squared distances to its n - f - 2 nearest other rows; ties go to the
    lowest index. Needs n >= 2f + 3."""
    n = updates.shape[0]
    if n < 2 * byzantine + 3:
        raise RobustRuleError(
            f"krum with krum_byzantine {byzantine} needs at least {2 * byzantine + 3} updates "
            f"(2f + 3), this round has {n}"
        )
    gram = updates @ updates.T
    norms = np.diag(gram)
    distances = np.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
    nearest = n - byzantine - 2
    scores = [float(np.sort(np.delete(distances[i], i))[:nearest].sum()) for i in range(n)]
    return int(np.argmin(scores))


@dataclass(frozen=True)
class PlainRound:
    """What the aggregator makes of one round's visible updates."""

    delta: Floats
    loss: float
    clipped: dict[int, float]
    """Client id -> the factor its delta was scaled by (< 1), for each clipped update."""
    chosen: int | None = None
    """krum: the client id whose update was taken."""
    validation: float | None = None
    """With validate_data: the global model's loss over the validation rows of every client
    whose update arrived (row-weighted, whatever the rule)."""


def combine_plain(
    rule: str,
    vectors: dict[int, Floats],
    k1: int,
    *,
    clip: float | None = None,
    trim_fraction: float = 0.2,
    byzantine: int = 1,
) -> PlainRound:
    """Combine the clients' contributions (client id -> x = (p delta, p loss, p), as for the
    secure sum) by `rule`: each delta is clipped to `clip` first (None: not); fedavg_clipped
    weights them by rows as FedAvg does; median, trimmed_mean and krum count every client once.
    The loss goes with the delta: the row-weighted mean (fedavg_clipped), the same coordinate
    rule (median, trimmed_mean), or the chosen client's (krum)."""
    if not vectors:
        raise RobustRuleError("no client's update arrived this round")
    ids = sorted(vectors)
    weights = np.array([float(vectors[c][k1 + 1]) for c in ids])
    if not np.all(weights > 0):
        raise RobustRuleError("an update has no sample weight")
    deltas = np.stack([vectors[c][:k1] / w for c, w in zip(ids, weights, strict=True)])
    losses = np.array([float(vectors[c][k1]) / w for c, w in zip(ids, weights, strict=True)])
    clipped: dict[int, float] = {}
    if clip is not None:
        for i, c in enumerate(ids):
            norm = float(np.linalg.norm(deltas[i]))
            if norm > clip:
                clipped[c] = clip / norm
                deltas[i] *= clip / norm
    if rule == "fedavg_clipped":
        share = weights / weights.sum()
        return PlainRound(share @ deltas, float(share @ losses), clipped)
    if rule in ("median", "trimmed_mean"):
        both = np.column_stack([deltas, losses])
        out = coordinate_median(both) if rule == "median" else trimmed_mean(both, trim_fraction)
        return PlainRound(out[:k1], float(out[k1]), clipped)
    if rule == "krum":
        i = krum(deltas, byzantine)
        return PlainRound(deltas[i].copy(), float(losses[i]), clipped, chosen=ids[i])
    raise ValueError(f"unknown aggregation {rule!r} (fedavg_clipped, median, trimmed_mean, krum)")
