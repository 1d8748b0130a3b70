"""hetero_poisson's arithmetic, numpy only: the half Poisson deviance, the exposure and label
checks, and the plaintext reference of the protocol's SGD (what the tests compare with)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedflow.components.hetero_lr.math import (
    Floats,
    batches,
    intercept_penalty,
    learning_rate,
    sgd_step,
    with_intercept,
)

EXP_LIMIT = 700.0
"""exp() of a larger log-rate overflows a float: training stops (diverged) before. A host also
stops at a score at or below -EXP_LIMIT: its rate exp(u) would leave float64's normal range
(e^-708), and the bound on y . u_h below rests on every score being inside (-EXP_LIMIT,
EXP_LIMIT)."""

LABEL_SCORE_SLACK = 2.0**-20
"""Relative slack of label_score_bound: encrypted_dot quantises u_h on a grid of at most
2^-23 of its largest magnitude, so y . u_h as decrypted is off by at most 2^-24 EXP_LIMIT sum(y);
2^-20 leaves a factor 16."""


def label_score_bound(y: Floats) -> float:
    """The largest |y . u_h| an honest host's label_score can decrypt to: y >= 0 (counts) and
    every host score |u_h| < EXP_LIMIT (the host refuses to go on otherwise), so |y . u_h| <
    EXP_LIMIT sum(y), plus the encoding's slack."""
    return EXP_LIMIT * float(np.sum(y)) * (1.0 + LABEL_SCORE_SLACK)


def y_log_y(y: Floats) -> Floats:
    """y log y per row, 0 where y = 0."""
    safe = np.where(y > 0.0, y, 1.0)
    return np.asarray(y * np.log(safe), dtype=np.float64)


def half_deviance(y: Floats, mu: Floats) -> float:
    """The summed half Poisson deviance, sum (y log(y / mu) - y + mu)."""
    return float(np.sum(y_log_y(y) - y * np.log(mu) - y + mu))


def batch_loss(y: Floats, log_c: Floats, y_dot_uh: float, mu_sum: float) -> float:
    """A batch's summed half deviance from what the guest holds (y, log c = log e + u_g) and
    learns (y . u_h, sum mu): sum(y log y - y) - y . log c - y . u_h + sum mu."""
    return float(np.sum(y_log_y(y) - y) - y @ log_c - y_dot_uh + mu_sum)


def check_exposure(values: Floats, column: str, component: str) -> Floats:
    """The exposure column, refused unless every value is finite and > 0."""
    bad = values[~(np.isfinite(values) & (values > 0.0))]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in np.unique(bad)[:5])
        scaled = (
            "; many values at or below 0, as a standardised column has: leave the exposure "
            "out of feature_scale's columns (and imputation's), it is not a feature"
            if bad.size * 5 >= values.size
            else ""
        )
        raise ValueError(
            f"{component}: exposure column {column!r} must be > 0 on every row "
            f"({bad.size} rows are not: {shown}){scaled}"
        )
    return values


def start_intercept(y: Floats, exposure: Floats) -> float:
    """The guest's first intercept: log(sum y / sum e), the best constant-rate model (as
    scikit-learn starts); 0 when every label is 0."""
    total = float(np.sum(y))
    return math.log(total / float(np.sum(exposure))) if total > 0.0 else 0.0


def reference_sgd(
    x_guest: Floats,
    x_host: Floats,
    y: Floats,
    params: Mapping[str, Any],
    exposure: Floats | None = None,
) -> tuple[Floats, Floats, list[float]]:
    """The guest's weights (its features, then the intercept), the host's, and each epoch's
    mean half deviance (each batch's taken before its update). No early stop; the
    intercept starts at start_intercept."""
    xg = with_intercept(x_guest)
    log_e = np.zeros(len(y)) if exposure is None else np.log(exposure)
    wg, wh = np.zeros(xg.shape[1]), np.zeros(x_host.shape[1])
    wg[-1] = start_intercept(y, np.exp(log_e))
    penalty = intercept_penalty(xg.shape[1])
    alpha, base = float(params.get("alpha", 0.01)), float(params["learning_rate"])
    decay, seed = float(params.get("decay", 0.0)), int(params.get("seed", 0))
    losses: list[float] = []
    t = 0
    for epoch in range(int(params["epochs"])):
        total = 0.0
        for rows in batches(len(y), int(params["batch_size"]), seed, epoch):
            mu = np.exp(xg[rows] @ wg + log_e[rows] + x_host[rows] @ wh)
            total += half_deviance(y[rows], mu)
            d = mu - y[rows]
            rate = learning_rate(base, decay, t)
            wg = sgd_step(wg, xg[rows].T @ d / len(rows), rate, alpha, penalty)
            wh = sgd_step(wh, x_host[rows].T @ d / len(rows), rate, alpha)
            t += 1
        losses.append(total / len(y))
    return wg, wh, losses
