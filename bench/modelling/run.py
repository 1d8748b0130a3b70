"""Modelling toolbox benchmark (issue #17): divergence stopped, quality after feature_scale,
hetero_linr against Ridge; standalone, scikit-learn's datasets split vertically.

    python bench/modelling/run.py                 # 1024-bit keys (quality does not depend on it)
    python bench/modelling/run.py --key-bits 2048

Measured, each against a baseline computed in the same run:
1. hetero_lr on scikit-learn's raw breast columns (unscaled, areas in the thousands), the
   default learning rate: where the job stops and with which error; baseline: the plaintext
   reference of the same SGD (fedflow.components.hetero_lr.math.reference_sgd), whose loss
   shows what the run would have reached without the check.
2. feature_scale + hetero_lr on the same columns, the default (Taylor) protocol and
   reveal_host_scores (exact sigmoid): train AUC and its gap to scikit-learn's
   LogisticRegression with the same L2 on the standardized joined table; seconds per epoch.
3. feature_scale + hetero_linr on diabetes (guest: 4 columns and the target, host: 6): RMSE and
   its ratio to scikit-learn's Ridge(alpha * N) on the joined standardized table; seconds per
   epoch.
The load average is recorded before and after (the machine is shared). Results go to
bench/modelling/results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from fedflow.components.evaluation.math import binary_metrics
from fedflow.components.hetero_lr.math import reference_sgd
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, run_pipeline
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge

GUEST, HOST = "9999", "10000"
OUT = Path(__file__).with_name("results.json")


def write(
    path: Path, ids: list[str], x: np.ndarray, names: list[str], y: np.ndarray | None
) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", *(["y"] if y is not None else []), *names])
        for i, key in enumerate(ids):
            label = [repr(float(y[i]))] if y is not None else []
            writer.writerow([key, *label, *(repr(float(v)) for v in x[i])])


def pipeline(name: str, model: str, params: dict[str, Any], scale: bool) -> Pipeline:
    source = "scale_0.data" if scale else "psi_0.data"
    components: list[dict[str, Any]] = [
        {
            "name": "reader_0",
            "type": "reader",
            "params": {"guest": {"table": f"{name}_guest"}, "host": {"table": f"{name}_host"}},
        },
        {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
    ]
    if scale:
        components.append(
            {"name": "scale_0", "type": "feature_scale", "inputs": {"data": "psi_0.data"}}
        )
    components += [
        {
            "name": "model_0",
            "type": model,
            "inputs": {"data": source},
            "params": {"common": params},
        },
        {
            "name": "predict_0",
            "type": f"{model}_predict",
            "inputs": {"model": "model_0.model", "data": source},
        },
    ]
    return Pipeline.from_dict(
        {
            "name": f"bench-{name}",
            "parties": {"guest": GUEST, "host": [HOST]},
            "components": components,
        }
    )


def standardized(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key-bits", type=int, default=1024)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    keys = {"key_bits": args.key_bits, "insecure_short_keys": args.key_bits < 2048}
    results: dict[str, Any] = {"key_bits": args.key_bits, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        breast = load_breast_cancer()
        ids = [f"r{i}" for i in range(len(breast.target))]
        write(
            data / "raw_guest.csv",
            ids,
            breast.data[:, :10],
            [f"g{i}" for i in range(10)],
            breast.target.astype(float),
        )
        write(data / "raw_host.csv", ids, breast.data[:, 10:], [f"h{i}" for i in range(20)], None)
        order = np.argsort(np.array(ids))  # psi sorts the rows by id
        x_raw, y = breast.data[order], breast.target[order].astype(float)

        # 1. divergence, against the plaintext reference of the same SGD
        params = {"epochs": 3, "batch_size": 128, "learning_rate": 0.15, "seed": 1, **keys}
        began = time.perf_counter()
        try:
            run_pipeline(
                pipeline("raw", "hetero_lr", params, False),
                {GUEST: data, HOST: data},
                Path(tmp) / "w1",
            )
            error = "none: the job succeeded"
        except StandaloneError as exc:
            error = str(exc)
        _, _, losses = reference_sgd(x_raw[:, :10], x_raw[:, 10:], y, params)
        results["divergence"] = {
            "error": error,
            "seconds_to_error": time.perf_counter() - began,
            "reference_loss_per_epoch_without_check": losses,
        }

        # 2. quality after feature_scale, against scikit-learn on the same standardized table
        joined = standardized(x_raw)
        central = LogisticRegression(C=1.0 / (0.01 * len(y)), max_iter=10_000).fit(joined, y)
        central_auc = binary_metrics(
            y == 1, central.decision_function(joined), threshold=0.5, curve_points=2
        ).auc
        for mode, extra in (
            ("default", {"epochs": 30, "learning_rate": 0.5}),
            ("reveal_host_scores", {"epochs": 6, "learning_rate": 1.0, "reveal_host_scores": True}),
        ):
            params = {
                "batch_size": 128,
                "alpha": 0.01,
                "seed": 1,
                "early_stop": False,
                **keys,
                **extra,
            }
            result = run_pipeline(
                pipeline("raw", "hetero_lr", params, True),
                {GUEST: data, HOST: data},
                Path(tmp) / f"w2{mode}",
            )
            scored = result.output(GUEST, "guest", "predict_0", "data")
            auc = binary_metrics(
                scored.labels == 1, scored.column("score"), threshold=0.5, curve_points=2
            ).auc
            seconds = result.metric("model_0", "train_seconds", GUEST)
            results[f"hetero_lr_{mode}"] = {
                "auc": auc,
                "sklearn_auc": central_auc,
                "gap": central_auc - auc,
                "epochs": extra["epochs"],
                "seconds_per_epoch": seconds / extra["epochs"],
            }

        # 3. hetero_linr against Ridge
        xd, yd = load_diabetes(return_X_y=True)
        dids = [f"p{i}" for i in range(len(yd))]
        write(data / "diab_guest.csv", dids, xd[:, :4], ["age", "sex", "bmi", "bp"], yd)
        write(data / "diab_host.csv", dids, xd[:, 4:], [f"s{i}" for i in range(1, 7)], None)
        params = {
            "epochs": 10,
            "batch_size": 128,
            "learning_rate": 0.3,
            "alpha": 0.01,
            "early_stop": False,
            **keys,
        }
        result = run_pipeline(
            pipeline("diab", "hetero_linr", params, True),
            {GUEST: data, HOST: data},
            Path(tmp) / "w3",
        )
        predicted = result.output(GUEST, "guest", "predict_0", "data")
        dorder = np.argsort(np.array(dids))
        joined_d, yd_sorted = standardized(xd[dorder]), yd[dorder]
        ridge = Ridge(alpha=0.01 * len(yd)).fit(joined_d, yd_sorted)
        ridge_rmse = float(np.sqrt(np.mean((ridge.predict(joined_d) - yd_sorted) ** 2)))
        assert predicted.labels is not None
        rmse = float(np.sqrt(np.mean((predicted.column("prediction") - predicted.labels) ** 2)))
        results["hetero_linr"] = {
            "rmse": rmse,
            "ridge_rmse": ridge_rmse,
            "ratio": rmse / ridge_rmse,
            "seconds_per_epoch": result.metric("model_0", "train_seconds", GUEST) / 10,
        }
    results["load_after"] = os.getloadavg()
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
