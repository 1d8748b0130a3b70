"""hetero_feature_binning's code: each party's bins, the guest's WOE/IV of every column.

The guest: bin its own columns, encrypt its labels once and send them to every host, decrypt
each host's re-randomised per-bin event sums, compute WOE/IV (math.py). A host: bin its own
columns, sum [[y]] over the rows of each bin, re-randomise and send. With a `model` input both
only apply that model's bins. The package docstring lists the messages and what each party
learns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fedcrypto import EncryptedVector, PublicKey
from fedschemas import FederationData

from fedflow.artifacts import Artifact, ModelArtifact
from fedflow.components.hetero_feature_binning import (
    HeteroFeatureBinningParams,
    HostBinningParams,
)
from fedflow.components.hetero_feature_binning import math as bmath
from fedflow.kit import payloads
from fedflow.kit.decrypt_check import decrypt_floats
from fedflow.kit.he import open_secrets
from fedflow.kit.resume import Resumable
from fedflow.kit.threads import crypto_threads
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

NAME = "hetero_feature_binning"
MODEL_KIND = "hetero_feature_binning"
Floats = bmath.Floats


@dataclass(frozen=True)
class Binning:
    """One party's bins: its binned columns and their split points."""

    method: str
    bin_num: int
    columns: list[str]
    points: list[Floats]

    def slots(self, table: Table) -> list[bmath.Ints]:
        where = positions(table, self.columns)
        return [
            bmath.bin_index(table.features[:, j], p, self.bin_num)
            for j, p in zip(where, self.points, strict=True)
        ]

    def points_matrix(self) -> Floats:
        out = np.full((len(self.columns), self.bin_num - 1), np.nan)
        for i, p in enumerate(self.points):
            out[i, : p.size] = p
        return out


def positions(table: Table, columns: list[str]) -> list[int]:
    missing = [c for c in columns if c not in table.feature_names]
    if missing:
        raise TableError(
            f"{NAME}: no column {missing[0]!r} in this party's table "
            f"(features: {', '.join(table.feature_names)})"
        )
    return [table.feature_names.index(c) for c in columns]


def fit(params: HeteroFeatureBinningParams, table: Table) -> Binning:
    if table.rows == 0:
        raise TableError(f"{NAME}: no rows to bin")
    columns = params.columns or list(table.feature_names)
    if len(set(columns)) != len(columns):
        raise ValueError(f"{NAME}: columns names a column twice")
    where = positions(table, columns)
    points = [
        bmath.split_points(table.features[:, j], params.method, params.bin_num) for j in where
    ]
    return Binning(params.method, params.bin_num, list(columns), points)


def host_name(party: str, index: int) -> str:
    """How the guest names a host's column (the host's names stay at the host)."""
    return f"host_{party}_{index}"


# -- the model ----------------------------------------------------------------------------------


def to_model(
    binning: Binning,
    transform: str,
    stats: Mapping[str, bmath.WoeIv] | None,
    host_stats: Mapping[str, list[bmath.WoeIv]] | None = None,
    woe: Floats | None = None,
) -> ModelArtifact:
    """The model: split points; WOE/IV where this party has them (the guest: every column's;
    a host: its bins' WOE only when revealed)."""
    arrays: dict[str, Any] = {
        "points": binning.points_matrix(),
        "point_counts": np.array([p.size for p in binning.points], dtype=np.int64),
    }
    document: dict[str, Any] = {
        "kind": MODEL_KIND,
        "method": binning.method,
        "bin_num": binning.bin_num,
        "columns": binning.columns,
        "transform": transform,
    }
    if stats is not None:
        rows = [stats[c] for c in binning.columns]
        arrays["events"] = np.array([s.events for s in rows]).reshape(len(rows), -1)
        arrays["nonevents"] = np.array([s.nonevents for s in rows]).reshape(len(rows), -1)
        arrays["woe"] = np.array([s.woe for s in rows]).reshape(len(rows), -1)
        document["iv"] = {c: stats[c].iv for c in binning.columns}
    elif woe is not None:
        arrays["woe"] = woe
    if host_stats is not None:
        # A list per host (in the host's binning order; names are host_name(party, i)).
        document["host_iv"] = {party: [s.iv for s in found] for party, found in host_stats.items()}
        for party, found in host_stats.items():
            slots = binning.bin_num + 1
            arrays[f"host_{party}_events"] = np.array([s.events for s in found]).reshape(-1, slots)
            arrays[f"host_{party}_nonevents"] = np.array([s.nonevents for s in found]).reshape(
                -1, slots
            )
            arrays[f"host_{party}_woe"] = np.array([s.woe for s in found]).reshape(-1, slots)
    return ModelArtifact(document=document, arrays=arrays)


