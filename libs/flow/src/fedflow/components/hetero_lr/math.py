"""hetero_lr's arithmetic, numpy only (no IO, no crypto): batches, the update rule, the losses,
and the plaintext reference of the whole protocol (what the tests and the demo compare with).

The Taylor approximation sigma(z) ~ 0.5 + z / 4 around 0 (z = u_g + u_h) makes the residual
d = z / 4 + 0.5 - y linear in the parties' scores, so that it can be formed under encryption;
the separable fit sigma(u_g + u_h) ~ a_0(u_g) + sum_j a_j(u_g) b_j(u_h) (the default with one
host: resolve_sigmoid) makes it a sum of products of one party's plaintext and the other's
ciphertext. The loss the parties compute for early stopping and the divergence watch is the
Taylor loss per row, log 2 - y' z / 2 + z^2 / 8 (y' = 2y - 1), in either case.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]

LOG2: Final = math.log(2.0)
SCALE_LIMIT: Final = 10.0
"""A feature whose mean magnitude or standard deviation exceeds this is far from scale: the
component warns (SGD's steps grow with the square of a feature's scale)."""


def min_batch_size(k_guest: int, k_host: int) -> int:
    """The smallest batch allowed: with b <= k + 3 a party could solve its views for the
    other party's per-sample values (docs/hetero_lr.md); 4x that, and never below 64."""
    return max(64, 4 * (max(k_guest, k_host) + 3))


