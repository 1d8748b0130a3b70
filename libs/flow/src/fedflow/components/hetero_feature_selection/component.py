"""hetero_feature_selection's code: local filters at each party, the IV filter decided by the
guest and told to each host as a mask over its binned columns (package docstring)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from fedschemas import FederationData

from fedflow.artifacts import Artifact, ModelArtifact
from fedflow.components.hetero_feature_binning.component import host_name
from fedflow.components.hetero_feature_selection import HeteroFeatureSelectionParams
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

NAME = "hetero_feature_selection"
MODEL_KIND = "hetero_feature_selection"
BINNING_KIND = "hetero_feature_binning"


def local_reasons(table: Table, params: HeteroFeatureSelectionParams) -> dict[str, str]:
    """Column -> why a local filter drops it (columns every local filter keeps are absent)."""
    unknown = [
        c for c in (*params.drop_columns, *params.keep_columns) if c not in table.feature_names
    ]
    if unknown:
        raise TableError(
            f"{NAME}: no column {unknown[0]!r} in this party's table "
            f"(features: {', '.join(table.feature_names)})"
        )
    reasons: dict[str, str] = {}
    rows = max(table.rows, 1)
    for j, name in enumerate(table.feature_names):
        column = table.features[:, j]
        present = column[~np.isnan(column)]
        missing_rate = 1.0 - present.size / rows
        if name in params.drop_columns:
            reasons[name] = "drop_columns"
        elif params.max_missing_rate is not None and missing_rate > params.max_missing_rate:
            reasons[name] = f"missing rate {missing_rate:.4g} > {params.max_missing_rate:g}"
        elif params.min_unique is not None and np.unique(present).size < params.min_unique:
            reasons[name] = f"{np.unique(present).size} distinct values < {params.min_unique}"
        elif params.min_variance is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                variance = float(np.var(present)) if present.size else 0.0
            if variance < params.min_variance:
                reasons[name] = f"variance {variance:.4g} < {params.min_variance:g}"
    return reasons


def binned_columns(ctx: ComponentContext) -> tuple[list[str], Mapping[str, Any]]:
    """The columns this party's binning model covers (in order) and its document."""
    if "binning" not in ctx.inputs:
        raise ValueError(
            f"{NAME}: iv_threshold / iv_top_k need the `binning` input (this party's "
            "hetero_feature_binning model) at every party"
        )
    model = ctx.model("binning")
    if model.document.get("kind") != BINNING_KIND:
        raise TypeError(f"{NAME}: the binning input is a {model.document.get('kind')!r} model")
    return [str(c) for c in model.document["columns"]], model.document


def iv_decision(ivs: Mapping[str, float], params: HeteroFeatureSelectionParams) -> dict[str, str]:
    """Column -> why the IV filters drop it, over every column with an IV (the guest's and
    the hosts' together, for top-k)."""
    reasons: dict[str, str] = {}
    if params.iv_threshold is not None:
        for name, iv in ivs.items():
            if iv < params.iv_threshold:
                reasons[name] = f"IV {iv:.4g} < {params.iv_threshold:g}"
    if params.iv_top_k is not None:
        ranked = sorted(ivs, key=lambda n: (-ivs[n], n))
        for rank, name in enumerate(ranked):
            if rank >= params.iv_top_k:
                reasons.setdefault(name, f"IV rank {rank + 1} > iv_top_k {params.iv_top_k}")
    return reasons


def selected(
    ctx: ComponentContext, table: Table, reasons: Mapping[str, str], keep: list[str]
) -> Mapping[str, Artifact]:
    dropped = {c: r for c, r in reasons.items() if c not in keep}
    kept = [c for c in table.feature_names if c not in dropped]
    if not kept:
        raise ValueError(
            f"{NAME}: every column of party {ctx.party_id} was dropped "
            f"({'; '.join(f'{c}: {r}' for c, r in list(dropped.items())[:5])}); relax the "
            "filters or name columns in keep_columns"
        )
    ctx.metrics.log("kept_columns", float(len(kept)))
    ctx.metrics.log("dropped_columns", float(len(dropped)))
    model = ModelArtifact(document={"kind": MODEL_KIND, "kept": kept, "dropped": dropped})
    return {"data": keep_only(table, kept), "model": model}


def keep_only(table: Table, kept: list[str]) -> Table:
    missing = [c for c in kept if c not in table.feature_names]
    if missing:
        raise TableError(
            f"{NAME}: the model keeps column {missing[0]!r}, which this party's table lacks"
        )
    where = [table.feature_names.index(c) for c in kept]
    return Table(table.ids, table.features[:, where], list(kept), table.labels, table.label_name)


def _apply_model(ctx: ComponentContext, table: Table) -> Mapping[str, Artifact]:
    model = ctx.model("model")
    if model.document.get("kind") != MODEL_KIND:
        raise TypeError(f"{NAME}: the model input is a {model.document.get('kind')!r} model")
    kept = [str(c) for c in model.document["kept"]]
    ctx.metrics.log("kept_columns", float(len(kept)))
    return {"data": keep_only(table, kept), "model": model}


def guest(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(HeteroFeatureSelectionParams)
    table = ctx.input("data")
    if "model" in ctx.inputs:
        return _apply_model(ctx, table)
    reasons = local_reasons(table, params)
    if params.by_iv:
        own, doc = binned_columns(ctx)
        ivs = {c: float(doc["iv"][c]) for c in own}
        host_ivs = {
            str(p): [float(v) for v in found] for p, found in doc.get("host_iv", {}).items()
        }
        hosts = list(ctx.parties.get("host", []))
        absent = [p for p in hosts if p not in host_ivs]
        if absent:
            raise ValueError(f"{NAME}: the binning model has no IVs of host {absent[0]}")
        every = dict(ivs)
        for party, found in host_ivs.items():
            every.update({host_name(party, i): iv for i, iv in enumerate(found)})
        by_iv = iv_decision(every, params)
        for name in own:
            if name in by_iv:
                reasons.setdefault(name, by_iv[name])
        for party in hosts:
            names = [host_name(party, i) for i in range(len(host_ivs[party]))]
            mask = np.array([0 if n in by_iv else 1 for n in names], dtype=np.int64)
            ctx.federation.send(
                FederationData(kind="plain_control", array=mask), to=party, tag="kept_by_iv"
            )
            ctx.metrics.log(f"host_kept_by_iv.{party}", float(mask.sum()))
            for name in names:
                if name in by_iv:
                    ctx.metrics.log(f"dropped_by_iv.{name}", 1.0)
    return selected(ctx, table, reasons, params.keep_columns)


def host(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(HeteroFeatureSelectionParams)
    table = ctx.input("data")
    if "model" in ctx.inputs:
        return _apply_model(ctx, table)
    reasons = local_reasons(table, params)
    if params.by_iv:
        own, _ = binned_columns(ctx)
        guest_party = ctx.parties["guest"][0]
        got = ctx.federation.recv(frm=guest_party, tag="kept_by_iv")
        if got.array is None or got.array.shape != (len(own),):
            raise ValueError(
                f"{NAME}: kept_by_iv from the guest does not fit the {len(own)} columns this "
                "party binned (are both binning models from the same job?)"
            )
        for name, keep in zip(own, got.array.tolist(), strict=True):
            if not keep:
                reasons.setdefault(name, "IV filter (decided by the guest)")
    return selected(ctx, table, reasons, params.keep_columns)
