"""/api/v1/board/jobs/{job_id}/binning|trees/{component}: the board's model panels as JSON.

Built from this party's own outputs of the component (the data service's `job_outputs`, as
GET /api/v1/jobs/{job_id}/outputs), never from a database:

- binning (hetero_feature_binning): per feature its bins (range, rows, events, non-events,
  WOE) and IV. The guest has every number of its own columns and, for a host's columns, what
  the component's model holds of them (rows, events, WOE and IV per bin, under the guest's
  name `host_<party>_<i>`; never the host's split points or column names). A host has its
  split points and, only where the guest revealed them (`reveal_woe_to_host`), its WOE.
- trees (hetero_secureboost): every tree as nodes laid out for drawing. The guest knows the
  structure, each node's rows and gain, and the details (feature, threshold) of its own splits
  only; a host's split is "party P, split #k" (k counts that host's splits over the trees in
  order). A host knows no structure: it gets its own splits, numbered the same way, with their
  features and thresholds, so the two parties' views can be matched by (party, k).
  Feature importance (splits, total gain) of the party's own features, and at the guest the
  total per host.

The board renders exactly these answers (fedgateway.board.pages.model_panels).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, status
from fedschemas.payloads import NAME_PATTERN
from pydantic import BaseModel, ConfigDict

from fedgateway.api.audit import refuse_unknown_query
from fedgateway.api.deps import ApiContext, ApiDep, JobIdPath, answering, refusals

BINNING_TYPE = "hetero_feature_binning"
BOOST_TYPE = "hetero_secureboost"

NODE_W, NODE_H = 134, 52
"""A tree node's box in the drawing (px)."""
GAP_X, GAP_Y, PAD = 8, 36, 8

ComponentPath = Annotated[str, Path(pattern=NAME_PATTERN, description="the component's name")]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BinPublic(_Out):
    slot: int
    """The bin's index in the component's model (bin_num: the missing values')."""
    label: str
    """Its range as text: "(-inf, 1.5]", "(1.5, 3]", "missing" (or "bin k" where this party
    does not know the split points: a host's column at the guest)."""
    lower: float | None
    upper: float | None
    rows: int | None
    events: int | None
    nonevents: int | None
    woe: float | None


class BinnedFeaturePublic(_Out):
    name: str
    owner: str
    """The party whose column it is."""
    iv: float | None
    bins: list[BinPublic]


class BinningPublic(_Out):
    job_id: str
    component: str
    party_id: str
    role: str
    method: str
    bin_num: int
    transform: str
    features: list[BinnedFeaturePublic]


class TreeNodePublic(_Out):
    id: int
    """Heap index: children of n are 2n+1 (left: the value is below the threshold, or missing
    where missing_left) and 2n+2."""
    depth: int
    x: int
    y: int
    rows: int
    leaf: float | None
    """The leaf's weight; None for a split."""
    party_id: str | None
    """Who splits here (None: a leaf)."""
    gain: float | None
    feature: str | None
    """This party's own splits only."""
    threshold: float | None
    missing_left: bool | None
    host_split: int | None
    """k of "party P, split #k" for a host's split."""
    text: str
    """What the drawing writes in the node."""


class TreePublic(_Out):
    index: int
    width: int
    height: int
    nodes: list[TreeNodePublic]
    edges: list[tuple[int, int]]


class HostSplitPublic(_Out):
    k: int
    tree: int
    node: int
    feature: str
    threshold: float
    missing_left: bool


class ImportancePublic(_Out):
    feature: str
    owner: str
    splits: int
    gain: float


class TreesPublic(_Out):
    job_id: str
    component: str
    party_id: str
    role: str
    hosts: list[str]
    trees: list[TreePublic]
    own_splits: list[HostSplitPublic]
    """At a host: its splits (its side of "party P, split #k"); empty at the guest."""
    importance: list[ImportancePublic]
    node_w: int = NODE_W
    node_h: int = NODE_H


