"""Reading a party's CSV table: an id column, an optional label, numeric features.

A row that cannot be read is reported with its file and line number; nothing is silently
dropped or filled in.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


class TableError(ValueError):
    """A table could not be read; the message names the file and line."""


@dataclass(frozen=True)
class Table:
    ids: NDArray[np.str_]
    features: NDArray[np.float64]
    feature_names: list[str]
    labels: NDArray[np.float64] | None

    def align_to(self, ids: NDArray[np.str_]) -> Table:
        """The rows of this table in the order of `ids` (all must be present)."""
        position = {key: i for i, key in enumerate(self.ids.tolist())}
        missing = [key for key in ids.tolist() if key not in position]
        if missing:
            raise TableError(f"{len(missing)} ids are not in this table, e.g. {missing[0]!r}")
        order = np.array([position[key] for key in ids.tolist()], dtype=np.int64)
        return Table(
            ids=self.ids[order],
            features=self.features[order],
            feature_names=self.feature_names,
            labels=None if self.labels is None else self.labels[order],
        )


def read_table(path: Path, *, id_column: str = "id", label_column: str | None = "y") -> Table:
    """Read `path`; `label_column` is used when present in the header."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise TableError(f"{path}: empty file, expected a header line") from None
        if id_column not in header:
            raise TableError(f"{path}:1: no {id_column!r} column in the header")
        id_at = header.index(id_column)
        label_at = header.index(label_column) if label_column in header else None
        feature_at = [i for i in range(len(header)) if i not in (id_at, label_at)]
        ids: list[str] = []
        rows: list[list[float]] = []
        labels: list[float] = []
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise TableError(
                    f"{path}:{line}: {len(row)} fields, the header has {len(header)}"
                )
            key = row[id_at]
            if key in seen:
                raise TableError(f"{path}:{line}: id {key!r} already on line {seen[key]}")
            seen[key] = line
            try:
                values = [float(row[i]) for i in feature_at]
                label = float(row[label_at]) if label_at is not None else 0.0
            except ValueError as exc:
                raise TableError(f"{path}:{line}: not a number ({exc})") from None
            if not all(np.isfinite(values)) or not np.isfinite(label):
                raise TableError(f"{path}:{line}: NaN or infinite value")
            ids.append(key)
            rows.append(values)
            labels.append(label)
    if not ids:
        raise TableError(f"{path}: no data rows")
    return Table(
        ids=np.array(ids),
        features=np.array(rows, dtype=np.float64),
        feature_names=[header[i] for i in feature_at],
        labels=np.array(labels, dtype=np.float64) if label_at is not None else None,
    )
