"""hetero_secureboost's arithmetic, numpy only (no IO, no crypto): quantile binning, gradients
and hessians, the fixed-point (g, h) quantisation, histograms, split gains, leaf weights, tree
growth level by level, prediction, and `fit`, the plaintext reference of the whole protocol on
the parties' feature blocks (what the tests compare the federated model with).

Exactness. Histograms are sums of INTEGERS: each sampled row's gradient and hessian quantised
to multiples of a power of two (`GhScale`), an unsampled row contributes 0 to every field.
The federated guest decrypts exactly these integers from the hosts' encrypted histograms, so
gains, splits and leaf weights are computed by the same float operations on the same values
in the reference and in the protocol, and the models are identical (tests/secureboost).

Splits are XGBoost's: gain = G_L^2 / (H_L + lambda) + G_R^2 / (H_R + lambda) - G^2 / (H + lambda)
(no factor 1/2, so `gamma` has XGBoost's scale), a split needs gain > gamma (and > 1e-6), a
child needs at least min_child_weight of hessian and min_samples_leaf rows; a leaf's weight is
-learning_rate * G / (H + lambda). Missing values have their own bin per feature; each split
tries them on either side and keeps the better (the learned default side).

Trees are heaps: node i has children 2i + 1 (left: bin <= threshold bin, i.e. x < cut) and
2i + 2. A level's open nodes are listed in heap order; `positions` gives each row's index in
that list (-1: the row is in a leaf already).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import numpy as np
from numpy.typing import NDArray

from fedflow.components.hetero_secureboost.params import HeteroSecureBoostParams
from fedflow.components.hetero_secureboost.sketch import sketch_cuts

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bins = NDArray[np.uint16]

FRACTION_BITS: Final = 30
"""A quantised gradient is round(g / step) with |g| / step < 2^30; offset by 2^30 it lies in
[0, 2^31). A hessian (>= 0) is round(h / step_h) in [0, 2^30]."""
G_OFFSET: Final = 1 << FRACTION_BITS
MIN_GAIN: Final = 1e-6
"""XGBoost's kRtEps: a split must gain more than this whatever gamma is."""
FIELDS: Final = 3
"""A histogram cell: (sum of quantised g, sum of quantised h, rows)."""

LEAF, SPLIT = 1, 2


# -- binning ----------------------------------------------------------------------------------


def quantile_cuts(column: Floats, max_bin: int) -> Floats:
    """Cut points c_0 < c_1 < ... (at most max_bin - 1): bin(x) = #{c <= x}. Exact quantiles
    of the column's finite values (every distinct value its own bin when there are at most
    max_bin of them)."""
    finite = column[np.isfinite(column)]
    if finite.size == 0:
        return np.zeros(0)
    distinct = np.unique(finite)
    if distinct.size <= max_bin:
        return distinct[1:].astype(np.float64)
    levels = np.arange(1, max_bin) / max_bin
    cuts = np.quantile(finite, levels, method="higher")
    return np.unique(cuts[cuts > distinct[0]]).astype(np.float64)


SKETCH_ROWS: Final = 1 << 21
"""Columns of more rows than this are binned from a mergeable quantile sketch (sketch.py) of
pieces of SKETCH_PIECE rows, not sorted whole."""
SKETCH_PIECE: Final = 1 << 20


def fit_cuts(x: Floats, max_bin: int, sketch_rows: int = SKETCH_ROWS) -> list[Floats]:
    """Every column's cut points: exact quantiles (quantile_cuts) up to `sketch_rows` rows,
    a mergeable sketch's above (exact too while a column has few distinct values)."""
    if x.shape[0] <= sketch_rows:
        return [quantile_cuts(x[:, j], max_bin) for j in range(x.shape[1])]
    piece = min(SKETCH_PIECE, sketch_rows)
    starts = range(0, x.shape[0], piece)
    return [sketch_cuts((x[s : s + piece, j] for s in starts), max_bin) for j in range(x.shape[1])]