# --- reading the component's model ------------------------------------------------------------


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: Any) -> int | None:
    number = _finite(value)
    return None if number is None else round(number)


def model_output(outputs: dict[str, Any], component: str, kind: str) -> dict[str, Any]:
    """The component's `model` output in a `job_outputs` answer; 404 when there is none, 409
    when it is not a model of a `kind` component (binning names itself in `kind`, SecureBoost
    in `component`)."""
    for entry in outputs.get("data", []):
        if entry.get("component") != component or entry.get("output") != "model":
            continue
        document = entry.get("document") if entry.get("kind") == "model" else None
        made_by = (document or {}).get("kind") or (document or {}).get("component")
        if made_by != kind:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"component {component} did not make a {kind} model ({made_by or 'no model'})",
            )
        return dict(entry)
    raise HTTPException(
        status.HTTP_404_NOT_FOUND, f"component {component} has no model output at this party"
    )


def _fmt(value: float) -> str:
    return f"{value + 0.0:.6g}"  # + 0.0: no "-0"


def _bins(
    slots: int,
    bin_num: int,
    points: list[float] | None,
    events: list[Any] | None,
    nonevents: list[Any] | None,
    woe: list[Any] | None,
) -> list[BinPublic]:
    """The bins of one column: slot b holds points[b-1] < x <= points[b]; slot bin_num the
    missing values. A slot without rows is left out where the counts are known; without
    counts, the slots the split points make (and the missing one)."""
    out = []
    for slot in range(slots):
        ev = _count(events[slot]) if events is not None else None
        ne = _count(nonevents[slot]) if nonevents is not None else None
        rows = None if ev is None or ne is None else ev + ne
        missing = slot == bin_num
        if rows is not None and rows == 0:
            continue
        if rows is None and points is not None and not missing and slot > len(points):
            continue  # no split point makes this slot
        lower = upper = None
        if missing:
            label = "missing"
        elif points is None:
            label = f"bin {slot}"
        else:
            lower = points[slot - 1] if slot > 0 else None
            upper = points[slot] if slot < len(points) else None
            label = (
                f"({'-inf' if lower is None else _fmt(lower)}, "
                f"{'+inf)' if upper is None else _fmt(upper) + ']'}"
            )
        out.append(
            BinPublic(
                slot=slot,
                label=label,
                lower=lower,
                upper=upper,
                rows=rows,
                events=ev,
                nonevents=ne,
                woe=_finite(woe[slot]) if woe is not None else None,
            )
        )
    return out


def binning_from(
    job_id: str, component: str, party_id: str, entry: dict[str, Any]
) -> BinningPublic:
    doc, arrays = entry["document"], entry["arrays"]
    bin_num = int(doc["bin_num"])
    slots = bin_num + 1
    columns = [str(c) for c in doc["columns"]]
    matrix = arrays.get("points") or []
    counts = arrays.get("point_counts") or []
    ivs = doc.get("iv") or {}
    own_rows = {name: arrays.get(name) for name in ("events", "nonevents", "woe")}
    features = []
    for i, column in enumerate(columns):
        points = [float(p) for p in matrix[i][: int(counts[i])]] if i < len(matrix) else []
        features.append(
            BinnedFeaturePublic(
                name=column,
                owner=party_id,
                iv=_finite(ivs.get(column)),
                bins=_bins(
                    slots,
                    bin_num,
                    points,
                    *(rows[i] if rows is not None else None for rows in own_rows.values()),
                ),
            )
        )
    for party, host_ivs in sorted((doc.get("host_iv") or {}).items()):
        per = [arrays.get(f"host_{party}_{name}") for name in ("events", "nonevents", "woe")]
        for i, iv in enumerate(host_ivs):
            features.append(
                BinnedFeaturePublic(
                    name=f"host_{party}_{i}",
                    owner=str(party),
                    iv=_finite(iv),
                    bins=_bins(
                        slots,
                        bin_num,
                        None,
                        *(rows[i] if rows is not None else None for rows in per),
                    ),
                )
            )
    return BinningPublic(
        job_id=job_id,
        component=component,
        party_id=party_id,
        role=str(entry.get("role", "")),
        method=str(doc.get("method", "")),
        bin_num=bin_num,
        transform=str(doc.get("transform", "")),
        features=features,
    )


