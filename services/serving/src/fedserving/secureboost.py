"""Hetero SecureBoost scoring for online requests: pure numpy, the same arithmetic as the offline
`hetero_secureboost_predict` (fedflow.components.hetero_secureboost.predict), so online scores
equal offline scores of the same rows.

Each party serves its own part of the trained model (a fedflow ModelArtifact, stored in the
registry as its bytes):

- a host holds its split nodes' features and thresholds. For the ids asked it answers, for every
  row and each of its split nodes in the order of its model (by tree, then node), which way the
  node sends the row: one bit (1 = left) per (row, node), packed (`pack_directions`). The guest
  sees a host's node only as (host, tree, node), as in training: never the feature or the
  threshold;
- the guest holds the trees (structure, its own splits as bin cuts, the leaves' weights): it bins
  its own features with its cuts, walks each tree taking a host's node's side from that host's
  answer, and sums the leaves (sbmath.predict_margins, sbmath.transform).

As offline, a host answers for all its split nodes, including those a row never reaches: one
request per host per prediction, the same disclosure as `hetero_secureboost_predict`
(docs/secureboost.md, "What each party learns"). Served objectives: binary:logistic (score =
probability of the positive class) and the regression ones (score = the prediction);
multi:softmax, whose answer is a vector, is refused at publish.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from fedflow.artifacts import ModelArtifact
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.guest import model_from_artifact
from numpy.typing import NDArray

ALGORITHM: Final = "hetero_secureboost"
SERVED_OBJECTIVES: Final = ("binary:logistic", "reg:squarederror", "reg:squaredlogerror")


class BoostError(ValueError):
    """A model part or a host's answer that does not fit (-> 422 at publish, 502 at predict)."""


def is_secureboost(artifact: object) -> bool:
    return isinstance(artifact, ModelArtifact) and artifact.document.get("component") == ALGORITHM


def check_part(artifact: ModelArtifact, role: str) -> tuple[str, ...]:
    """The part's feature names, once it is known to be one this service can score."""
    document = artifact.document
    if document.get("role") != role:
        raise BoostError(f"the model output is the {document.get('role')}'s part, not the {role}'s")
    if role == "guest":
        objective = str(document["params"].get("objective"))
        if objective not in SERVED_OBJECTIVES:
            raise BoostError(
                f"hetero_secureboost objective {objective} is not served online "
                f"(served: {', '.join(SERVED_OBJECTIVES)})"
            )
    return tuple(str(n) for n in document["feature_names"])


@dataclass(frozen=True)
class GuestBoost:
    model: sbmath.Model
    cuts: list[sbmath.Floats]
    hosts: tuple[str, ...]
    owned: dict[str, list[tuple[int, int]]]
    """host party -> its split nodes (tree, node), in the order of its answer's columns."""


@dataclass(frozen=True)
class HostBoost:
    features: NDArray[np.int64]
    thresholds: NDArray[np.float64]
    missing_left: NDArray[np.bool_]


_CACHE: OrderedDict[tuple[str, str], Any] = OrderedDict()
_CACHE_SIZE: Final = 64
_CACHE_LOCK = threading.Lock()


def _cached(kind: str, data: bytes, parse: Callable[[ModelArtifact], Any]) -> Any:
    """A part's parsed form, kept for the last _CACHE_SIZE parts (parsing the npz on every
    request would cost more than the scoring)."""
    key = (kind, hashlib.sha256(data).hexdigest())
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = parse(ModelArtifact.from_bytes(data))
    with _CACHE_LOCK:
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def _parse_guest(artifact: ModelArtifact) -> GuestBoost:
    model, cuts = model_from_artifact(artifact)
    hosts = tuple(str(h) for h in artifact.document["hosts"])
    owned = {
        host: [
            (t, node)
            for t, tree in enumerate(model.trees)
            for node in np.flatnonzero((tree.kind == sbmath.SPLIT) & (tree.party == p)).tolist()
        ]
        for p, host in enumerate(hosts, start=1)
    }
    return GuestBoost(model, cuts, hosts, owned)


def _parse_host(artifact: ModelArtifact) -> HostBoost:
    a = artifact.arrays
    return HostBoost(
        np.asarray(a["split_feature"], dtype=np.int64),
        np.asarray(a["split_threshold"], dtype=np.float64),
        np.asarray(a["split_missing_left"], dtype=np.bool_),
    )


def _guest_part(data: bytes) -> GuestBoost:
    part: GuestBoost = _cached("guest", data, _parse_guest)
    return part


def _host_part(data: bytes) -> HostBoost:
    part: HostBoost = _cached("host", data, _parse_host)
    return part


def guest_hosts(data: bytes) -> tuple[str, ...]:
    return _guest_part(data).hosts


def host_directions(data: bytes, x: sbmath.Floats) -> NDArray[np.uint8]:
    """A host's answer: rows x its split nodes, 1 where the node sends the row left (x in the
    host part's feature order, NaN = missing)."""
    part = _host_part(data)
    out = np.zeros((x.shape[0], len(part.features)), dtype=np.uint8)
    splits = zip(
        part.features.tolist(), part.thresholds.tolist(), part.missing_left.tolist(), strict=True
    )
    for s, (f, threshold, left) in enumerate(splits):
        out[:, s] = sbmath.threshold_left(x[:, f], threshold, left)
    return out


def pack_directions(directions: NDArray[np.uint8]) -> dict[str, Any]:
    rows, nodes = directions.shape
    packed = np.packbits(directions.astype(np.uint8).ravel())
    return {"directions": base64.b64encode(packed.tobytes()).decode(), "shape": [rows, nodes]}


def unpack_directions(answer: Mapping[str, Any], rows: int, nodes: int) -> NDArray[np.bool_]:
    shape = answer.get("shape")
    if shape != [rows, nodes]:
        raise BoostError(f"answered directions of shape {shape}, not [{rows}, {nodes}]")
    packed = np.frombuffer(base64.b64decode(str(answer["directions"]), validate=True), np.uint8)
    if len(packed) != (rows * nodes + 7) // 8:
        raise BoostError(f"answered {len(packed)} bytes of directions for {rows} x {nodes}")
    bits = np.unpackbits(packed, count=rows * nodes).reshape(rows, nodes)
    left: NDArray[np.bool_] = bits == 1
    return left


def guest_scores(
    data: bytes, x: sbmath.Floats, answers: Mapping[str, Mapping[str, Any]]
) -> sbmath.Floats:
    """The scores of the rows of `x` (the guest's features in its part's order, NaN = missing),
    given each host's answer for the same rows."""
    part = _guest_part(data)
    rows = x.shape[0]
    boost = part.model.params
    bins = sbmath.bin_features(x, part.cuts, boost.max_bin)
    column: dict[tuple[int, int, int], NDArray[np.bool_]] = {}
    for p, host in enumerate(part.hosts, start=1):
        owned = part.owned[host]
        matrix = unpack_directions(answers[host], rows, len(owned))
        for s, (t, node) in enumerate(owned):
            column[(p, t, node)] = matrix[:, s]
    index = {id(tree): t for t, tree in enumerate(part.model.trees)}

    def go_left(tree: sbmath.Tree, node: int) -> NDArray[np.bool_]:
        p = int(tree.party[node])
        if p == 0:
            return sbmath.goes_left(
                bins[:, int(tree.feature[node])],
                int(tree.bin[node]),
                bool(tree.missing_left[node]),
                boost.max_bin,
            )
        return column[(p, index[id(tree)], node)]

    scores = sbmath.transform(sbmath.predict_margins(part.model, go_left, rows), boost)
    return np.asarray(scores, dtype=np.float64).reshape(rows)
