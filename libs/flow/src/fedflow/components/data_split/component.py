"""data_split's code: rank the ids by a keyed hash, cut the ranking by the fractions."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fedflow.components.data_split import PARTS, DataSplitParams
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

HASH_KEY = b"fedmq.data_split"


def parts_of(ids: Sequence[str], fractions: Sequence[float], seed: int) -> NDArray[np.int64]:
    """The part (0, 1, 2, ...) of each id: ids ranked by BLAKE2b keyed with (HASH_KEY, seed),
    the ranking cut at the rounded cumulative fractions. Depends on the set of ids and the
    seed only, not on their order."""
    key = HASH_KEY + seed.to_bytes(8, "little")
    digests = [hashlib.blake2b(str(i).encode(), key=key, digest_size=16).digest() for i in ids]
    order = sorted(range(len(ids)), key=lambda row: (digests[row], str(ids[row])))
    cuts = np.round(np.cumsum(fractions) * len(ids)).astype(np.int64)
    part = np.empty(len(ids), dtype=np.int64)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(ids))
    part[:] = np.searchsorted(cuts, rank, side="right")
    return np.minimum(part, len(fractions) - 1)


def run(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(DataSplitParams)
    table = ctx.input("data")
    fractions = (params.train_fraction, params.validate_fraction, params.test_fraction)
    part = parts_of([str(i) for i in table.ids.tolist()], fractions, params.seed)
    out: dict[str, Table] = {}
    for index, name in enumerate(PARTS):
        rows = np.flatnonzero(part == index).astype(np.int64)
        out[name] = table.take(rows)
        ctx.metrics.log(f"{name}_rows", float(len(rows)))
        if table.labels is not None and len(rows):
            ctx.metrics.log(f"{name}_label_mean", float(np.nanmean(table.labels[rows])))
    if table.labels is not None and table.rows:
        ctx.metrics.log("label_mean", float(np.nanmean(table.labels)))
    return out