def _depth(node: int) -> int:
    return (node + 1).bit_length() - 1


def _layout(nodes: list[dict[str, Any]]) -> tuple[dict[int, tuple[int, int]], int, int]:
    """Heap positions: each level spread over the width of the deepest level's full row."""
    deepest = max((_depth(n["id"]) for n in nodes), default=0)
    slot_w = NODE_W + GAP_X
    width = PAD * 2 + (1 << deepest) * slot_w - GAP_X
    where = {}
    for n in nodes:
        d = _depth(n["id"])
        pos = n["id"] - ((1 << d) - 1)
        span = ((1 << deepest) * slot_w) / (1 << d)
        x = PAD + int(pos * span + span / 2 - slot_w / 2)
        where[n["id"]] = (x, PAD + d * (NODE_H + GAP_Y))
    height = PAD * 2 + (deepest + 1) * (NODE_H + GAP_Y) - GAP_Y
    return where, width, height


def _guest_trees(
    entry: dict[str, Any], party_id: str
) -> tuple[list[TreePublic], list[ImportancePublic]]:
    doc, arrays = entry["document"], entry["arrays"]
    names = [str(n) for n in doc.get("feature_names", [])]
    hosts = [str(h) for h in doc.get("hosts", [])]
    counts = [int(c) for c in arrays.get("cut_counts", [])]
    flat = [float(c) for c in arrays.get("cuts", [])]
    cuts, at = [], 0
    for c in counts:
        cuts.append(flat[at : at + c])
        at += c
    bins = arrays.get("trees/bin") or []
    host_k: dict[str, int] = {}
    host_totals: dict[str, list[float]] = {}
    trees = []
    for t, described in enumerate(doc.get("trees", [])):
        where, width, height = _layout(described)
        nodes = []
        for n in sorted(described, key=lambda n: n["id"]):
            node_id = int(n["id"])
            x, y = where[node_id]
            base: dict[str, Any] = {
                "id": node_id,
                "depth": _depth(node_id),
                "x": x,
                "y": y,
                "rows": int(n.get("rows", 0)),
                "leaf": None,
                "party_id": None,
                "gain": None,
                "feature": None,
                "threshold": None,
                "missing_left": None,
                "host_split": None,
            }
            if "leaf" in n:
                base.update(leaf=float(n["leaf"]), text=f"leaf {_fmt(float(n['leaf']))}")
            else:
                party_index = int(n["party"])
                gain = _finite(n.get("gain"))
                base.update(gain=gain, missing_left=bool(n.get("missing_left")))
                if party_index == 0:
                    feature = int(n["feature"])
                    cut_bin = int(bins[t][node_id])
                    threshold = cuts[feature][cut_bin]
                    base.update(
                        party_id=party_id,
                        feature=names[feature],
                        threshold=threshold,
                        text=f"{names[feature]} < {_fmt(threshold)}",
                    )
                else:
                    host = hosts[party_index - 1]
                    host_k[host] = host_k.get(host, 0) + 1
                    totals = host_totals.setdefault(host, [0, 0.0])
                    totals[0] += 1
                    totals[1] += gain or 0.0
                    base.update(
                        party_id=host,
                        host_split=host_k[host],
                        text=f"party {host}, split #{host_k[host]}",
                    )
            nodes.append(TreeNodePublic(**base))
        edges = [(n.id, c) for n in nodes if n.leaf is None for c in (2 * n.id + 1, 2 * n.id + 2)]
        trees.append(TreePublic(index=t, width=width, height=height, nodes=nodes, edges=edges))
    importance = _importance(doc, party_id)
    importance += [
        ImportancePublic(feature=f"party {h} (all its features)", owner=h, splits=int(s), gain=g)
        for h, (s, g) in sorted(host_totals.items())
    ]
    return trees, importance