def bin_features(x: Floats, cuts: Sequence[Floats], max_bin: int) -> Bins:
    """Bin indexes (rows, k): #{cuts <= x} in [0, max_bin - 1]; a missing value -> max_bin."""
    out = np.empty(x.shape, dtype=np.uint16)
    for j, c in enumerate(cuts):
        column = x[:, j]
        binned = np.searchsorted(c, column, side="right")
        binned[np.isnan(column)] = max_bin
        out[:, j] = binned
    return out


# -- objectives -------------------------------------------------------------------------------


def init_scores(y: Floats, params: HeteroSecureBoostParams) -> Floats:
    """The starting margin of every row, (rows, trees_per_round): 0 for the classifiers (as
    XGBoost with base_score 0.5), the label mean for squared error."""
    rows = y.shape[0]
    base = float(np.mean(y)) if params.objective == "reg:squarederror" else 0.0
    return np.full((rows, params.trees_per_round), base)


def sigmoid(z: Floats) -> Floats:
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def softmax(z: Floats) -> Floats:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def gradients(y: Floats, scores: Floats, params: HeteroSecureBoostParams) -> tuple[Floats, Floats]:
    """g, h of the loss at the current margins, (rows, trees_per_round) each (XGBoost's)."""
    if params.objective == "binary:logistic":
        p = sigmoid(scores[:, 0])
        return (p - y)[:, None], np.maximum(p * (1.0 - p), 1e-16)[:, None]
    if params.objective == "multi:softmax":
        p = softmax(scores)
        onehot = np.eye(params.num_class)[y.astype(np.int64)]
        return p - onehot, np.maximum(2.0 * p * (1.0 - p), 1e-16)
    return (scores[:, 0] - y)[:, None], np.ones((y.shape[0], 1))


def loss(y: Floats, scores: Floats, params: HeteroSecureBoostParams) -> float:
    """Mean log loss (binary, multi-class) or RMSE (regression) at the margins."""
    if params.objective == "binary:logistic":
        p = np.clip(sigmoid(scores[:, 0]), 1e-15, 1 - 1e-15)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    if params.objective == "multi:softmax":
        p = np.clip(softmax(scores), 1e-15, 1.0)
        return float(-np.mean(np.log(p[np.arange(y.shape[0]), y.astype(np.int64)])))
    return float(np.sqrt(np.mean((scores[:, 0] - y) ** 2)))


def check_labels(y: Floats, params: HeteroSecureBoostParams) -> None:
    if not np.all(np.isfinite(y)):
        raise ValueError("hetero_secureboost: labels must be finite")
    if params.objective == "binary:logistic" and not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError("hetero_secureboost: binary:logistic needs labels 0 or 1")
    if params.objective == "multi:softmax":
        ok = (y == np.rint(y)) & (y >= 0) & (y < params.num_class)
        if not np.all(ok):
            raise ValueError(
                f"hetero_secureboost: multi:softmax needs labels 0 .. {params.num_class - 1}"
            )


# -- sampling ---------------------------------------------------------------------------------


def sampled_rows(rows: int, fraction: float, seed: int, tree: int) -> NDArray[np.bool_]:
    """The rows tree `tree` learns from (drawn without replacement from (seed, tree))."""
    mask = np.ones(rows, dtype=np.bool_)
    if fraction < 1.0:
        keep = max(1, round(fraction * rows))
        mask[:] = False
        mask[np.random.default_rng([seed, tree]).permutation(rows)[:keep]] = True
    return mask


def sampled_features(
    k: int, fraction: float, seed: int, tree: int, party: int
) -> NDArray[np.bool_]:
    """The features of party `party` (0: guest, i: the i-th host) tree `tree` may split on;
    each party draws its own from (seed, tree, party)."""
    mask = np.ones(k, dtype=np.bool_)
    if fraction < 1.0 and k > 0:
        keep = max(1, round(fraction * k))
        mask[:] = False
        mask[np.random.default_rng([seed, tree, party + 1]).permutation(k)[:keep]] = True
    return mask


