"""hetero_secureboost at the guest: orchestration only (the arithmetic is math.py and cipher.py,
the crypto plumbing fedflow.kit). The exchange, step by step, is in the package docstring."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from fedcrypto import EncryptedVector, ShapeMismatchError
from fedschemas import FederationData
from numpy.typing import NDArray

from fedflow.artifacts import ModelArtifact
from fedflow.components.hetero_secureboost import cipher
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.params import HeteroSecureBoostParams
from fedflow.components.hetero_secureboost.protocol import MAX_HOSTS
from fedflow.kit import payloads
from fedflow.kit.alignment import check_alignment
from fedflow.kit.he import HeParty, open_secrets
from fedflow.kit.inputs import check_tree_inputs
from fedflow.kit.loop import timed
from fedflow.kit.resume import Resumable
from fedflow.kit.threads import crypto_threads
from fedflow.tables import TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

SECRETS_PURPOSE: Final = "hetero_secureboost.secrets"
Ints = sbmath.Ints


def hosts_take_part(params: HeteroSecureBoostParams, tree: int) -> bool:
    """complete_secure: the first round's trees use the guest's features only."""
    return sbmath.host_levels(params, tree) > 0


def split_id(split: sbmath.Split, max_bin: int) -> int:
    """The id a host's candidate (slot, threshold bin) goes by in the splits message; the
    slot is the candidate's place in the host's secret order of its features for the tree
    (math.host_feature_order), not the feature's index."""
    return split.feature * max_bin + split.bin


def host_slots(params: HeteroSecureBoostParams, tree: int, party: int, features: int) -> int:
    """How many features (slots) host `party` (1: the first) shows in tree `tree`'s
    histograms: those colsample draws for it, whose indexes only the host knows."""
    drawn = sbmath.sampled_features(features, params.colsample, params.seed, tree, party)
    return int(drawn.sum())