def from_model(model: ModelArtifact) -> tuple[Binning, str, Floats | None]:
    """The bins, the transform and the WOE matrix (None where this party has none)."""
    doc = model.document
    if doc.get("kind") != MODEL_KIND:
        raise TypeError(f"{NAME}: the model input is a {doc.get('kind')!r} model")
    columns = [str(c) for c in doc["columns"]]
    bin_num = int(doc["bin_num"])
    matrix = np.asarray(model.arrays["points"], dtype=np.float64)
    counts = np.asarray(model.arrays["point_counts"], dtype=np.int64)
    if matrix.shape != (len(columns), bin_num - 1) or counts.shape != (len(columns),):
        raise ValueError(f"{NAME}: the model's split points do not fit its columns")
    points = [matrix[i, : int(counts[i])].copy() for i in range(len(columns))]
    woe = model.arrays.get("woe")
    woe_matrix = None if woe is None else np.asarray(woe, dtype=np.float64)
    return Binning(str(doc["method"]), bin_num, columns, points), str(doc["transform"]), woe_matrix


def transformed(table: Table, binning: Binning, transform: str, woe: Floats | None) -> Table:
    """The table with the binned columns as bin indices or WOE (`none`: unchanged)."""
    if transform == "none":
        return table
    if transform == "woe" and woe is None:
        raise ValueError(f"{NAME}: transform woe without the WOE of this party's bins")
    features = table.features.copy()
    for i, (j, slots) in enumerate(
        zip(positions(table, binning.columns), binning.slots(table), strict=True)
    ):
        if transform == "bin":
            features[:, j] = slots.astype(np.float64)
        else:
            assert woe is not None
            features[:, j] = bmath.woe_of_slots(slots, woe[i])
    return Table(table.ids, features, list(table.feature_names), table.labels, table.label_name)


def _apply_model(ctx: ComponentContext, table: Table) -> Mapping[str, Artifact]:
    model = ctx.model("model")
    binning, transform, woe = from_model(model)
    ctx.metrics.log("binned_columns", float(len(binning.columns)))
    ctx.metrics.log("rows", float(table.rows))
    return {"data": transformed(table, binning, transform, woe), "model": model}


def _resumable(ctx: ComponentContext) -> Resumable:
    saved = ctx.checkpoints.latest()
    state = saved.state if saved is not None and "pending" in saved.state else None
    return Resumable(ctx, dict, state)


# -- the guest ----------------------------------------------------------------------------------


def _labels(table: Table) -> bmath.Floats:
    from fedflow.components import CATALOGUE

    if table.labels is None:
        raise TableError(f"{NAME}: the guest's input has no label column")
    problem = CATALOGUE[NAME].labels["guest"].problem(np.unique(table.labels).tolist())
    if problem is not None:
        raise ValueError(f"{NAME} {problem} in label column {table.label_name!r}")
    return np.asarray(table.labels, dtype=np.float64)


def _woe_curve(ctx: ComponentContext, column: str, stats: bmath.WoeIv) -> None:
    """The WOE of each non-empty slot of a column, for the board (x: slot, the last one is
    the missing values')."""
    used = np.flatnonzero(stats.events + stats.nonevents > 0)
    ctx.metrics.curve(f"woe.{column}", used, stats.woe[used], x_label="bin", y_label="woe")