# -- fixed point ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GhScale:
    """Quantisation steps of one tree: g = (q_g - 2^30) * 2^g_exp, h = q_h * 2^h_exp."""

    g_exp: int
    h_exp: int

    @classmethod
    def of(cls, g: Floats, h: Floats) -> GhScale:
        def exponent(v: Floats) -> int:
            top = float(np.max(np.abs(v))) if v.size else 0.0
            return (math.frexp(top)[1] if top > 0 else 0) - FRACTION_BITS

        return cls(exponent(g), exponent(h))

    def quantize(self, g: Floats, h: Floats, sample: NDArray[np.bool_]) -> tuple[Ints, Ints, Ints]:
        """(q_g, q_h, count) per row; an unsampled row is (0, 0, 0)."""
        on = sample.astype(np.int64)
        qg = (np.rint(np.ldexp(g, -self.g_exp)).astype(np.int64) + G_OFFSET) * on
        qh = np.rint(np.ldexp(h, -self.h_exp)).astype(np.int64) * on
        return qg, qh, on

    def values(self, sums: Ints) -> tuple[Floats, Floats, Floats]:
        """G, H, rows of integer cells (..., 3), exactly (every term is below 2^53)."""
        s = np.asarray(sums, dtype=np.int64)
        count = s[..., 2]
        g = np.ldexp((s[..., 0] - count * G_OFFSET).astype(np.float64), self.g_exp)
        h = np.ldexp(s[..., 1].astype(np.float64), self.h_exp)
        return g, h, count.astype(np.float64)


def field_bits(rows: int) -> tuple[int, int]:
    """Bits of (each gradient or hessian field, the count field) of a histogram cell summed
    over up to `rows` rows: a sum of `rows` values below 2^31 needs bitlen(rows) + 31 bits."""
    width = max(1, int(rows).bit_length())
    return width + FRACTION_BITS + 1, width


def cell_bits(rows: int) -> int:
    """Bits of one histogram cell in a plaintext: count | h | g (docs/secureboost.md)."""
    gh, count = field_bits(rows)
    return count + 2 * gh


# -- histograms -------------------------------------------------------------------------------


def histograms(
    bins: Bins, positions: NDArray[np.int32], nodes: int, q: tuple[Ints, Ints, Ints], max_bin: int
) -> Ints:
    """Integer cells (nodes, k, max_bin + 1, 3) of the rows at each listed node."""
    k = bins.shape[1]
    width = max_bin + 1
    inside = positions >= 0
    cells = np.zeros((nodes, k, width, FIELDS), dtype=np.int64)
    if k == 0 or nodes == 0 or not np.any(inside):
        return cells
    pos = positions[inside].astype(np.int64)
    b = bins[inside].astype(np.int64)
    index = ((pos[:, None] * k + np.arange(k)[None, :]) * width + b).ravel()
    size = nodes * k * width
    for f, values in enumerate(q):
        weights = np.repeat(values[inside].astype(np.float64), k)
        # float64 sums are exact here: every partial sum is below 2^53
        total = np.bincount(index, weights=weights, minlength=size)
        cells[..., f] = np.rint(total).astype(np.int64).reshape(nodes, k, width)
    return cells


def node_totals(positions: NDArray[np.int32], nodes: int, q: tuple[Ints, Ints, Ints]) -> Ints:
    """Integer (sum q_g, sum q_h, rows) of each listed node, (nodes, 3)."""
    out = np.zeros((nodes, FIELDS), dtype=np.int64)
    inside = positions >= 0
    for f, values in enumerate(q):
        out[:, f] = np.bincount(
            positions[inside], weights=values[inside].astype(np.float64), minlength=nodes
        ).astype(np.int64)
    return out


def direct_nodes(positions: NDArray[np.int32], nodes: int, depth: int) -> Ints:
    """The open nodes whose histograms are built from rows; every other one is its parent's
    minus its sibling's. At the root: the root. Below: of each pair of siblings (listed
    together, left first), the one with fewer rows (a tie: the left)."""
    if depth == 0:
        return np.arange(nodes, dtype=np.int64)
    counts = np.bincount(positions[positions >= 0], minlength=nodes)
    left = np.arange(0, nodes, 2)
    return np.where(counts[left] <= counts[left + 1], left, left + 1).astype(np.int64)