@dataclass
class GuestRun:
    """The guest's checkpointed state (`state()` is what a checkpoint holds)."""

    host_features: dict[str, int]
    scores: sbmath.Floats
    trees: list[sbmath.Tree] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    tree: sbmath.Tree | None = None
    level: sbmath.Level | None = None
    leaf_of: Ints | None = None
    parents: dict[str, Ints] = field(default_factory=dict)
    validate_scores: sbmath.Floats | None = None
    validate_losses: list[float] = field(default_factory=list)
    stopped: bool = False
    """Early stopping: no more trees (the model was cut back to the best round)."""

    def state(self) -> dict[str, Any]:
        current: dict[str, Any] = {}
        if self.tree is not None and self.level is not None and self.leaf_of is not None:
            current = {
                "tree": self.tree.arrays(),
                "depth": self.level.depth,
                "nodes": np.asarray(self.level.nodes, dtype=np.int64),
                "positions": self.level.positions,
                "leaf_of": self.leaf_of,
                "parents": dict(self.parents),
            }
        return {
            "host_features": dict(self.host_features),
            "scores": self.scores,
            "trees": [t.arrays() for t in self.trees],
            "losses": list(self.losses),
            "current": current,
            "validate_scores": self.validate_scores,
            "validate_losses": list(self.validate_losses),
            "stopped": self.stopped,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> GuestRun:
        run = cls(
            host_features={str(k): int(v) for k, v in state["host_features"].items()},
            scores=np.array(state["scores"], dtype=np.float64),
            trees=[sbmath.Tree.from_arrays(dict(t)) for t in state["trees"]],
            losses=[float(v) for v in state["losses"]],
        )
        if state.get("validate_scores") is not None:
            run.validate_scores = np.array(state["validate_scores"], dtype=np.float64)
        run.validate_losses = [float(v) for v in state.get("validate_losses", [])]
        run.stopped = bool(state.get("stopped", False))
        current = state["current"]
        if current:
            run.tree = sbmath.Tree.from_arrays(dict(current["tree"]))
            run.level = sbmath.Level(
                int(current["depth"]),
                [int(v) for v in np.asarray(current["nodes"]).tolist()],
                np.array(current["positions"], dtype=np.int32),
            )
            run.leaf_of = np.array(current["leaf_of"], dtype=np.int64)
            run.parents = {
                str(k): np.array(v, dtype=np.int64) for k, v in current["parents"].items()
            }
        return run


def train(ctx: ComponentContext) -> Mapping[str, ModelArtifact]:
    params = ctx.params_as(HeteroSecureBoostParams)
    table = ctx.input("data")
    if table.labels is None:
        raise TableError("hetero_secureboost: the guest's input has no label column")
    y = np.asarray(table.labels, dtype=np.float64)
    sbmath.check_labels(y, params)
    check_tree_inputs(ctx, "hetero_secureboost", params.min_samples_leaf)
    check_alignment(ctx)
    hosts = list(ctx.parties.get("host", []))
    if not 1 <= len(hosts) <= MAX_HOSTS:
        raise ValueError(f"hetero_secureboost: needs 1 to {MAX_HOSTS} hosts ({len(hosts)} given)")
    x = np.asarray(table.features, dtype=np.float64)
    cuts = sbmath.fit_cuts(x, params.max_bin)
    bins = sbmath.bin_features(x, cuts, params.max_bin)
    validation = _validation(ctx, table.feature_names, cuts, params)
    with crypto_threads(ctx) as (executor, background):
        with timed(ctx, "setup_seconds"):
            private_key, mask_seed = open_secrets(
                ctx,
                SECRETS_PURPOSE,
                key_bits=params.key_bits,
                insecure_short_keys=params.insecure_short_keys,
            )
            he = HeParty(ctx, private_key, mask_seed, executor=executor)
            run, start = _start(ctx, he, y, hosts, params)
        try:
            trainer = _Trainer(ctx, params, he, run, bins, y, hosts, validation)
            left = sum(
                hosts_take_part(params, t)
                for t in range(start // params.max_depth, params.total_trees)
            )
            # Idle only: the guest's own work (encryption, decryption, split finding) never
            # shares its cores with the precomputation; it runs while the hosts build
            # histograms or split rows. Not for the first of the `left` trees: its gh is
            # encrypted before the guest first waits (or, resumed mid-tree, was sent
            # already), so its obfuscators are computed on the spot, and precomputing them
            # as well cost a tree's worth of obfuscators for nothing (30,000 per run on
            # default_credit) on the cores the hosts' histograms need.
            he.start_prefetch(background, len(y), max(left - 1, 0), idle_only=True)
            with timed(ctx, "train_seconds"):
                trainer.train(start)
        finally:
            he.close()
    return {"model": _model(params, table.feature_names, cuts, run, hosts, y)}


Validation = tuple[sbmath.Bins, sbmath.Floats]


def _validation(
    ctx: ComponentContext,
    names: list[str],
    cuts: list[sbmath.Floats],
    params: HeteroSecureBoostParams,
) -> Validation | None:
    """The validate_data input binned with the training cuts, and its labels (or None)."""
    if "validate_data" not in ctx.inputs:
        if params.early_stopping_rounds:
            raise ValueError("hetero_secureboost: early_stopping_rounds needs validate_data")
        return None
    table = ctx.input("validate_data")
    if table.labels is None or list(table.feature_names) != list(names):
        raise TableError(
            "hetero_secureboost: validate_data needs the label and the training features"
        )
    y = np.asarray(table.labels, dtype=np.float64)
    sbmath.check_labels(y, params)
    x = np.asarray(table.features, dtype=np.float64)
    return sbmath.bin_features(x, cuts, params.max_bin), y


def _start(
    ctx: ComponentContext,
    he: HeParty,
    y: sbmath.Floats,
    hosts: list[str],
    params: HeteroSecureBoostParams,
) -> tuple[GuestRun, int]:
    """The state of the last checkpoint, or the key exchange and a fresh state."""
    ctx.federation.bind_dims(c=he.public_key.limbs, p=he.public_key.plain_limbs, n=len(y))
    saved = ctx.checkpoints.latest()
    if saved is not None and "host_features" in saved.state:
        return GuestRun.from_state(saved.state), saved.iteration + 1
    ctx.federation.send(payloads.key_payload(he.public_key), to="host", tag="public_key")
    counts: dict[str, int] = {}
    for host in hosts:
        meta = ctx.federation.recv(frm=host, tag="host_features").meta
        count = meta.get("features")
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"hetero_secureboost: {host} did not say how many features it has")
        counts[host] = count
    return GuestRun(counts, sbmath.init_scores(y, params)), 0


class _Trainer:
    def __init__(
        self,
        ctx: ComponentContext,
        params: HeteroSecureBoostParams,
        he: HeParty,
        run: GuestRun,
        bins: sbmath.Bins,
        y: sbmath.Floats,
        hosts: list[str],
        validation: Validation | None,
    ) -> None:
        self.ctx, self.params, self.he, self.run = ctx, params, he, run
        self.bins, self.y, self.hosts, self.validation = bins, y, hosts, validation
        if validation is not None and run.validate_scores is None:
            base = sbmath.init_scores(y, params)[0] if len(y) else 0.0
            run.validate_scores = np.tile(base, (len(validation[1]), 1))
        self.layout = cipher.CellLayout(len(y), he.public_key.n_length)
        self.snapshot = run.state()
        self.seconds = {"encrypt_seconds": 0.0, "decrypt_seconds": 0.0}
        """Time spent in this run's encryptions and decryptions (metrics)."""
        self.resume = Resumable(ctx, lambda: self.snapshot, self._saved_resume())

    def _saved_resume(self) -> Mapping[str, Any] | None:
        saved = self.ctx.checkpoints.latest()
        return saved.state if saved is not None and "pending" in saved.state else None

    def save(self, iteration: int) -> None:
        """Iteration `iteration` is complete (checkpointed), then reported as progress."""
        self.snapshot = self.run.state()
        self.resume.save(iteration)
        levels = self.params.total_trees * self.params.max_depth
        self.ctx.report_progress((iteration + 1) / levels)

    def train(self, start: int) -> None:
        params, depth_count = self.params, self.params.max_depth
        for index in range(start // depth_count, params.total_trees):
            first = start % depth_count if index == start // depth_count else 0
            if self.run.stopped:
                break
            self.ctx.check_canceled()
            self.grow(index, first)
        self.ctx.metrics.log("trees", float(len(self.run.trees)))
        for name, seconds in self.seconds.items():
            self.ctx.metrics.log(name, seconds)
        if self.run.losses:
            self.ctx.metrics.log("final_train_loss", self.run.losses[-1])

    def grow(self, index: int, first: int) -> None:
        params, run, rows = self.params, self.run, len(self.y)
        q, scale = sbmath.tree_inputs(self.y, run.scores, params, index)
        slots = [
            host_slots(params, index, party, run.host_features[h])
            for party, h in enumerate(self.hosts, start=1)
        ]
        # the guest's own draw; every slot a host shows is one it may split on
        allowed = [
            sbmath.allowed_features([self.bins.shape[1]], params, index)[0],
            *(np.ones(k, dtype=np.bool_) for k in slots),
        ]
        host_levels = sbmath.host_levels(params, index)
        federated = host_levels > 0
        if first == 0 or run.tree is None:
            run.tree, run.level = sbmath.Tree.empty(params.max_depth), sbmath.root_level(rows)
            run.leaf_of, run.parents = np.zeros(rows, dtype=np.int64), {}
        assert run.level is not None
        for depth in range(first, params.max_depth):
            iteration = index * params.max_depth + depth
            if federated and depth == 0:
                self.send_gh(iteration, q, index)
            asked = depth < host_levels  # the hosts build histograms at this level
            level = run.level
            nodes = len(level.nodes)
            totals = sbmath.node_totals(level.positions, nodes, q)
            cells = [sbmath.histograms(self.bins, level.positions, nodes, q, params.max_bin)]
            masks = sbmath.level_features(allowed, params, index, depth)
            if asked:
                self.ctx.federation.send(
                    FederationData(
                        kind="plain_control", array=level.positions, meta={"nodes": nodes}
                    ),
                    to="host",
                    tag="positions",
                    iteration=iteration,
                )
                cells += [
                    self.host_cells(h, iteration, level, k, totals)
                    for h, k in zip(self.hosts, slots, strict=True)
                ]
            decisions = [
                sbmath.choose(
                    [
                        sbmath.best_split(c[i], totals[i], scale, params, mask)
                        for c, mask in zip(cells, masks[: len(cells)], strict=True)
                    ]
                )
                for i in range(nodes)
            ]
            ties = {
                i: sbmath.tied_splits(cells[d[0]][i], totals[i], scale, params, masks[d[0]], d[1])
                for i, d in enumerate(decisions)
                if d is not None and d[0] > 0
            }
            go_left = self.split_rows(iteration, level, decisions, asked, ties, host_levels)
            assert run.leaf_of is not None
            split_at = [i for i, d in enumerate(decisions) if d is not None]
            for i, node in enumerate(level.nodes):
                if decisions[i] is None:
                    run.leaf_of[level.positions == i] = node
            run.parents = {h: c[split_at] for h, c in zip(self.hosts, cells[1:], strict=False)}
            run.level = sbmath.next_level(
                run.tree, level, totals, decisions, go_left, scale, params
            )
            last = depth == params.max_depth - 1 or not run.level.nodes
            if last:
                final = index * params.max_depth + params.max_depth - 1
                self.finish(index, q, scale)
                self.validate(index, final, federated)
                self.save(final)
                return
            self.save(iteration)

    def send_gh(self, iteration: int, q: tuple[Ints, Ints, Ints], index: int) -> None:
        he = self.he

        def make() -> tuple[EncryptedVector, dict[str, Any]]:
            began = time.perf_counter()
            plain = self.layout.row_plaintexts(q, he.public_key.plain_limbs)
            data = he.private_key.encrypt_residues(plain, pool=he.pool, executor=he.executor)
            self.seconds["encrypt_seconds"] += time.perf_counter() - began
            return EncryptedVector.from_limbs(he.public_key, data, 0, validate=False), {}

        self.resume.send_ciphertexts("gh", iteration, make, to="host")
        later = sum(
            hosts_take_part(self.params, t) for t in range(index + 1, self.params.total_trees)
        )
        he.prefetch(later)

    def host_cells(
        self, host: str, iteration: int, level: sbmath.Level, k: int, totals: Ints
    ) -> Ints:
        """The host's cells of every open node (`k` slots each): decrypted, decoded, the
        cells it left out restored from the nodes' `totals`, siblings subtracted."""
        nodes, width = len(level.nodes), self.params.max_bin + 1
        direct = sbmath.direct_nodes(level.positions, nodes, level.depth)
        what = f"hetero_secureboost: histograms from {host}"
        with self.he.waiting():
            got = self.ctx.federation.recv(frm=host, tag="histogram_cells", iteration=iteration)
            kinds = np.asarray(got.array if got.array is not None else np.zeros(0, np.uint8))
            if kinds.size != len(direct) * k * width:
                raise ShapeMismatchError(
                    f"{what}: {kinds.size} cell kinds for {len(direct)} nodes x {k} x {width}"
                )
            kinds = kinds.reshape(len(direct), k, width)
            cipher.check_cell_kinds(kinds, (len(direct), k, width), what)
            count = int(np.count_nonzero(kinds == cipher.SENT))
            vec = self.he.recv_ciphertexts(
                "histograms", iteration, host, self.he.public_key, self.layout.ciphertexts(count)
            )
        self.ctx.federation.authorize_decrypt("histograms", iteration, frm=host)
        began = time.perf_counter()
        residues = self.he.private_key.decrypt_residues(vec.data, executor=self.he.executor)
        self.seconds["decrypt_seconds"] += time.perf_counter() - began
        sent = self.layout.reported_cells(self.ctx, residues, count, what, host, iteration)
        built = cipher.place_cells(sent, kinds, totals[direct], what)
        if level.depth == 0:
            return built
        parents = self.run.parents[host]
        if parents.shape[0] != len(direct):
            raise ShapeMismatchError(f"{what}: {len(direct)} nodes, {parents.shape[0]} parents")
        return sbmath.subtract_siblings(parents, built, direct, nodes)

    def split_rows(
        self,
        iteration: int,
        level: sbmath.Level,
        decisions: list[tuple[int, sbmath.Split] | None],
        federated: bool,
        ties: dict[int, list[sbmath.Split]],
        host_levels: int,
    ) -> NDArray[np.bool_]:
        """Which rows each splitting node sends left: the guest's own splits from its bins,
        a host's from its instance_split answer. Tells each host its won ids; where several
        of a host's slots tie (`ties`), the host picks one and `decisions` is updated."""
        params, tree = self.params, self.run.tree
        assert tree is not None
        go_left = np.zeros(len(self.y), dtype=np.bool_)
        won: dict[int, list[int]] = {}
        for i, decision in enumerate(decisions):
            if decision is None:
                continue
            party, split = decision
            node = level.nodes[i]
            if party == 0:
                at = level.positions == i
                go_left[at] = sbmath.goes_left(
                    self.bins[at, split.feature], split.bin, split.missing_left, params.max_bin
                )
                tree.feature[node], tree.bin[node] = split.feature, split.bin
            else:
                won.setdefault(party, []).append(i)
        if not federated:
            return go_left
        next_nodes = 2 * sum(d is not None for d in decisions)
        if level.depth + 1 >= min(params.max_depth, host_levels):
            next_nodes = 0  # the hosts' last level of this tree
        for party, host in enumerate(self.hosts, start=1):
            table = np.full((len(level.nodes), 4), -1.0)
            table[:, 0] = level.nodes
            tied: dict[str, list[list[int]]] = {}
            for i in won.get(party, []):
                _, split = decisions[i]  # type: ignore[misc]
                table[i, 1:] = (split_id(split, params.max_bin), split.missing_left, split.gain)
                if len(ties.get(i, [])) > 1:
                    tied[str(i)] = [
                        [split_id(t, params.max_bin), int(t.missing_left)] for t in ties[i]
                    ]
            meta: dict[str, Any] = {"next_nodes": next_nodes}
            if tied:
                meta["ties"] = json.dumps(tied, separators=(",", ":"))
            self.ctx.federation.send(
                FederationData(kind="plain_control", array=table, meta=meta),
                to=host,
                tag="splits",
                iteration=iteration,
            )
        for party, indexes in won.items():
            host = self.hosts[party - 1]
            with self.he.waiting():
                got = self.ctx.federation.recv(frm=host, tag="instance_split", iteration=iteration)
            answer = None if got.array is None else np.asarray(got.array)
            if answer is None or answer.shape != (len(self.y),):
                raise ShapeMismatchError(
                    f"hetero_secureboost: instance_split from {host} is not ({len(self.y)},)"
                )
            chosen = _chosen(got.meta.get("chosen"), host)
            for i in indexes:
                if str(i) in chosen or len(ties.get(i, [])) > 1:
                    pick = chosen.get(str(i))
                    if not isinstance(pick, int) or not 0 <= pick < len(ties.get(i, [])):
                        raise ValueError(
                            f"hetero_secureboost: {host} did not pick one of the tied splits "
                            f"of node {level.nodes[i]}"
                        )
                    decisions[i] = (party, ties[i][pick])
                at = level.positions == i
                if not np.all((answer[at] == 0) | (answer[at] == 1)):
                    raise ValueError(
                        f"hetero_secureboost: instance_split from {host} leaves rows of node "
                        f"{level.nodes[i]} undecided"
                    )
                go_left[at] = answer[at] == 1
        return go_left

    def finish(self, index: int, q: tuple[Ints, Ints, Ints], scale: sbmath.GhScale) -> None:
        """Leaves of the deepest level, the margins, the round's loss."""
        run, params = self.run, self.params
        assert run.tree is not None and run.level is not None and run.leaf_of is not None
        if run.level.nodes:
            totals = sbmath.node_totals(run.level.positions, len(run.level.nodes), q)
            sbmath.finish_leaves(run.tree, run.level, totals, scale, params)
            for i, node in enumerate(run.level.nodes):
                run.leaf_of[run.level.positions == i] = node
        run.scores[:, index % params.trees_per_round] += run.tree.weight[run.leaf_of]
        run.trees.append(run.tree)
        run.tree, run.level, run.leaf_of, run.parents = None, None, None, {}
        if (index + 1) % params.trees_per_round == 0:
            round_index = index // params.trees_per_round
            run.losses.append(sbmath.loss(self.y, run.scores, params))
            self.ctx.metrics.log("train_loss", run.losses[-1], round_index)

    def validate(self, index: int, iteration: int, federated: bool) -> None:
        """The finished tree on the validation rows (the hosts' sides of their nodes asked
        for); at a round's end the validation loss and, with early stopping, stop or go on."""
        if self.validation is None:
            return
        run, params = self.run, self.params
        vbins, vy = self.validation
        rows, tree = len(vy), run.trees[-1]
        sides: dict[tuple[int, int], NDArray[np.bool_]] = {}
        for party, host in enumerate(self.hosts if federated else [], start=1):
            owned = np.flatnonzero((tree.kind == sbmath.SPLIT) & (tree.party == party)).tolist()
            with self.he.waiting():
                got = self.ctx.federation.recv(
                    frm=host, tag="validate_directions", iteration=iteration
                )
            if got.array is None or got.array.size != rows * len(owned):
                raise ShapeMismatchError(
                    f"hetero_secureboost: validate_directions from {host} must be "
                    f"{rows} x {len(owned)}"
                )
            matrix = np.asarray(got.array).reshape(rows, len(owned)) == 1
            sides.update({(party, node): matrix[:, s] for s, node in enumerate(owned)})

        def go_left(node: int) -> NDArray[np.bool_]:
            party = int(tree.party[node])
            if party == 0:
                column = vbins[:, int(tree.feature[node])]
                left = bool(tree.missing_left[node])
                return sbmath.goes_left(column, int(tree.bin[node]), left, params.max_bin)
            return sides[(party, node)]

        assert run.validate_scores is not None
        leaf = tree.leaves(go_left, rows)
        run.validate_scores[:, index % params.trees_per_round] += tree.weight[leaf]
        if (index + 1) % params.trees_per_round:
            return
        round_index = index // params.trees_per_round
        run.validate_losses.append(sbmath.loss(vy, run.validate_scores, params))
        self.ctx.metrics.log("validate_loss", run.validate_losses[-1], round_index)
        if not params.early_stopping_rounds:
            return
        best = int(np.argmin(run.validate_losses))
        if round_index - best >= params.early_stopping_rounds:
            run.stopped = True
            del run.trees[(best + 1) * params.trees_per_round :]
            self.ctx.metrics.log("best_round", float(best))
        if federated:
            keep = len(run.trees) if run.stopped else -1
            self.ctx.federation.send(
                FederationData(
                    kind="plain_control", meta={"stop": run.stopped, "keep_trees": keep}
                ),
                to="host",
                tag="boost_stop",
                iteration=iteration,
            )


def _chosen(text: object, host: str) -> dict[str, object]:
    """instance_split's meta 'chosen' (JSON: node index -> the tied candidate taken)."""
    if text is None:
        return {}
    try:
        chosen = json.loads(str(text))
    except ValueError:
        chosen = None
    if not isinstance(chosen, dict):
        raise ValueError(f"hetero_secureboost: {host}'s chosen splits are not a JSON object")
    return chosen


def _model(
    params: HeteroSecureBoostParams,
    names: list[str],
    cuts: list[sbmath.Floats],
    run: GuestRun,
    hosts: list[str],
    y: sbmath.Floats,
) -> ModelArtifact:
    """The guest's part: every tree's structure and leaves, its own thresholds (as bin cuts),
    its features' importance; a host's split appears as (party, node) only."""
    count, gain = sbmath.feature_importance(run.trees, 0, len(names))
    arrays: dict[str, Any] = {
        f"trees/{name}": np.stack([getattr(t, name) for t in run.trees])
        for name in sbmath.TREE_ARRAYS
    }
    arrays["cuts"] = np.concatenate(cuts) if cuts else np.zeros(0)
    arrays["cut_counts"] = np.array([len(c) for c in cuts], dtype=np.int64)
    arrays["importance_splits"], arrays["importance_gain"] = count, gain
    document = {
        "component": "hetero_secureboost",
        "role": "guest",
        "params": params.model_dump(mode="json"),
        "base": float(sbmath.init_scores(y, params)[0, 0]) if len(y) else 0.0,
        "feature_names": list(names),
        "hosts": list(hosts),
        "losses": list(run.losses),
        "validate_losses": list(run.validate_losses),
        "importance": {
            name: {"splits": int(count[j]), "gain": float(gain[j])} for j, name in enumerate(names)
        },
        "trees": [t.describe() for t in run.trees],
    }
    return ModelArtifact(document=document, arrays=arrays)


def model_from_artifact(artifact: ModelArtifact) -> tuple[sbmath.Model, list[sbmath.Floats]]:
    """The guest's model (with its own cuts) back from its artifact."""
    document, arrays = artifact.document, artifact.arrays
    params = HeteroSecureBoostParams.model_validate(document["params"], strict=False)
    stacked = {name: np.asarray(arrays[f"trees/{name}"]) for name in sbmath.TREE_ARRAYS}
    total = stacked["kind"].shape[0]
    trees = [sbmath.Tree.from_arrays({k: v[i] for k, v in stacked.items()}) for i in range(total)]
    counts = np.asarray(arrays["cut_counts"], dtype=np.int64)
    cuts = np.split(np.asarray(arrays["cuts"], dtype=np.float64), np.cumsum(counts)[:-1])
    model = sbmath.Model(params, float(document["base"]), trees)
    return model, list(cuts)
