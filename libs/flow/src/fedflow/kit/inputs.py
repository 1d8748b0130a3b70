"""What a model checks of this party's own input tables before it sends anything: enough rows
(and a validate_data with some), no column without a single value, no feature too large to
train on unscaled, a feature column at all at a host (and, for the linear models, a warning
naming columns mostly missing); and what a predict component checks: every column its part of
the model weighs is in the table.

Each party checks only its own tables (`data` and, where given, `validate_data`), so the error
is raised at the party that holds the offending column and names it; nothing about another
party's columns is needed or learnt. The checks run before the key exchange, so a job that
cannot train stops before its first message instead of failing later with an error about
something else (a batch_size minimum for a 2-row table, "cannot encrypt NaN or infinite values"
for a feature of 1e300, or, for an all-empty column, no error at all: the linear models count
a missing value as 0, so such a column trained silently as zeros).

    check_linear_inputs(ctx, "hetero_linr")                      # hetero_lr's batch rule
    check_linear_inputs(ctx, "hetero_poisson", not_features=["exposure"])
    check_tree_inputs(ctx, "hetero_secureboost", params.min_samples_leaf)  # any scale
    check_predict_columns(ctx, "hetero_linr_predict", weighted)   # its model's columns
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Final

import numpy as np
import structlog

from fedflow.components.hetero_lr.math import min_batch_size
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

log = structlog.get_logger("fedflow.kit.inputs")

MOSTLY_MISSING: Final = 0.5
"""A feature column with at least this share of missing values is reported: the linear models
count a missing value as 0, so such a column trains mostly on zeros."""

MAX_FEATURE_MAGNITUDE: Final = 1e12
"""The largest |value| a linear model under Paillier takes in a feature column. One SGD step
moves a score by about learning_rate * x^2 per feature, so a feature of this size makes the
divergence watch (fedflow.kit.loop.LossWatch) stop the job at its next iteration with advice
anyway; from about 1e60 (hetero_linr with 512-bit keys; hetero_lr from about 1e150) the
fixed-point encodings overflow first and the job died with an error about Paillier or NaN. The
bound keeps a wide margin below that, and a column beyond it has to be scaled whatever the
learning rate (a rate small enough for it leaves every unit-scale column untrained)."""

EARLY_STOPPING: Final = ("patience", "early_stopping_rounds")
"""The models' early-stopping params (the linear models', hetero_secureboost's): each watches
a validation loss, so it needs a validate_data input."""

_SHOWN: Final = 10
"""Columns named in one error at most."""


class InputRefused(ValueError):
    """This party's input table cannot train the model; the message says which table,
    which column or how many rows, and what to change in the pipeline."""


def check_linear_inputs(
    ctx: ComponentContext, component: str, not_features: Collection[str] = ()
) -> None:
    """check_model_inputs for a model trained by hetero_lr's exchange (hetero_lr,
    hetero_linr, hetero_poisson): as many rows as its smallest batch may have for this
    party's feature count (its part of hetero_lr.math.min_batch_size; the party with the most
    features holds the binding part, so every party checking its own is the whole rule), and
    features within MAX_FEATURE_MAGNITUDE. `not_features`: this party's columns that are not
    features (hetero_poisson's exposure)."""
    table = ctx.input("data")
    features = len([n for n in table.feature_names if n not in set(not_features)])
    if ctx.role == "guest":
        features += 1  # the intercept is one of the guest's weights
    minimum = min_batch_size(features, 0)
    reason = (
        f"every batch of {component} must have at least 4 x (this party's {features} "
        f"weights + 3) rows and never fewer than 64: with fewer, another party could solve "
        "its views for this party's per-row values, docs/hetero_lr.md"
    )
    check_model_inputs(
        ctx, component, min_rows=minimum, rows_reason=reason, not_features=not_features
    )
    warn_mostly_missing(ctx, component, table, not_features)


def check_tree_inputs(ctx: ComponentContext, component: str, min_samples_leaf: int) -> None:
    """check_model_inputs for a tree model: rows enough for one split, no column without a
    value; any magnitude (a tree compares a feature only with its own quantile cuts)."""
    reason = (
        f"a split puts at least min_samples_leaf ({min_samples_leaf}) rows on each side; with "
        "fewer rows every tree is a single leaf, a constant model"
    )
    check_model_inputs(
        ctx, component, min_rows=2 * min_samples_leaf, rows_reason=reason, max_magnitude=None
    )


def check_model_inputs(
    ctx: ComponentContext,
    component: str,
    *,
    min_rows: int,
    rows_reason: str,
    max_magnitude: float | None = MAX_FEATURE_MAGNITUDE,
    not_features: Collection[str] = (),
) -> None:
    """Checks this party's `data` input (and `validate_data`, where given): a feature column
    at least (at a host), at least `min_rows` training rows (`rows_reason` says why that
    many), at least one validation row (and a validate_data at all where an early-stopping
    param is set), every feature column with at least one value, and,
    unless `max_magnitude` is None, every feature within +-`max_magnitude` (`not_features`:
    columns that are not judged, e.g. an exposure)."""
    where = f"at party {ctx.party_id} ({ctx.role})"
    table = ctx.input("data")
    if ctx.role != "guest" and not table.feature_names:
        # Its key exchange announced 0 features, which the guest refused as "did not say".
        raise InputRefused(
            f"{component}: data {where} has no feature column: a {ctx.role} takes part with "
            "its own features (did the table, or a hetero_feature_selection before "
            f"{component}, leave none?)"
        )
    check_rows(component, table, min_rows, rows_reason, f"data {where}")
    check_columns(component, table, f"data {where}", max_magnitude, not_features)
    if "validate_data" not in ctx.inputs:
        # Refused here, before the row-alignment round trip (fedflow.kit.alignment) waits for
        # the other parties: it needs nobody's answer.
        for name in EARLY_STOPPING:
            if ctx.params.get(name):
                raise InputRefused(
                    f"{component}: {name} {ctx.params[name]} needs a validate_data input "
                    "(early stopping watches the validation loss)"
                )
        return
    validation = ctx.input("validate_data")
    if validation.rows == 0:
        raise InputRefused(
            f"{component}: validate_data {where} has no rows (is data_split's "
            "validate_fraction 0?): a validation loss over no rows is 0 every epoch; give it "
            "rows, or leave the input out"
        )
    check_columns(component, validation, f"validate_data {where}", max_magnitude, not_features)


def check_rows(component: str, table: Table, minimum: int, reason: str, what: str) -> None:
    """InputRefused when `table` (described by `what`, e.g. "data at party 9999 (guest)") has
    fewer than `minimum` rows."""
    if table.rows < minimum:
        raise InputRefused(
            f"{component}: {what} has {table.rows} row{'s' if table.rows != 1 else ''}, too "
            f"few to train on: it needs at least {minimum} ({reason}); give it a larger table "
            "(check that psi found the parties' common ids and that data_split's "
            "train_fraction leaves enough rows)"
        )


def check_columns(
    component: str,
    table: Table,
    what: str,
    max_magnitude: float | None = MAX_FEATURE_MAGNITUDE,
    not_features: Collection[str] = (),
) -> None:
    """InputRefused naming the feature columns of `table` that have no value at all, or (with
    `max_magnitude`) a value beyond +-max_magnitude (columns in `not_features` are not
    judged)."""
    if table.rows == 0 or not table.feature_names:
        return
    x = np.asarray(table.features, dtype=np.float64)
    present = ~np.isnan(x)
    names = list(table.feature_names)
    judged = [i for i, name in enumerate(names) if name not in set(not_features)]
    empty = [names[i] for i in judged if not present[:, i].any()]
    if empty:
        it = "it" if len(empty) == 1 else "them"
        raise InputRefused(
            f"{component}: {_listed(empty)} of {what} {'has' if len(empty) == 1 else 'have'} "
            f"no value in any of its {table.rows} rows (every value missing), and would train "
            f"as zeros: fill {it} with an imputation component (method: constant) or drop "
            f"{it} with hetero_feature_selection (max_missing_rate, or drop_columns)"
        )
    if max_magnitude is None:
        return
    with np.errstate(invalid="ignore"):
        top = np.nanmax(np.abs(x), axis=0)
    large = [i for i in judged if top[i] > max_magnitude]
    if large:
        shown = "; ".join(
            f"{names[i]!r} ranges from {np.nanmin(x[:, i]):.4g} to {np.nanmax(x[:, i]):.4g}"
            for i in large[:_SHOWN]
        )
        more = f" (and {len(large) - _SHOWN} more)" if len(large) > _SHOWN else ""
        raise InputRefused(
            f"{component}: {what}: {shown}{more}, beyond the +-{max_magnitude:g} that "
            f"{component} takes unscaled: scale the features with feature_scale (a "
            f"feature_scale component before {component}, and the same model applied to the "
            "rows you validate or predict)"
        )


def _listed(columns: list[str]) -> str:
    shown = ", ".join(repr(c) for c in columns[:_SHOWN])
    more = f" (and {len(columns) - _SHOWN} more)" if len(columns) > _SHOWN else ""
    return f"column{'s' if len(columns) > 1 else ''} {shown}{more}"


def check_predict_columns(
    ctx: ComponentContext,
    component: str,
    weighted: Collection[str],
    not_features: Collection[str] = (),
) -> None:
    """InputRefused when this party's `data` lacks a column its part of the model weighs
    (`weighted`, the intercept left out): a prediction without it counted the weight as 0, a
    wrong score without a word. `not_features`: columns of the table that are not features."""
    table = ctx.input("data")
    present = set(table.feature_names) - set(not_features)
    missing = [name for name in weighted if name not in present]
    if missing:
        raise InputRefused(
            f"{component}: data at party {ctx.party_id} ({ctx.role}) lacks {_listed(missing)} "
            f"of the model it applies (trained on {', '.join(list(weighted)[:20])}): predict "
            "on rows with the training columns (the same feature_scale, onehot or "
            "hetero_feature_selection models applied)"
        )


def warn_mostly_missing(
    ctx: ComponentContext, component: str, table: Table, not_features: Collection[str] = ()
) -> None:
    """The metric `mostly_missing_features` and, where there are some, the warning
    `features_mostly_missing` naming this party's feature columns with at least MOSTLY_MISSING
    of their values missing (a linear model counts them as 0)."""
    if table.rows == 0:
        return
    share = np.isnan(np.asarray(table.features, dtype=np.float64)).mean(axis=0)
    names = list(table.feature_names)
    mostly = [i for i in range(len(names)) if share[i] >= MOSTLY_MISSING]
    mostly = [i for i in mostly if names[i] not in set(not_features)]
    ctx.metrics.log("mostly_missing_features", float(len(mostly)))
    if mostly:
        log.warning(
            "features_mostly_missing",
            job_id=ctx.job_id,
            component=ctx.component,
            columns={names[i]: round(float(share[i]), 3) for i in mostly[:_SHOWN]},
            count=len(mostly),
            effect=f"{component} counts a missing value as 0",
            advice=f"fill them with an imputation component before {component}, or drop "
            "them with hetero_feature_selection (max_missing_rate)",
        )