def subtract_siblings(parents: Ints, direct: Ints, direct_ids: Ints, nodes: int) -> Ints:
    """All `nodes` open nodes' cells from the parents' cells (one per sibling pair, in order)
    and the directly built children's (sibling = parent - child)."""
    out = np.zeros((nodes, *parents.shape[1:]), dtype=np.int64)
    out[direct_ids] = direct
    for pair, child in enumerate(direct_ids.tolist()):
        sibling = child + 1 if child % 2 == 0 else child - 1
        out[sibling] = parents[pair] - direct[pair]
    return out


# -- splits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    gain: float
    feature: int
    bin: int
    missing_left: bool


def _score(g: Floats, h: Floats, reg_lambda: float) -> Floats:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(h + reg_lambda > 0, g * g / (h + reg_lambda), 0.0)


def split_gains(
    cells: Ints,
    total: Ints,
    scale: GhScale,
    params: HeteroSecureBoostParams,
    allowed: NDArray[np.bool_],
) -> Floats:
    """The gain of every candidate of one node over one party's features (cells (k, max_bin
    + 1, 3)): (k, max_bin - 1, 2) for (feature, threshold bin, missing right / left); an
    invalid candidate (a child too light or too small, a feature not allowed) is -inf."""
    k = cells.shape[0]
    g, h, c = scale.values(cells)
    gt, ht, ct = scale.values(total)
    missing = (g[:, -1:], h[:, -1:], c[:, -1:])
    left = [np.cumsum(v[:, :-2], axis=1) for v in (g, h, c)]  # thresholds 0 .. max_bin - 2
    gains = np.full((k, left[0].shape[1], 2), -np.inf)
    parent = _score(np.asarray(gt), np.asarray(ht), params.reg_lambda)
    for side in (0, 1):
        gl, hl, cl = ((left[i] + missing[i] if side else left[i]) for i in range(FIELDS))
        gr, hr, cr = gt - gl, ht - hl, ct - cl
        gain = _score(gl, hl, params.reg_lambda) + _score(gr, hr, params.reg_lambda) - parent
        valid = (
            (hl >= params.min_child_weight)
            & (hr >= params.min_child_weight)
            & (cl >= params.min_samples_leaf)
            & (cr >= params.min_samples_leaf)
            & allowed[:, None]
        )
        gains[:, :, side] = np.where(valid, gain, -np.inf)
    return gains


def best_split(
    cells: Ints,
    total: Ints,
    scale: GhScale,
    params: HeteroSecureBoostParams,
    allowed: NDArray[np.bool_],
) -> Split | None:
    """The best split of one node over one party's features (cells (k, max_bin + 1, 3)), or
    None. Candidates in the order feature, threshold bin, missing right then missing left:
    the first of equal gains wins."""
    if cells.shape[0] == 0 or not np.any(allowed):
        return None
    gains = split_gains(cells, total, scale, params, allowed)
    best = int(np.argmax(gains))
    value = float(gains.flat[best])
    if not (value > params.gamma and value > MIN_GAIN):
        return None
    where = np.unravel_index(best, gains.shape)
    return Split(value, int(where[0]), int(where[1]), bool(where[2]))


def tied_splits(
    cells: Ints,
    total: Ints,
    scale: GhScale,
    params: HeteroSecureBoostParams,
    allowed: NDArray[np.bool_],
    best: Split,
) -> list[Split]:
    """Every feature's first candidate (bin, then missing right / left) whose gain equals
    `best`'s, in feature order: the candidates a host whose features the guest sees in a
    shuffled order must choose among (its first in its own order is the reference's)."""
    gains = split_gains(cells, total, scale, params, allowed)
    out: list[Split] = []
    for feature in range(gains.shape[0]):
        equal = np.flatnonzero(gains[feature].ravel() == best.gain)
        if equal.size:
            b, side = np.unravel_index(int(equal[0]), gains.shape[1:])
            out.append(Split(best.gain, feature, int(b), bool(side)))
    return out