def batches(rows: int, batch_size: int, seed: int, epoch: int) -> list[NDArray[np.int64]]:
    """The epoch's batches: a permutation from (seed, epoch), cut into batches of at least
    `batch_size` rows (the remainder joins the last batch). Every party computes the same."""
    order = np.random.default_rng([seed, epoch]).permutation(rows)
    count = max(1, rows // batch_size)
    return [np.asarray(part, dtype=np.int64) for part in np.array_split(order, count)]


def largest_batch(rows: int, batch_size: int) -> int:
    """Rows of the largest batch of an epoch (`batches` cuts them almost evenly)."""
    return -(-rows // max(1, rows // batch_size))


def learning_rate(base: float, decay: float, t: int) -> float:
    """The learning rate at iteration t: base / sqrt(1 + decay * t)."""
    return base / math.sqrt(1.0 + decay * t)


def sgd_step(
    weights: Floats, gradient: Floats, rate: float, alpha: float, penalty: Floats | None = None
) -> Floats:
    """One step of L2-penalised SGD; `penalty` is 1 for a penalised weight, 0 for the
    intercept (None: every weight penalised)."""
    shrink = alpha * weights if penalty is None else alpha * penalty * weights
    return np.asarray(weights - rate * (gradient + shrink), dtype=np.float64)


def intercept_penalty(k: int) -> Floats:
    """The guest's penalty mask: its k - 1 features penalised, the intercept (last) not."""
    return np.append(np.ones(k - 1), 0.0)


def with_intercept(features: Floats) -> Floats:
    return np.hstack([features, np.ones((features.shape[0], 1))])


def column_scales(matrix: Floats) -> Floats:
    """Per column, the power of two 2^ceil(log2 max|column|) (1 for a zero column): dividing
    by it is exact and leaves every entry in [-1, 1]."""
    largest = np.max(np.abs(matrix), axis=0) if matrix.shape[0] else np.zeros(matrix.shape[1])
    exponents = np.ceil(np.log2(np.where(largest > 0.0, largest, 1.0)))
    return np.asarray(np.exp2(exponents), dtype=np.float64)


def taylor_residual_part(u_g: Floats, y: Floats) -> Floats:
    """The guest's part of the Taylor residual, v = u_g / 4 + 0.5 - y (d = v + u_h / 4)."""
    return 0.25 * u_g + 0.5 - y


def taylor_loss_from_aggregates(
    b: int, y_dot_ug: float, y_dot_uh: float, ug_sq: float, ug_dot_uh: float, uh_sq: float
) -> float:
    """A batch's summed Taylor loss from the aggregates the guest learns: b log 2
    - (y'.u_g + y'.u_h) / 2 + (u_g.u_g + 2 u_g.u_h + u_h.u_h) / 8."""
    return b * LOG2 - 0.5 * (y_dot_ug + y_dot_uh) + (ug_sq + 2 * ug_dot_uh + uh_sq) / 8


def squared_loss_from_aggregates(
    y: Floats, u_g: Floats, y_dot_uh: float, ug_dot_uh: float, uh_sq: float
) -> float:
    """A batch's summed squared loss (z - y)^2 / 2 from what the guest holds and learns:
    (|u_g - y|^2 + 2 u_g.u_h - 2 y.u_h + u_h.u_h) / 2."""
    r = u_g - y
    return 0.5 * (float(r @ r) + 2.0 * ug_dot_uh - 2.0 * y_dot_uh + uh_sq)


@dataclass(frozen=True)
class Objective:
    """A model trained by hetero_lr's exchange: the residual is d = v + host_coef * u_h with
    the guest's part v = residual_part(u_g, y), linear in the hosts' scores u_h, so a host
    can form X_h^T [[d]] under encryption. The guest learns A^T u_h for A = [X_g,
    label_column(y), u_g] and the hosts' sum of u_h^2, from which batch_loss gives the
    batch's summed loss."""

    name: str
    host_coef: float
    residual_part: Callable[[Floats, Floats], Floats]
    label_column: Callable[[Floats], Floats]
    batch_loss: Callable[[Floats, Floats, float, float, float], float]
    validate_loss: Callable[[Floats, Floats], float]
    """The loss of validation rows from their labels y and full scores z (validate_loss)."""


def _taylor_batch_loss(
    y: Floats, u_g: Floats, y_dot_uh: float, ug_dot_uh: float, uh_sq: float
) -> float:
    y_pm = 2.0 * y - 1.0
    return taylor_loss_from_aggregates(
        len(y), float(y_pm @ u_g), y_dot_uh, float(u_g @ u_g), ug_dot_uh, uh_sq
    )


LOGISTIC: Final = Objective(
    name="hetero_lr",
    host_coef=0.25,
    residual_part=taylor_residual_part,
    label_column=lambda y: 2.0 * y - 1.0,
    batch_loss=_taylor_batch_loss,
    validate_loss=lambda y, z: mean_log_loss(y, z),
)
"""hetero_lr: the Taylor-approximated logistic loss (d = z / 4 + 0.5 - y)."""

SQUARED: Final = Objective(
    name="hetero_linr",
    host_coef=1.0,
    residual_part=lambda u_g, y: u_g - y,
    label_column=lambda y: y,
    batch_loss=squared_loss_from_aggregates,
    validate_loss=lambda y, z: 0.5 * float(np.mean((z - y) ** 2)) if len(y) else 0.0,
)
"""hetero_linr: the squared loss (z - y)^2 / 2 (d = z - y), exact."""


# -- the separable sigmoid (sigmoid: separable) --------------------------------------------------

SEPARABLE_GUEST_RANGE: Final = 8.0
"""The guest's scores u_g are tabulated on [-8, 8] (clamped outside: the sigmoid is within
3.4e-4 of 0 or 1 there)."""
SEPARABLE_HOST_RANGE: Final = 3.0
"""The host's scores u_h on [-3, 3], where a host's partial scores lie in practice (clamped
outside): the approximation is fitted where it is used."""
SEPARABLE_RANK: Final = 2
SEPARABLE_POINTS: Final = 401


def resolve_sigmoid(sigmoid: str, hosts: int) -> str:
    """The sigmoid a run uses: `auto` (the default) is the separable fit with one host (a
    train AUC within 0.002 of the exact sigmoid's on default_credit and breast) and the
    Taylor line with several (a function of the sum of several hosts' scores does not
    separate per host); `taylor` and `separable` are themselves."""
    if sigmoid == "auto":
        return "separable" if hosts == 1 else "taylor"
    return sigmoid


@functools.cache
def _separable_tables() -> tuple[Floats, Floats, Floats, Floats]:
    """sigmoid(x + y) ~ a_0(x) + sum_j a_j(x) b_j(y), j = 1..SEPARABLE_RANK: a_0 the mean
    over y, then the leading singular pairs of the rest on the grid (the best rank-r fit in
    the least-squares sense). Each b_j is scaled to peak at +1 (fixing the SVD's sign), so
    that every party computes the same tables. Returns the two grids and the a, b tables."""
    gx = np.linspace(-SEPARABLE_GUEST_RANGE, SEPARABLE_GUEST_RANGE, SEPARABLE_POINTS)
    gy = np.linspace(-SEPARABLE_HOST_RANGE, SEPARABLE_HOST_RANGE, SEPARABLE_POINTS)
    kernel = sigmoid(gx[:, None] + gy[None, :])
    a0 = kernel.mean(axis=1)
    rest = kernel - a0[:, None]
    a = [a0]
    b = [np.ones_like(gy)]
    for v in _leading_right_singular_vectors(rest, SEPARABLE_RANK):
        # b_j's largest magnitude is +1 (sign and scale moved into a_j): the host's stacked
        # matrix [X_h; X_h b_1; ...] then has blocks of one magnitude, which its one
        # quantisation grid (encrypted_dot) keeps to full precision.
        peak = v[np.argmax(np.abs(v))]
        a.append(peak * np.einsum("ij,j->i", rest, v))  # sigma_j u_j = rest v_j
        b.append(v / peak)
    return gx, gy, np.stack(a), np.stack(b)


def _leading_right_singular_vectors(matrix: Floats, rank: int, steps: int = 80) -> list[Floats]:
    """The `rank` leading right singular vectors of `matrix`, by subspace iteration on
    matrix^T matrix with Gram-Schmidt, in numpy's own loops (einsum, no BLAS or LAPACK).
    np.linalg.svd of the 401 x 401 grid costs 0.3-0.5 CPU s per process under multithreaded
    OpenBLAS on a busy 2-core machine (its threads spin; 1-3 s of wall time) for 0.03 s of
    work; this is single-threaded and deterministic. For the sigmoid kernel the singular
    values fall by a factor of 3.6 and 3.2 (62.1, 17.4, 5.4), so each step shrinks the error
    by 10x at least: 80 steps are at machine precision."""
    basis = [np.linspace(-1.0, 1.0, matrix.shape[1]) ** (j + 1) for j in range(rank)]
    for _ in range(steps):
        basis = [np.einsum("ij,i->j", matrix, np.einsum("ij,j->i", matrix, v)) for v in basis]
        for j in range(rank):
            for k in range(j):
                basis[j] = basis[j] - (basis[k] @ basis[j]) * basis[k]
            basis[j] = basis[j] / np.sqrt(basis[j] @ basis[j])
    return basis


def separable_guest(u_g: Floats) -> Floats:
    """a_j(u_g), j = 0..rank, shape (rank + 1, b): the guest's factors."""
    gx, _, a, _ = _separable_tables()
    clipped = np.clip(u_g, gx[0], gx[-1])
    return np.stack([np.interp(clipped, gx, row) for row in a])


def separable_host(u_h: Floats) -> Floats:
    """b_j(u_h), j = 1..rank, shape (rank, b): the host's factors (b_0 = 1 needs none)."""
    _, gy, _, b = _separable_tables()
    clipped = np.clip(u_h, gy[0], gy[-1])
    return np.stack([np.interp(clipped, gy, row) for row in b[1:]])


def separable_sigmoid(u_g: Floats, u_h: Floats) -> Floats:
    """sigmoid(u_g + u_h) as the protocol approximates it with sigmoid: separable."""
    a = separable_guest(u_g)
    return np.asarray(a[0] + np.sum(a[1:] * separable_host(u_h), axis=0), dtype=np.float64)


def logistic_loss(y: Floats, z: Floats) -> float:
    """Summed log(1 + exp(-y'z)), computed stably."""
    return float(np.sum(np.logaddexp(0.0, -(2.0 * y - 1.0) * z)))


def sigmoid(z: Floats) -> Floats:
    return 1.0 / (1.0 + np.exp(-z))


# -- the plaintext reference ------------------------------------------------------------------


def reference_sgd(
    x_guest: Floats,
    x_host: Floats,
    y: Floats,
    params: Mapping[str, Any],
    *,
    taylor: bool = True,
    epochs: int | None = None,
    hosts: int = 1,
    stop_early: bool = False,
) -> tuple[Floats, Floats, list[float]]:
    """The protocol's training on the joined data in plaintext: the same batches, learning
    rates and penalties. Returns the guest's weights (its features, then the intercept), the
    host's, and each epoch's mean Taylor loss (each batch's loss taken before its update, as
    the protocol computes it). `taylor=False`: the exact sigmoid, what reveal_host_scores
    computes. `x_host` may be the hosts' features side by side (`hosts` of them).
    params["sigmoid"] as the component reads it: `separable`, or `auto` (the default) with
    one host, the separable sigmoid; `taylor`, or `auto` with several hosts, the Taylor
    line. `stop_early`: params' early stopping too (`early_stop`, default on: after an epoch
    whose loss improved by less than `tol`, as fedflow.kit.loop.LossWatch decides); without
    it, every epoch runs."""
    separable = resolve_sigmoid(str(params.get("sigmoid", "auto")), hosts) == "separable"
    xg = with_intercept(x_guest)
    wg, wh = np.zeros(xg.shape[1]), np.zeros(x_host.shape[1])
    penalty = intercept_penalty(xg.shape[1])
    alpha, base = float(params.get("alpha", 0.01)), float(params["learning_rate"])
    decay, seed = float(params.get("decay", 0.0)), int(params.get("seed", 0))
    losses: list[float] = []
    tol = float(params.get("tol", 1e-4))
    stop_early = stop_early and bool(params.get("early_stop", True))
    t = 0
    for epoch in range(epochs or int(params["epochs"])):
        total = 0.0
        for rows in batches(len(y), int(params["batch_size"]), seed, epoch):
            z = xg[rows] @ wg + x_host[rows] @ wh
            total += float(np.sum(LOG2 - 0.5 * (2 * y[rows] - 1) * z + z**2 / 8))
            if not taylor:
                d = sigmoid(z) - y[rows]
            elif separable:
                d = separable_sigmoid(xg[rows] @ wg, x_host[rows] @ wh) - y[rows]
            else:
                d = 0.25 * z + 0.5 - y[rows]
            rate = learning_rate(base, decay, t)
            gg, gh = xg[rows].T @ d / len(rows), x_host[rows].T @ d / len(rows)
            wg = sgd_step(wg, gg, rate, alpha, penalty)
            wh = sgd_step(wh, gh, rate, alpha)
            t += 1
        losses.append(total / len(y))
        if stop_early and len(losses) > 1 and 0.0 <= losses[-2] - losses[-1] < tol:
            break
    return wg, wh, losses


# -- multi-class (one-vs-rest) and validation ---------------------------------------------------


def class_values(labels: Floats) -> list[float]:
    """The classes one-vs-rest trains (multi_class: true): one binary model per distinct
    label value (class labels, integers >= 0, checked by the descriptor's LabelRule), that
    class against the rest."""
    return sorted({float(v) for v in np.unique(labels)})


def one_vs_rest(labels: Floats, value: float) -> Floats:
    """The binary labels of class `value` against the rest."""
    return np.asarray(labels == value, dtype=np.float64)


def mean_log_loss(y: Floats, z: Floats) -> float:
    """The mean of log(1 + exp(-y'z)) over the rows (0 for no rows)."""
    return logistic_loss(y, z) / len(y) if len(y) else 0.0


@dataclass
class Patience:
    """Early stopping on a validation loss: an epoch improves when its loss is lower than the
    best so far by more than `min_delta`; training stops after `patience` epochs in a row
    without one (patience 0: never). The model to keep is the best epoch's."""

    patience: int
    min_delta: float
    best: float | None = None
    best_epoch: int | None = None
    waited: int = 0

    def update(self, loss: float, epoch: int) -> tuple[bool, bool]:
        """This epoch's validation loss in; (whether it is the best so far, whether to
        stop)."""
        if self.best is None or self.best - loss > self.min_delta:
            self.best, self.best_epoch, self.waited = loss, epoch, 0
            return True, False
        self.waited += 1
        return False, bool(self.patience and self.waited >= self.patience)

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "waited": self.waited}

    @classmethod
    def restore(cls, saved: Mapping[str, Any] | None, patience: int, min_delta: float) -> Patience:
        watch = cls(patience, min_delta)
        if saved:
            best, epoch = saved.get("best"), saved.get("best_epoch")
            watch.best = None if best is None else float(best)
            watch.best_epoch = None if epoch is None else int(epoch)
            watch.waited = int(saved.get("waited", 0))
        return watch


def reference_ovr(
    x_guest: Floats,
    x_host: Floats,
    labels: Floats,
    params: Mapping[str, Any],
    *,
    taylor: bool = True,
    hosts: int = 1,
    stop_early: bool = False,
) -> tuple[list[float], Floats, Floats]:
    """One-vs-rest in plaintext: the classes, and the guest's and the host's weights, one
    column per class (reference_sgd on each class against the rest, `stop_early` and `hosts`
    as there). The federated one-vs-rest trains every class in the same batches (one lane
    per class), and a class that stops early keeps its weights while the others go on: per
    class, the same computation as this."""
    classes = class_values(labels)
    guest, host = [], []
    for value in classes:
        wg, wh, _ = reference_sgd(
            x_guest,
            x_host,
            one_vs_rest(labels, value),
            params,
            taylor=taylor,
            hosts=hosts,
            stop_early=stop_early,
        )
        guest.append(wg)
        host.append(wh)
    return classes, np.stack(guest, axis=1), np.stack(host, axis=1)