def _importance(doc: dict[str, Any], party_id: str) -> list[ImportancePublic]:
    found = [
        ImportancePublic(
            feature=str(name),
            owner=party_id,
            splits=int(v.get("splits", 0)),
            gain=float(v.get("gain", 0.0)),
        )
        for name, v in (doc.get("importance") or {}).items()
    ]
    return sorted(found, key=lambda i: (-i.gain, i.feature))


def _host_splits(entry: dict[str, Any]) -> list[HostSplitPublic]:
    doc, arrays = entry["document"], entry["arrays"]
    names = [str(n) for n in doc.get("feature_names", [])]
    rows = zip(
        arrays.get("split_tree", []),
        arrays.get("split_node", []),
        arrays.get("split_feature", []),
        arrays.get("split_threshold", []),
        arrays.get("split_missing_left", []),
        strict=True,
    )
    ordered = sorted(rows, key=lambda r: (int(r[0]), int(r[1])))
    return [
        HostSplitPublic(
            k=k,
            tree=int(tree),
            node=int(node),
            feature=names[int(feature)],
            threshold=float(threshold),
            missing_left=bool(left),
        )
        for k, (tree, node, feature, threshold, left) in enumerate(ordered, start=1)
    ]


def trees_from(job_id: str, component: str, party_id: str, entry: dict[str, Any]) -> TreesPublic:
    doc = entry["document"]
    role = str(entry.get("role") or doc.get("role", ""))
    if role == "guest":
        trees, importance = _guest_trees(entry, party_id)
        own: list[HostSplitPublic] = []
        hosts = [str(h) for h in doc.get("hosts", [])]
    else:
        trees, importance, own = [], _importance(doc, party_id), _host_splits(entry)
        hosts = [party_id]
    return TreesPublic(
        job_id=job_id,
        component=component,
        party_id=party_id,
        role=role,
        hosts=hosts,
        trees=trees,
        own_splits=own,
        importance=importance,
    )


# --- the routes (included by board_data.router: /api/v1/board/...) -----------------------------


def _outputs(api: ApiContext, job_id: str, component: str) -> dict[str, Any]:
    with answering():
        answer: dict[str, Any] = api.data().call(  # type: ignore[assignment]
            "job_outputs", job_id=job_id, component=component
        )
    return answer


def job_binning(api: ApiContext, job_id: str, component: str) -> BinningPublic:
    entry = model_output(_outputs(api, job_id, component), component, BINNING_TYPE)
    return binning_from(job_id, component, api.party_id, entry)


def job_trees(api: ApiContext, job_id: str, component: str) -> TreesPublic:
    entry = model_output(_outputs(api, job_id, component), component, BOOST_TYPE)
    return trees_from(job_id, component, api.party_id, entry)


router = APIRouter()


@router.get(
    "/jobs/{job_id}/binning/{component}",
    response_model=BinningPublic,
    dependencies=[Depends(refuse_unknown_query)],
    responses=refusals(400, 404, 409, s404="no such job or component, or no model output"),
)
def binning(api: ApiDep, job_id: JobIdPath, component: ComponentPath) -> BinningPublic:
    """A hetero_feature_binning component's bins, counts, WOE and IV at this party."""
    return job_binning(api, job_id, component)


@router.get(
    "/jobs/{job_id}/trees/{component}",
    response_model=TreesPublic,
    dependencies=[Depends(refuse_unknown_query)],
    responses=refusals(400, 404, 409, s404="no such job or component, or no model output"),
)
def trees(api: ApiDep, job_id: JobIdPath, component: ComponentPath) -> TreesPublic:
    """A hetero_secureboost component's trees (this party's own split details only) and
    feature importance."""
    return job_trees(api, job_id, component)
