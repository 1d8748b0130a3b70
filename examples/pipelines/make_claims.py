"""Writes a claims-count table split vertically across three parties, for poisson_claims.yaml:
scikit-learn's diabetes features (standardized) as the risk factors, a Poisson count of claims
drawn from exposure * exp(0.8 + x . beta) (fixed beta and seed), and each row's exposure
(policy years, uniform in 0.5 .. 2) at the guest:

    claims_guest.csv   (id, y, age, sex, bmi, bp, exposure)
    claims_host_a.csv  (id, s1, s2, s3)
    claims_host_b.csv  (id, s4, s5, s6)

    python examples/pipelines/make_claims.py examples/data
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_diabetes

BETA = np.array([0.05, -0.1, 0.3, 0.2, -0.15, 0.1, -0.1, 0.1, 0.25, 0.05])


def main(folder: Path) -> None:
    x, _ = load_diabetes(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    rng = np.random.default_rng(7)
    exposure = rng.uniform(0.5, 2.0, len(x))
    y = rng.poisson(exposure * np.exp(0.8 + x @ BETA))
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "claims_guest.csv": (["y", "age", "sex", "bmi", "bp", "exposure"], None),
        "claims_host_a.csv": (["s1", "s2", "s3"], slice(4, 7)),
        "claims_host_b.csv": (["s4", "s5", "s6"], slice(7, 10)),
    }
    for name, (columns, cut) in parts.items():
        with (folder / name).open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["id", *columns])
            for i, row in enumerate(x):
                if cut is None:
                    cells = [str(int(y[i])), *map(repr, map(float, [*row[:4], exposure[i]]))]
                else:
                    cells = [repr(float(v)) for v in row[cut]]
                writer.writerow([f"c{i}", *cells])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/data"))