def host_feature_order(key: bytes, tree: int, allowed: NDArray[np.bool_]) -> Ints:
    """A host's features tree `tree` may split on, in the order it shows them to the guest:
    a permutation drawn from the host's secret `key` (never sent) and the tree. The guest
    sees slot j, not the feature order[j]: it cannot tell which of the host's features a
    split uses. One order per tree (not per node): the guest subtracts a child's
    histogram from its parent's, so both must list the features alike."""
    if len(key) < 16:
        raise ValueError("hetero_secureboost: a host's shuffle key needs at least 16 bytes")
    seed = [int.from_bytes(key, "little"), tree, 0x5B0F]
    features = np.flatnonzero(allowed).astype(np.int64)
    return features[np.random.default_rng(seed).permutation(features.size)]


def choose(candidates: Sequence[Split | None]) -> tuple[int, Split] | None:
    """The best of the parties' best splits (party order: guest, then the hosts), or None."""
    found: tuple[int, Split] | None = None
    for party, split in enumerate(candidates):
        if split is not None and (found is None or split.gain > found[1].gain):
            found = (party, split)
    return found


def leaf_weight(total: Ints, scale: GhScale, params: HeteroSecureBoostParams) -> float:
    g, h, _ = scale.values(total)
    denominator = float(h) + params.reg_lambda
    return 0.0 if denominator <= 0 else -params.learning_rate * float(g) / denominator


def goes_left(
    bins: NDArray[np.uint16], threshold_bin: int, missing_left: bool, max_bin: int
) -> NDArray[np.bool_]:
    """Which rows a split on one binned column sends left."""
    return np.where(bins == max_bin, missing_left, bins <= threshold_bin)


def threshold_left(column: Floats, threshold: float, missing_left: bool) -> NDArray[np.bool_]:
    """The same on raw values: x < threshold (the cut of the threshold bin), missing to the
    learned side."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(column), missing_left, column < threshold)


# -- trees ------------------------------------------------------------------------------------


def heap_size(max_depth: int) -> int:
    return (1 << (max_depth + 1)) - 1


@dataclass
class Tree:
    """One tree as heap arrays. party: -1 for a leaf, 0 the guest, i the i-th host; feature
    and bin are the splitting party's own (-1 where the holder of this tree does not know
    them: a host's split at the guest)."""

    kind: NDArray[np.int8]
    party: NDArray[np.int16]
    feature: NDArray[np.int32]
    bin: NDArray[np.int32]
    missing_left: NDArray[np.bool_]
    weight: Floats
    gain: Floats
    count: Ints

    @classmethod
    def empty(cls, max_depth: int) -> Tree:
        size = heap_size(max_depth)
        return cls(
            kind=np.zeros(size, dtype=np.int8),
            party=np.full(size, -1, dtype=np.int16),
            feature=np.full(size, -1, dtype=np.int32),
            bin=np.full(size, -1, dtype=np.int32),
            missing_left=np.zeros(size, dtype=np.bool_),
            weight=np.zeros(size),
            gain=np.zeros(size),
            count=np.zeros(size, dtype=np.int64),
        )

    def arrays(self) -> dict[str, NDArray[np.generic]]:
        return {name: getattr(self, name) for name in TREE_ARRAYS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, NDArray[np.generic]]) -> Tree:
        return cls(**{name: np.asarray(arrays[name]) for name in TREE_ARRAYS})

    def leaves(self, go_left: Callable[[int], NDArray[np.bool_]], rows: int) -> Ints:
        """The leaf (heap id) of every row; go_left(node) says which rows a split node sends
        left (all rows; only those at the node matter)."""
        at = np.zeros(rows, dtype=np.int64)
        for node in np.flatnonzero(self.kind == SPLIT).tolist():  # heap order: parents first
            here = at == node
            if np.any(here):
                left = go_left(node)
                at[here] = np.where(left[here], 2 * node + 1, 2 * node + 2)
        return at

    def describe(self) -> list[dict[str, object]]:
        """The nodes as plain data (what a board draws): heap id, kind, who splits, gain."""
        out: list[dict[str, object]] = []
        for node in np.flatnonzero(self.kind > 0).tolist():
            entry: dict[str, object] = {"id": node, "rows": int(self.count[node])}
            if self.kind[node] == LEAF:
                entry["leaf"] = float(self.weight[node])
            else:
                entry.update(
                    party=int(self.party[node]),
                    gain=float(self.gain[node]),
                    children=[2 * node + 1, 2 * node + 2],
                    missing_left=bool(self.missing_left[node]),
                )
                if self.feature[node] >= 0:
                    entry["feature"] = int(self.feature[node])
            out.append(entry)
        return out


