"""hetero_linr's plaintext reference (numpy only): the protocol's mini-batch SGD on the joined
data, the same batches, learning rates and penalties (what the tests compare with)."""

from __future__ import annotations

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


def reference_sgd(
    x_guest: Floats, x_host: Floats, y: Floats, params: Mapping[str, Any]
) -> tuple[Floats, Floats, list[float]]:
    """The guest's weights (its features, then the intercept), the host's, and each epoch's
    mean squared loss (z - y)^2 / 2 (each batch's taken before its update). No early stop."""
    xg = with_intercept(x_guest)
    wg, wh = np.zeros(xg.shape[1]), np.zeros(x_host.shape[1])
    penalty = intercept_penalty(xg.shape[1])
    alpha, base = float(params.get("alpha", 0.01)), float(params["learning_rate"])
    decay, seed = float(params.get("decay", 0.0)), int(params.get("seed", 0))
    losses: list[float] = []
    t = 0
    for epoch in range(int(params["epochs"])):
        total = 0.0
        for rows in batches(len(y), int(params["batch_size"]), seed, epoch):
            d = xg[rows] @ wg + x_host[rows] @ wh - y[rows]
            total += 0.5 * float(d @ d)
            rate = learning_rate(base, decay, t)
            wg = sgd_step(wg, xg[rows].T @ d / len(rows), rate, alpha, penalty)
            wh = sgd_step(wh, x_host[rows].T @ d / len(rows), rate, alpha)
            t += 1
        losses.append(total / len(y))
    return wg, wh, losses
