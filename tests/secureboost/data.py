"""Data and settings the secureboost tests share: the example tables aligned by id, vertical
splits of scikit-learn's data sets, and XGBoost's settings matching ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fedflow.components.hetero_secureboost.params import HeteroSecureBoostParams
from fedflow.tables import Table, read_table
from numpy.typing import NDArray

GUEST, HOST = "9999", "10000"
EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
Floats = NDArray[np.float64]


def example(name: str) -> tuple[Table, Table]:
    """examples/data/<name>_hetero_{guest,host}.csv, the host's rows in the guest's order."""
    guest = read_table(EXAMPLE_DATA / f"{name}_hetero_guest.csv")
    host = read_table(EXAMPLE_DATA / f"{name}_hetero_host.csv", label_column=None)
    return guest, host.align_to(guest.ids)


def xgboost_settings(params: HeteroSecureBoostParams, base: float) -> dict[str, Any]:
    """XGBoost's parameters for the same model (docs/secureboost.md lists them)."""
    settings: dict[str, Any] = {
        "objective": {"multi:softmax": "multi:softprob"}.get(params.objective, params.objective),
        "tree_method": "hist",
        "max_depth": params.max_depth,
        "eta": params.learning_rate,
        "max_bin": params.max_bin,
        "reg_lambda": params.reg_lambda,
        "reg_alpha": 0.0,
        "gamma": params.gamma,
        "min_child_weight": params.min_child_weight,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample,
        "base_score": base,
        "max_delta_step": 0.0,
        "nthread": 1,
        "seed": params.seed,
    }
    if params.objective == "multi:softmax":
        settings["num_class"] = params.num_class
    return settings