TREE_ARRAYS: Final = ("kind", "party", "feature", "bin", "missing_left", "weight", "gain", "count")


@dataclass
class Level:
    """A level being grown: its open nodes (heap ids, in order) and each row's position."""

    depth: int
    nodes: list[int]
    positions: NDArray[np.int32]


def root_level(rows: int) -> Level:
    return Level(0, [0], np.zeros(rows, dtype=np.int32))


def next_level(
    tree: Tree,
    level: Level,
    totals: Ints,
    decisions: Sequence[tuple[int, Split] | None],
    go_left: NDArray[np.bool_],
    scale: GhScale,
    params: HeteroSecureBoostParams,
) -> Level:
    """Record the level's nodes in `tree` (split or leaf) and the positions one level down.
    `go_left` (rows,) says, for every row at a splitting node, whether it goes left."""
    children: list[int] = []
    child_of = np.full(len(level.nodes) + 1, -1, dtype=np.int64)
    right_of = np.full(len(level.nodes) + 1, -1, dtype=np.int64)
    for i, node in enumerate(level.nodes):
        tree.count[node] = totals[i, 2]
        decision = decisions[i]
        if decision is None:
            tree.kind[node] = LEAF
            tree.weight[node] = leaf_weight(totals[i], scale, params)
            continue
        party, split = decision
        tree.kind[node], tree.party[node] = SPLIT, party
        tree.gain[node], tree.missing_left[node] = split.gain, split.missing_left
        child_of[i], right_of[i] = len(children), len(children) + 1
        children += [2 * node + 1, 2 * node + 2]
    pos = level.positions.astype(np.int64)
    left = np.where(pos >= 0, child_of[pos], -1)
    right = np.where(pos >= 0, right_of[pos], -1)
    moved = np.where(left < 0, -1, np.where(go_left, left, right))
    return Level(level.depth + 1, children, moved.astype(np.int32))


def finish_leaves(
    tree: Tree, level: Level, totals: Ints, scale: GhScale, params: HeteroSecureBoostParams
) -> None:
    """The open nodes of the level below the deepest splits are leaves."""
    for i, node in enumerate(level.nodes):
        tree.count[node] = totals[i, 2]
        tree.kind[node] = LEAF
        tree.weight[node] = leaf_weight(totals[i], scale, params)


# -- the plaintext reference -----------------------------------------------------------------


