"""hetero_secureboost_predict: each host says, for every row and each of its split nodes, which
way the node sends the row (never a threshold); the guest walks the trees with its own splits
and those answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from fedschemas import FederationData
from numpy.typing import NDArray

from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.guest import model_from_artifact
from fedflow.components.hetero_secureboost.params import HeteroSecureBoostPredictParams
from fedflow.kit.alignment import check_alignment
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def _columns(table: Table, names: list[str]) -> sbmath.Floats:
    """The table's features in the model's order (TableError naming a missing one)."""
    position = {name: j for j, name in enumerate(table.feature_names)}
    missing = [name for name in names if name not in position]
    if missing:
        raise TableError(f"hetero_secureboost_predict: the data has no feature {missing[0]!r}")
    x = np.asarray(table.features, dtype=np.float64)
    return x[:, [position[name] for name in names]]


def host(ctx: ComponentContext) -> Mapping[str, Table]:
    table, model = ctx.input("data"), ctx.model("model")
    x = _columns(table, list(model.document["feature_names"]))
    check_alignment(ctx)
    a = model.arrays
    features = np.asarray(a["split_feature"], dtype=np.int64)
    thresholds = np.asarray(a["split_threshold"], dtype=np.float64)
    missing_left = np.asarray(a["split_missing_left"], dtype=np.bool_)
    directions = np.zeros((table.rows, len(features)), dtype=np.uint8)
    for s, (f, threshold, left) in enumerate(
        zip(features.tolist(), thresholds.tolist(), missing_left.tolist(), strict=True)
    ):
        directions[:, s] = sbmath.threshold_left(x[:, f], threshold, left)
    ctx.federation.send(
        FederationData(kind="partial_score", array=directions.ravel()),
        to=ctx.parties["guest"][0],
        tag="host_directions",
    )
    ctx.metrics.log("rows", float(table.rows))
    return {}


def guest(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(HeteroSecureBoostPredictParams)
    table, artifact = ctx.input("data"), ctx.model("model")
    model, cuts = model_from_artifact(artifact)
    boost = model.params
    x = _columns(table, list(artifact.document["feature_names"]))
    check_alignment(ctx)
    bins = sbmath.bin_features(x, cuts, boost.max_bin)
    hosts = [str(h) for h in artifact.document["hosts"]]
    rows = table.rows
    answers = ctx.federation.recv_all(frm="host", tag="host_directions")
    column: dict[tuple[int, int, int], NDArray[np.bool_]] = {}
    for party, host_id in enumerate(hosts, start=1):
        owned = [
            (t, node)
            for t, tree in enumerate(model.trees)
            for node in np.flatnonzero((tree.kind == sbmath.SPLIT) & (tree.party == party)).tolist()
        ]
        got = answers.get(host_id)
        if got is None or got.array is None or got.array.size != rows * len(owned):
            raise ValueError(
                f"hetero_secureboost_predict: host {host_id} must answer {rows} x {len(owned)} "
                "directions"
            )
        matrix = np.asarray(got.array).reshape(rows, len(owned)) == 1
        for s, (t, node) in enumerate(owned):
            column[(party, t, node)] = matrix[:, s]
    index = {id(tree): t for t, tree in enumerate(model.trees)}

    def go_left(tree: sbmath.Tree, node: int) -> NDArray[np.bool_]:
        party = int(tree.party[node])
        if party == 0:
            return sbmath.goes_left(
                bins[:, int(tree.feature[node])],
                int(tree.bin[node]),
                bool(tree.missing_left[node]),
                boost.max_bin,
            )
        return column[(party, index[id(tree)], node)]

    scores = sbmath.transform(sbmath.predict_margins(model, go_left, rows), boost)
    ctx.metrics.log("rows", float(rows))
    if boost.objective == "multi:softmax":
        predicted = np.argmax(scores, axis=1).astype(np.float64)
        features = np.column_stack([scores, predicted])
        names = [f"score_{c}" for c in range(boost.num_class)] + ["predicted"]
    elif boost.objective == "binary:logistic":
        predicted = (scores >= params.threshold).astype(np.float64)
        features, names = np.stack([scores, predicted], axis=1), ["score", "predicted"]
        ctx.metrics.log("positive_rate", float(predicted.mean()) if rows else 0.0)
    else:
        features, names = scores[:, None], ["predicted"]
    return {
        "data": Table(
            ids=table.ids,
            features=features,
            feature_names=names,
            labels=table.labels,
            label_name=table.label_name,
        )
    }
