"""hetero_secureboost at a host: orchestration only (the arithmetic is math.py and cipher.py,
the crypto plumbing fedflow.kit). The exchange, step by step, is in the package docstring.

A host never decrypts anything (it has no key): it multiplies the guest's ciphertexts per bin,
keeps its bin edges and the thresholds of the splits it wins, and answers which way those
splits send the rows of their nodes."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from fedcrypto import EncryptedVector, PublicKey
from fedschemas import FederationData
from numpy.typing import NDArray

from fedflow.artifacts import ModelArtifact
from fedflow.components.hetero_secureboost import cipher
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.params import SECURE_KEY_BITS, HeteroSecureBoostParams
from fedflow.kit.alignment import check_alignment
from fedflow.kit.inputs import check_tree_inputs
from fedflow.kit.resume import Resumable
from fedflow.kit.threads import crypto_threads
from fedflow.tables import TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

SPLIT_FIELDS = ("tree", "node", "feature", "threshold", "missing_left", "gain")


def train(ctx: ComponentContext) -> Mapping[str, ModelArtifact]:
    params = ctx.params_as(HeteroSecureBoostParams)
    table = ctx.input("data")
    check_tree_inputs(ctx, "hetero_secureboost", params.min_samples_leaf)
    check_alignment(ctx)
    guest = ctx.parties["guest"][0]
    x = np.asarray(table.features, dtype=np.float64)
    cuts = sbmath.fit_cuts(x, params.max_bin)
    bins = sbmath.bin_features(x, cuts, params.max_bin)
    validate = None
    if "validate_data" in ctx.inputs:
        vtable = ctx.input("validate_data")
        if list(vtable.feature_names) != list(table.feature_names):
            raise TableError("hetero_secureboost: validate_data needs the training features")
        validate = np.asarray(vtable.features, dtype=np.float64)
    with crypto_threads(ctx) as (executor, _):
        host = _Host(ctx, params, guest, bins, cuts, executor)
        host.validate = validate
        host.train()
        for name, seconds in host.seconds.items():
            ctx.metrics.log(name, seconds)
    return {"model": host.model(list(table.feature_names))}


class _Host:
    def __init__(
        self,
        ctx: ComponentContext,
        params: HeteroSecureBoostParams,
        guest: str,
        bins: sbmath.Bins,
        cuts: list[sbmath.Floats],
        executor: Any,
    ) -> None:
        self.ctx, self.params, self.guest = ctx, params, guest
        self.bins, self.cuts, self.executor = bins, cuts, executor
        self.rows = bins.shape[0]
        hosts = list(ctx.parties.get("host", []))
        self.party = hosts.index(ctx.party_id) + 1 if ctx.party_id in hosts else 1
        """This host's party index in the guest's order (1: the first host): colsample's
        draw of its features for each tree."""
        self.shuffle_key = secrets.token_bytes(16)
        """The secret of the order the guest sees this host's features in (never sent)."""
        self.splits: dict[str, list[Any]] = {name: [] for name in SPLIT_FIELDS}
        self.validate: sbmath.Floats | None = None
        """validate_data's features: the sides of this host's nodes go to the guest."""
        self.stopped = False
        self.seconds = {"histogram_seconds": 0.0, "compress_seconds": 0.0}
        """Time spent building and compressing encrypted histograms in this run (metrics)."""
        saved = ctx.checkpoints.latest()
        self.start = 0
        resumed = saved is not None and "guest_key" in saved.state
        if resumed:
            assert saved is not None
            self.key = self._key(bytes(saved.state["guest_key"]))
            self.splits = {name: list(saved.state["splits"][name]) for name in SPLIT_FIELDS}
            self.stopped = bool(saved.state.get("stopped", False))
            self.shuffle_key = bytes(saved.state["shuffle_key"])
            self.start = saved.iteration + 1
        else:
            ctx.federation.send(
                FederationData(kind="plain_control", meta={"features": int(bins.shape[1])}),
                to=guest,
                tag="host_features",
            )
            got = ctx.federation.recv(frm=guest, tag="public_key")
            if got.blob is None:
                raise ValueError("hetero_secureboost: the guest's public key message is empty")
            self.key = self._key(got.blob)
        ctx.federation.bind_dims(c=self.key.limbs, p=self.key.plain_limbs, n=self.rows)
        self.layout = cipher.CellLayout(self.rows, self.key.n_length)
        self.sampled = params.subsample >= 1.0 and not params.goss
        """Every row in every tree: empty cells are skipped (cipher.cell_kinds)."""
        self.snapshot = self.state()
        self.resume = Resumable(
            ctx, lambda: self.snapshot, saved.state if resumed and saved is not None else None
        )

    def _key(self, blob: bytes) -> PublicKey:
        short = self.params.insecure_short_keys
        key = PublicKey.from_bytes(blob, insecure_allow_short=short)
        if key.n_length < min(self.params.key_bits, SECURE_KEY_BITS) and not short:
            raise ValueError(f"hetero_secureboost: the guest's key has only {key.n_length} bits")
        return key

    def state(self) -> dict[str, Any]:
        return {
            "guest_key": self.key.to_bytes(),
            "splits": {name: list(values) for name, values in self.splits.items()},
            "stopped": self.stopped,
            "shuffle_key": self.shuffle_key,
        }

    def save(self, iteration: int) -> None:
        """Iteration `iteration` is complete (checkpointed), then reported as progress."""
        self.snapshot = self.state()
        self.resume.save(iteration)
        levels = self.params.total_trees * self.params.max_depth
        self.ctx.report_progress((iteration + 1) / levels)

    def train(self) -> None:
        depth_count = self.params.max_depth
        for index in range(self.start // depth_count, self.params.total_trees):
            if self.stopped:
                break
            self.ctx.check_canceled()
            if sbmath.host_levels(self.params, index) > 0:
                first = self.start % depth_count if index == self.start // depth_count else 0
                self.grow(index, first)

    def grow(self, index: int, first: int) -> None:
        depth_count = self.params.max_depth
        what = f"hetero_secureboost: gh of tree {index} from {self.guest}"
        got = self.ctx.federation.recv(frm=self.guest, tag="gh", iteration=index * depth_count)
        gh = _read(got, self.key, what, self.rows)
        k = self.bins.shape[1]
        allowed = sbmath.sampled_features(
            k, self.params.colsample, self.params.seed, index, self.party
        )
        order = sbmath.host_feature_order(self.shuffle_key, index, allowed)
        shown = np.ascontiguousarray(self.bins[:, order])  # the guest's slot j: feature order[j]
        levels = sbmath.host_levels(self.params, index)  # layered: the top host_depth only
        for depth in range(first, levels):
            iteration = index * depth_count + depth
            got = self.ctx.federation.recv(frm=self.guest, tag="positions", iteration=iteration)
            nodes = got.meta.get("nodes")
            if got.array is None or not isinstance(nodes, int) or nodes < 1:
                raise ValueError("hetero_secureboost: positions without nodes from the guest")
            positions = np.asarray(got.array, dtype=np.int32)
            cipher.check_positions(positions, self.rows, nodes, "hetero_secureboost: positions")
            direct = sbmath.direct_nodes(positions, nodes, depth)
            # Which cells travel: a function of the positions and the shown bins only
            kinds = cipher.cell_kinds(shown, positions, direct, self.params.max_bin, self.sampled)

            def histograms(
                positions: NDArray[np.int32] = positions,
                direct: sbmath.Ints = direct,
                kinds: NDArray[np.uint8] = kinds,
            ) -> tuple[EncryptedVector, dict[str, Any]]:
                began = time.perf_counter()
                cells = cipher.encrypted_histograms(
                    self.key,
                    gh,
                    shown,
                    positions,
                    direct,
                    self.params.max_bin,
                    self.executor,
                    kinds,
                )
                self.seconds["histogram_seconds"] += time.perf_counter() - began
                began = time.perf_counter()
                packed = cipher.compress(self.key, cells, self.layout, self.executor)
                self.seconds["compress_seconds"] += time.perf_counter() - began
                return packed, {}

            self.resume.send_ciphertexts("histograms", iteration, histograms, to=self.guest)
            # After the histograms: their recording is the first checkpoint that holds the
            # feature order (shuffle_key), so a redone iteration sends the same plan.
            self.ctx.federation.send(
                FederationData(kind="plain_control", array=kinds.reshape(-1)),
                to=self.guest,
                tag="histogram_cells",
                iteration=iteration,
            )
            next_nodes = self.answer_splits(index, iteration, positions, nodes, order)
            if next_nodes == 0 or depth == levels - 1:
                final = index * depth_count + depth_count - 1
                self.end_tree(index, final)
                self.save(final)
                return
            self.save(iteration)

    def end_tree(self, index: int, iteration: int) -> None:
        """With validate_data: the sides of this tree's nodes of this host for every
        validation row; with early stopping, at a round's end, the guest's stop or go."""
        if self.validate is None:
            return
        mine = [i for i, t in enumerate(self.splits["tree"]) if t == index]
        sides = np.zeros((self.validate.shape[0], len(mine)), dtype=np.uint8)
        for column, i in enumerate(mine):
            sides[:, column] = sbmath.threshold_left(
                self.validate[:, self.splits["feature"][i]],
                self.splits["threshold"][i],
                self.splits["missing_left"][i],
            )
        self.ctx.federation.send(
            FederationData(kind="partial_score", array=sides.ravel()),
            to=self.guest,
            tag="validate_directions",
            iteration=iteration,
        )
        per_round = self.params.trees_per_round
        if not self.params.early_stopping_rounds or (index + 1) % per_round:
            return
        got = self.ctx.federation.recv(frm=self.guest, tag="boost_stop", iteration=iteration)
        if got.meta.get("stop"):
            keep = got.meta.get("keep_trees")
            if not isinstance(keep, int) or keep < 0:
                raise ValueError("hetero_secureboost: boost_stop without keep_trees")
            kept = [i for i, t in enumerate(self.splits["tree"]) if t < keep]
            self.splits = {name: [v[i] for i in kept] for name, v in self.splits.items()}
            self.stopped = True

    def answer_splits(
        self,
        index: int,
        iteration: int,
        positions: NDArray[np.int32],
        nodes: int,
        order: sbmath.Ints,
    ) -> int:
        """Record the splits this host won and send which way they send their rows; returns
        the next level's open node count. Split ids name a slot of `order` (the shuffled
        features the guest saw) and a bin; where the guest lists tied candidates of several
        slots, the host takes the first in its own feature order (the reference's choice)
        and says which."""
        got = self.ctx.federation.recv(frm=self.guest, tag="splits", iteration=iteration)
        table = None if got.array is None else np.asarray(got.array, dtype=np.float64)
        next_nodes = got.meta.get("next_nodes")
        if table is None or table.shape != (nodes, 4) or not isinstance(next_nodes, int):
            raise ValueError(f"hetero_secureboost: splits from the guest are not ({nodes}, 4)")
        ties = _ties(got.meta.get("ties"))
        max_bin = self.params.max_bin
        answer = np.full(self.rows, -1, dtype=np.int8)
        won = False
        chosen: dict[str, int] = {}

        def candidate(ident: int, left: bool) -> tuple[int, int, bool]:
            slot, threshold_bin = divmod(int(ident), max_bin)
            if not 0 <= slot < len(order) or threshold_bin >= len(self.cuts[order[slot]]):
                raise ValueError(f"hetero_secureboost: the guest chose an unknown split {ident}")
            return int(order[slot]), threshold_bin, bool(left)

        for i in np.flatnonzero(table[:, 1] >= 0).tolist():
            feature, threshold_bin, missing_left = candidate(int(table[i, 1]), table[i, 2] > 0)
            listed = ties.get(str(i))
            if listed is not None:
                if not isinstance(listed, list) or not all(
                    isinstance(c, list) and len(c) == 2 for c in listed
                ):
                    raise ValueError(f"hetero_secureboost: tied splits of node {i} malformed")
                options = [candidate(int(c[0]), bool(c[1])) for c in listed]
                pick = min(range(len(options)), key=lambda j: options[j])
                chosen[str(i)] = pick
                feature, threshold_bin, missing_left = options[pick]
            at = positions == i
            answer[at] = sbmath.goes_left(
                self.bins[at, feature], threshold_bin, missing_left, max_bin
            )
            for name, value in zip(
                SPLIT_FIELDS,
                (
                    index,
                    int(table[i, 0]),
                    feature,
                    float(self.cuts[feature][threshold_bin]),
                    missing_left,
                    float(table[i, 3]),
                ),
                strict=True,
            ):
                self.splits[name].append(value)
            won = True
        if won:
            self.ctx.federation.send(
                FederationData(
                    kind="partial_score",
                    array=answer,
                    meta={"chosen": json.dumps(chosen, separators=(",", ":"))} if chosen else {},
                ),
                to=self.guest,
                tag="instance_split",
                iteration=iteration,
            )
        return next_nodes

    def model(self, names: list[str]) -> ModelArtifact:
        """This host's part: the thresholds of its splits, by (tree, node), in that order,
        and its features' importance (split count, total gain); nothing else."""
        s = self.splits
        k = len(names)
        features = np.asarray(s["feature"], dtype=np.int64)
        count = np.bincount(features, minlength=k)
        gain = np.bincount(features, weights=np.asarray(s["gain"], dtype=np.float64), minlength=k)
        return ModelArtifact(
            document={
                "component": "hetero_secureboost",
                "role": "host",
                "guest": self.guest,
                "feature_names": names,
                "max_bin": self.params.max_bin,
                "importance": {
                    name: {"splits": int(count[j]), "gain": float(gain[j])}
                    for j, name in enumerate(names)
                },
            },
            arrays={
                "split_tree": np.asarray(s["tree"], dtype=np.int64),
                "split_node": np.asarray(s["node"], dtype=np.int64),
                "split_feature": features,
                "split_threshold": np.asarray(s["threshold"], dtype=np.float64),
                "split_missing_left": np.asarray(s["missing_left"], dtype=np.bool_),
                "importance_splits": count,
                "importance_gain": gain,
            },
        )


def _ties(text: object) -> dict[str, Any]:
    """splits' meta 'ties' (JSON: node index -> [[split id, missing left], ...])."""
    if text is None:
        return {}
    try:
        ties = json.loads(str(text))
    except ValueError:
        ties = None
    if not isinstance(ties, dict):
        raise ValueError("hetero_secureboost: the guest's tied splits are not a JSON object")
    return ties


def _read(got: FederationData, key: PublicKey, what: str, rows: int) -> NDArray[np.uint64]:
    if got.array is None or got.array.shape != (rows, key.limbs):
        shape = None if got.array is None else got.array.shape
        raise ValueError(f"{what}: expected ({rows}, {key.limbs}) ciphertext limbs, got {shape}")
    data = np.ascontiguousarray(got.array, dtype="<u8")
    cipher.check_ciphertext_rows(data, key, what)
    return data