@dataclass
class Model:
    """Trees (tree i is class i % trees_per_round of round i // trees_per_round), the base
    margin, and, in the reference, each party's cut points."""

    params: HeteroSecureBoostParams
    base: float
    trees: list[Tree] = field(default_factory=list)
    cuts: list[list[Floats]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def margins(self, blocks: Sequence[Floats]) -> Floats:
        binned = [
            bin_features(x, cuts, self.params.max_bin)
            for x, cuts in zip(blocks, self.cuts, strict=True)
        ]
        return predict_margins(
            self,
            lambda tree, node: _bins_left(tree, node, binned, self.params),
            blocks[0].shape[0],
        )

    def predict(self, blocks: Sequence[Floats]) -> Floats:
        return transform(self.margins(blocks), self.params)


def _bins_left(
    tree: Tree, node: int, binned: Sequence[Bins], params: HeteroSecureBoostParams
) -> NDArray[np.bool_]:
    column = binned[int(tree.party[node])][:, int(tree.feature[node])]
    return goes_left(column, int(tree.bin[node]), bool(tree.missing_left[node]), params.max_bin)


def predict_margins(
    model: Model, go_left: Callable[[Tree, int], NDArray[np.bool_]], rows: int
) -> Floats:
    """Margins (rows, trees_per_round): base + the leaf weights each row reaches."""
    per_round = model.params.trees_per_round
    out = np.full((rows, per_round), model.base)
    for index, tree in enumerate(model.trees):
        leaf = tree.leaves(lambda node, tree=tree: go_left(tree, node), rows)  # type: ignore[misc]
        out[:, index % per_round] += tree.weight[leaf]
    return out


def transform(margins: Floats, params: HeteroSecureBoostParams) -> Floats:
    """Probabilities of class 1 (binary), of each class (multi-class), or the values."""
    if params.objective == "binary:logistic":
        return sigmoid(margins[:, 0])
    if params.objective == "multi:softmax":
        return softmax(margins)
    return np.asarray(margins[:, 0], dtype=np.float64)


def host_levels(params: HeteroSecureBoostParams, tree: int) -> int:
    """How many levels (from the root) of tree `tree` the hosts take part in: none for the
    first round's trees under complete_secure and for the even rounds' in mix mode,
    host_depth in layered mode, else all."""
    if params.complete_secure and tree < params.trees_per_round:
        return 0
    if params.tree_mode == "mix" and (tree // params.trees_per_round) % 2 == 0:
        return 0
    if params.tree_mode == "layered":
        return params.host_depth
    return params.max_depth


def level_features(
    allowed: Sequence[NDArray[np.bool_]], params: HeteroSecureBoostParams, tree: int, depth: int
) -> list[NDArray[np.bool_]]:
    """The features each party may split on at `depth` of tree `tree` (`allowed`: the tree's
    draw, allowed_features). Layered mode: the hosts' only in their levels, the guest's only
    below them; a tree the hosts take no part in uses the guest's at every level."""
    if params.tree_mode != "layered" or host_levels(params, tree) == 0:
        return list(allowed)
    if depth < params.host_depth:
        return [np.zeros_like(allowed[0]), *allowed[1:]]
    return [allowed[0], *(np.zeros_like(mask) for mask in allowed[1:])]


def grow_tree(
    binned: Sequence[Bins],
    q: tuple[Ints, Ints, Ints],
    scale: GhScale,
    params: HeteroSecureBoostParams,
    allowed: Sequence[NDArray[np.bool_]],
    tree_index: int = 0,
) -> Tree:
    """One tree on every party's bins at once (the reference's view of the protocol)."""
    rows = binned[0].shape[0]
    tree = Tree.empty(params.max_depth)
    level = root_level(rows)
    while True:
        nodes = len(level.nodes)
        totals = node_totals(level.positions, nodes, q)
        if level.depth >= params.max_depth:
            finish_leaves(tree, level, totals, scale, params)
            return tree
        cells = [histograms(b, level.positions, nodes, q, params.max_bin) for b in binned]
        masks = level_features(allowed, params, tree_index, level.depth)
        decisions = [
            choose(
                [
                    best_split(c[i], totals[i], scale, params, mask)
                    for c, mask in zip(cells, masks, strict=True)
                ]
            )
            for i in range(nodes)
        ]
        go_left = np.zeros(rows, dtype=np.bool_)
        for i, decision in enumerate(decisions):
            if decision is not None:
                party, split = decision
                at = level.positions == i
                column = binned[party][at, split.feature]
                go_left[at] = goes_left(column, split.bin, split.missing_left, params.max_bin)
                node = level.nodes[i]
                tree.feature[node], tree.bin[node] = split.feature, split.bin
        level = next_level(tree, level, totals, decisions, go_left, scale, params)
        if not level.nodes:
            return tree


def tree_inputs(
    y: Floats, scores: Floats, params: HeteroSecureBoostParams, index: int
) -> tuple[tuple[Ints, Ints, Ints], GhScale]:
    """The quantised (g, h, count) of tree `index` and its scale."""
    cls = index % params.trees_per_round
    g, h = gradients(y, scores, params)
    g, h = g[:, cls], h[:, cls]
    sample = sampled_rows(y.shape[0], params.subsample, params.seed, index)
    if params.goss:
        sample, weight = goss_rows(g, sample, params, index)
        g, h = g * weight, h * weight
    scale = GhScale.of(g[sample], h[sample])
    return scale.quantize(g, h, sample), scale


def goss_rows(
    g: Floats, sample: NDArray[np.bool_], params: HeteroSecureBoostParams, index: int
) -> tuple[NDArray[np.bool_], Floats]:
    """GOSS (Ke et al., 2017, LightGBM): of the rows `sample` allows, keep the top_rate share
    with the largest |g| and draw other_rate of all of them from the rest (from (seed, tree)),
    whose g and h count (1 - top_rate) / other_rate times. Returns the rows and the weights."""
    candidates = np.flatnonzero(sample)
    count = candidates.size
    top = round(params.goss_top_rate * count)
    other = round(params.goss_other_rate * count)
    # stable order of |g| (ties: lower row first) so every party computes the same
    order = candidates[np.argsort(-np.abs(g[candidates]), kind="stable")]
    rest = order[top:]
    drawn = np.random.default_rng([params.seed, index, 0x6055]).permutation(rest.size)[:other]
    chosen = np.zeros_like(sample)
    chosen[order[:top]] = True
    chosen[rest[drawn]] = True
    weight = np.ones(g.shape[0])
    if other:
        weight[rest[drawn]] = (1.0 - params.goss_top_rate) / params.goss_other_rate
    return chosen, weight


def allowed_features(
    widths: Sequence[int], params: HeteroSecureBoostParams, index: int
) -> list[NDArray[np.bool_]]:
    """Each party's features tree `index` may use: the guest's only where the hosts take no
    part (complete_secure's first round, mix mode's even rounds), the hosts' only in mix
    mode's odd rounds."""
    out = [
        sampled_features(k, params.colsample, params.seed, index, party)
        for party, k in enumerate(widths)
    ]
    if host_levels(params, index) == 0:
        out = [out[0], *(np.zeros(k, dtype=np.bool_) for k in widths[1:])]
    elif params.tree_mode == "mix":
        out = [np.zeros_like(out[0]), *out[1:]]
    return out


def fit(blocks: Sequence[Floats], y: Floats, params: HeteroSecureBoostParams) -> Model:
    """SecureBoost in plaintext on the parties' feature blocks (guest first, then the hosts in
    their order): the model the federated run must produce exactly."""
    check_labels(y, params)
    cuts = [fit_cuts(x, params.max_bin) for x in blocks]
    binned = [bin_features(x, c, params.max_bin) for x, c in zip(blocks, cuts, strict=True)]
    scores = init_scores(y, params)
    model = Model(params, float(scores[0, 0]) if scores.size else 0.0, cuts=cuts)
    widths = [x.shape[1] for x in blocks]
    for index in range(params.total_trees):
        q, scale = tree_inputs(y, scores, params, index)
        tree = grow_tree(binned, q, scale, params, allowed_features(widths, params, index), index)
        leaf = tree.leaves(partial(_bins_left, tree, binned=binned, params=params), y.shape[0])
        scores[:, index % params.trees_per_round] += tree.weight[leaf]
        model.trees.append(tree)
        if (index + 1) % params.trees_per_round == 0:
            model.losses.append(loss(y, scores, params))
    return model


def feature_importance(trees: Sequence[Tree], party: int, k: int) -> tuple[Ints, Floats]:
    """Split count and total gain of each of `party`'s k features over `trees`."""
    count = np.zeros(k, dtype=np.int64)
    gain = np.zeros(k)
    for tree in trees:
        at = (tree.kind == SPLIT) & (tree.party == party) & (tree.feature >= 0)
        np.add.at(count, tree.feature[at], 1)
        np.add.at(gain, tree.feature[at], tree.gain[at])
    return count, gain