def guest(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(HeteroFeatureBinningParams)
    table = ctx.input("data")
    if "model" in ctx.inputs:
        return _apply_model(ctx, table)
    labels = _labels(table)
    binning = fit(params, table)
    stats: dict[str, bmath.WoeIv] = {}
    for column, slots in zip(binning.columns, binning.slots(table), strict=True):
        stats[column] = bmath.woe_iv(
            bmath.slot_sums(slots, labels, params.bin_num),
            bmath.slot_sums(slots, 1.0 - labels, params.bin_num),
            params.adjustment_factor,
        )
        ctx.metrics.log(f"iv.{column}", stats[column].iv)
        _woe_curve(ctx, column, stats[column])
    hosts = list(ctx.parties.get("host", []))
    host_stats: dict[str, list[bmath.WoeIv]] = {}
    if hosts:  # a guest alone bins and evaluates its own columns
        with crypto_threads(ctx) as (executor, _):
            key, _seed = open_secrets(
                ctx,
                "hetero_feature_binning.secrets",
                key_bits=params.key_bits,
                insecure_short_keys=params.insecure_short_keys,
            )
            ctx.federation.bind_dims(c=key.public_key.limbs, p=key.public_key.plain_limbs)
            ctx.federation.bind_dims(m=table.rows)
            ctx.federation.send(payloads.key_payload(key.public_key), to="host", tag="public_key")
            resume = _resumable(ctx)
            for party in hosts:
                # Fresh ciphertexts per host: no two hosts hold the same ciphertext (the audit
                # refuses a ciphertext seen twice in a job).
                resume.send_ciphertexts(
                    "encrypted_labels",
                    0,
                    lambda: (key.encrypt(labels.astype(np.int64), executor=executor), {}),
                    to=party,
                    key=f"encrypted_labels.{party}",
                )
            per_column = params.bin_num + 1
            for party in hosts:
                got = ctx.federation.recv(frm=party, tag="bin_counts", iteration=0)
                counts = got.array
                if counts is None or counts.ndim != 1 or counts.size % per_column:
                    raise ValueError(
                        f"{NAME}: bin_counts from {party} do not fit {per_column} slots per column "
                        "(do both parties use the same bin_num?)"
                    )
                if bool(got.meta.get("reveal_woe")) != params.reveal_woe_to_host:
                    raise ValueError(
                        f"{NAME}: reveal_woe_to_host differs between the guest and host {party} "
                        "(set it in the params' common section)"
                    )
                vec = payloads.read_ciphertexts(
                    ctx.federation.recv(frm=party, tag="bin_events", iteration=0),
                    key.public_key,
                    f"{NAME}: bin_events from {party}",
                    executor,
                    counts.size,
                )
                ctx.federation.authorize_decrypt("bin_events", 0, frm=party)
                counts = np.asarray(counts, dtype=np.float64)
                # A bin's sum of 0/1 labels counts positives: at most the bin's rows (which
                # the host sends) and the guest's positives (which it knows).
                positives = float(np.sum(labels))
                events = decrypt_floats(
                    ctx,
                    key,
                    vec,
                    peer=party,
                    tag="bin_events",
                    iteration=0,
                    low=0.0,
                    high=np.minimum(counts, positives),
                    bound=f"a bin's positives: 0 to min(its rows, the guest's {positives:g})",
                    executor=executor,
                )
                if np.any(events > positives):
                    raise ValueError(f"{NAME}: the bin sums of {party} exceed the positives")
                events = np.rint(events)
                if np.any(events < 0) or np.any(events > counts) or np.any(counts < 0):
                    raise ValueError(f"{NAME}: the bin sums of {party} are not counts of its rows")
                found = [
                    bmath.woe_iv(e, n - e, params.adjustment_factor)
                    for e, n in zip(
                        events.reshape(-1, per_column), counts.reshape(-1, per_column), strict=True
                    )
                ]
                host_stats[party] = found
                for i, s in enumerate(found):
                    ctx.metrics.log(f"iv.{host_name(party, i)}", s.iv)
                    _woe_curve(ctx, host_name(party, i), s)
                if params.reveal_woe_to_host:
                    woe = np.concatenate([s.woe for s in found]).astype(np.float64)
                    ctx.federation.send(
                        FederationData(kind="aggregate", array=woe),
                        to=party,
                        tag="host_woe",
                        iteration=0,
                    )
    woe_matrix = np.array([stats[c].woe for c in binning.columns]).reshape(len(stats), -1)
    ctx.metrics.log("binned_columns", float(len(binning.columns)))
    ctx.metrics.log("rows", float(table.rows))
    return {
        "data": transformed(table, binning, params.transform, woe_matrix),
        "model": to_model(binning, params.transform, stats, host_stats),
    }


# -- a host -------------------------------------------------------------------------------------


def _bin_sums(y: EncryptedVector, slots: list[bmath.Ints], bin_num: int) -> EncryptedVector:
    """[[sum of y over each slot's rows]], column after column (bin_num + 1 slots each)."""
    parts = [y[np.flatnonzero(column == b)].sum() for column in slots for b in range(bin_num + 1)]
    data = np.vstack([p.data for p in parts])
    bound = max(p.bound for p in parts)
    return EncryptedVector(y.public_key, data, y.exponent, (len(parts),), bound=bound)


def host(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(HostBinningParams)
    table = ctx.input("data")
    if "model" in ctx.inputs:
        return _apply_model(ctx, table)
    binning = fit(params, table)
    slots = binning.slots(table)
    guest_party = ctx.parties["guest"][0]
    with crypto_threads(ctx) as (executor, _):
        got = ctx.federation.recv(frm=guest_party, tag="public_key")
        if got.blob is None:
            raise ValueError(f"{NAME}: the guest's public key message is empty")
        guest_key = PublicKey.from_bytes(got.blob, insecure_allow_short=params.insecure_short_keys)
        if guest_key.n_length < params.key_bits:
            raise ValueError(
                f"{NAME}: the guest's key has {guest_key.n_length} bits, key_bits is "
                f"{params.key_bits}"
            )
        ctx.federation.bind_dims(c=guest_key.limbs, p=guest_key.plain_limbs, m=table.rows)
        y = payloads.read_ciphertexts(
            ctx.federation.recv(frm=guest_party, tag="encrypted_labels", iteration=0),
            guest_key,
            f"{NAME}: encrypted_labels from {guest_party}",
            executor,
            table.rows,
        )
        counts = np.concatenate(
            [np.bincount(s, minlength=params.bin_num + 1) for s in slots]
        ).astype(np.float64)
        ctx.federation.send(
            FederationData(
                kind="aggregate", array=counts, meta={"reveal_woe": params.reveal_woe_to_host}
            ),
            to=guest_party,
            tag="bin_counts",
            iteration=0,
        )
        resume = _resumable(ctx)
        resume.send_ciphertexts(
            "bin_events",
            0,
            # Re-randomised: a plain product of [[y_i]] could be matched by the guest, who
            # made every [[y_i]], against products of its own ciphertexts (which rows).
            lambda: (_bin_sums(y, slots, params.bin_num).obfuscate(executor=executor), {}),
            to=guest_party,
        )
        woe = None
        if params.reveal_woe_to_host:
            answer = ctx.federation.recv(frm=guest_party, tag="host_woe", iteration=0)
            if answer.array is None or answer.array.shape != counts.shape:
                raise ValueError(f"{NAME}: host_woe from the guest does not fit this host's bins")
            woe = np.asarray(answer.array, dtype=np.float64).reshape(len(slots), -1)
    ctx.metrics.log("binned_columns", float(len(binning.columns)))
    ctx.metrics.log("rows", float(table.rows))
    return {
        "data": transformed(table, binning, params.transform, woe),
        "model": to_model(binning, params.transform, None, woe=woe),
    }
