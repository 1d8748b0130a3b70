"""Writes scikit-learn's diabetes data split vertically, for regression_linr.yaml:
diabetes_guest.csv (id, y, age, sex, bmi, bp) and diabetes_host.csv (id, s1..s6).

    python examples/pipelines/make_diabetes.py examples/data
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from sklearn.datasets import load_diabetes


def main(folder: Path) -> None:
    x, y = load_diabetes(return_X_y=True)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "diabetes_guest.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "y", "age", "sex", "bmi", "bp"])
        for i, row in enumerate(x):
            writer.writerow([f"p{i}", repr(float(y[i])), *(repr(float(v)) for v in row[:4])])
    with (folder / "diabetes_host.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", *(f"s{i}" for i in range(1, 7))])
        for i, row in enumerate(x):
            writer.writerow([f"p{i}", *(repr(float(v)) for v in row[4:])])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/data"))
