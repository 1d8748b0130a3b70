"""What hetero_lr's guest and host share: the checkpointed training state, keys and model."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import structlog

from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr.params import (
    RUNTIME_KNOBS,
    HeteroLinrParams,
    HeteroLrParams,
)
from fedflow.kit.he import HeParty, encode_secrets, open_secrets
from fedflow.kit.resume import Resumable
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

log = structlog.get_logger("fedflow.components.hetero_lr")

Floats = lrmath.Floats

INTERCEPT: Final = "intercept"
SECRETS_PURPOSE: Final = "hetero_lr.secrets"
"""What the sealed secrets in a hetero_lr checkpoint are (binds the sealing key to them)."""
PARAMS: Final[Mapping[str, type[HeteroLrParams]]] = {
    "hetero_lr": HeteroLrParams,
    "hetero_linr": HeteroLinrParams,
}
"""The params model of each objective's component (lrmath.Objective.name)."""
SHARED_PRECISION: Final = 2.0**-48
"""With several hosts: the fixed precision of [[v]] and of the hosts' [[u_h / 4]] under the
guest's key, so that a host adds them without re-scaling ciphertexts."""


def features(table: Table) -> Floats:
    """The table's features, a missing value counted as 0."""
    return np.nan_to_num(np.asarray(table.features, dtype=np.float64), nan=0.0)


def model_table(names: list[str], weights: Floats) -> Table:
    """A party's part of the model: one row per feature name, its weight."""
    return Table(
        ids=np.array(names, dtype=np.str_),
        features=np.asarray(weights, dtype=np.float64).reshape(-1, 1),
        feature_names=["weight"],
        labels=None,
    )


def class_model_table(names: list[str], weights: Floats, columns: list[str]) -> Table:
    """A party's part of a one-vs-rest model: one row per feature name, one column per class
    (`columns`: "weight_<class>")."""
    return Table(
        ids=np.array(names, dtype=np.str_),
        features=np.asarray(weights, dtype=np.float64).reshape(len(names), len(columns)),
        feature_names=columns,
        labels=None,
    )


def validation_features(
    ctx: ComponentContext, names: list[str], component: str = "hetero_lr"
) -> Table | None:
    """This party's `validate_data` input (None without one), refused unless it has the
    training data's feature columns in the same order (and, at the guest, a label)."""
    if "validate_data" not in ctx.inputs:
        return None
    table = ctx.input("validate_data")
    got = list(table.feature_names)
    if got != names:
        missing = [n for n in names if n not in got]
        extra = [n for n in got if n not in names]
        what = []
        if missing:
            what.append("lacks " + ", ".join(missing[:10]))
        if extra:
            what.append("has columns the training data has not: " + ", ".join(extra[:10]))
        if not what:
            what.append("has the training columns in another order")
        raise TableError(
            f"{component}: validate_data at party {ctx.party_id} {'; '.join(what)} (it needs "
            f"the training data's feature columns, in order: {', '.join(names[:20])})"
        )
    if ctx.role == "guest" and table.labels is None:
        raise TableError(f"{component}: validate_data at the guest has no label column")
    return table


def lane_states(extra: dict[str, Any], lanes: int, multi: bool) -> list[dict[str, Any]]:
    """Each class lane's progress, in the checkpointed `extra` (lanes.py): watch, loss_sum,
    last_loss, patience, best_weights, and `frozen` once the class stopped early. Binary
    hetero_lr has one lane, `extra` itself (the binary checkpoint's layout, unchanged)."""
    if not multi:
        return [extra]
    if "class_weights" in extra or "next" in extra:
        raise ValueError(
            "hetero_lr: this task's checkpoint was written by the one-vs-rest that trained "
            "class after class; this version trains every class in one pass per batch and "
            "cannot resume it: run the job again"
        )
    states: list[dict[str, Any]] = extra.setdefault("lanes", [{} for _ in range(lanes)])
    if len(states) != lanes:
        raise ValueError(f"hetero_lr: the checkpoint has {len(states)} class lanes, not {lanes}")
    return states


def active_lanes(states: list[dict[str, Any]]) -> list[int]:
    """The lanes still training (a frozen class keeps its weights and leaves the batches)."""
    return [lane for lane, state in enumerate(states) if not state.get("frozen", False)]


def lane_weights(run: Training, lanes: int) -> Floats:
    """The weights as a (features, lanes) matrix, a view of run.weights: (features,) for
    the binary model, (features, classes) with multi_class (a fresh run's zeros get that
    shape here, the first time)."""
    if lanes > 1 and np.ndim(run.weights) == 1:
        run.weights = np.zeros((len(run.weights), lanes))
    return np.asarray(run.weights, dtype=np.float64).reshape(-1, lanes)


def output_weights(run: Training, states: list[dict[str, Any]], best: bool) -> Floats:
    """The weights to output, lane by lane (features, lanes): the best validation epoch's
    when `best` and one was kept, else the current ones."""
    current = lane_weights(run, len(states))
    columns = []
    for lane, state in enumerate(states):
        kept = state.get("best_weights")
        column = kept if best and kept is not None else current[:, lane]
        columns.append(np.asarray(column, dtype=np.float64))
    return np.stack(columns, axis=1)


def advice(params: HeteroLrParams, component: str = "hetero_lr") -> str:
    """What to change when training diverges, in the pipeline's parameter names."""
    return (
        f"scale the features (a feature_scale component before {component}: each party's "
        f"columns to mean 0 and standard deviation 1) or lower learning_rate (now "
        f"{params.learning_rate:g})"
    )


def warn_unscaled(
    ctx: ComponentContext, x: Floats, names: list[str], component: str = "hetero_lr"
) -> None:
    """A warning (log event and the metric `unscaled_features`) naming this party's columns
    that are far from unit scale: such features make SGD's steps too large, and diverge."""
    if x.shape[0] == 0:
        return
    mean = np.abs(np.mean(x, axis=0))
    spread = np.std(x, axis=0)
    far = [i for i in range(x.shape[1]) if max(mean[i], spread[i]) > lrmath.SCALE_LIMIT]
    ctx.metrics.log("unscaled_features", float(len(far)))
    if far:
        log.warning(
            "features_far_from_scale",
            job_id=ctx.job_id,
            component=ctx.component,
            columns=[names[i] for i in far][:10],
            count=len(far),
            largest=float(max(max(mean[i], spread[i]) for i in far)),
            advice=f"add a feature_scale component before {component}",
        )


def check_batch(
    params: HeteroLrParams, rows: int, k_guest: int, k_host: int, component: str = "hetero_lr"
) -> None:
    smallest = lrmath.min_batch_size(k_guest, k_host)
    batch = min(params.batch_size, rows)
    if batch < smallest:
        raise ValueError(
            f"{component}: batch_size {batch} is below the minimum {smallest} for "
            f"{k_guest} guest and {k_host} host features (a smaller batch lets a party solve "
            "for the other's per-sample values; see docs/hetero_lr.md)"
        )
    if params.batch_size > rows:
        log.warning(
            "batch_size_exceeds_rows",
            batch_size=params.batch_size,
            rows=rows,
            effect="every iteration is one full pass over the rows (batch gradient descent)",
        )


def _legacy_secrets(ctx: ComponentContext) -> Any:
    """Reads the secrets of a checkpoint written before ctx.secret: sealed under "secrets",
    or, older still, in the clear ("keys" or "private_key", and "mask_seed")."""

    def read(state: Mapping[str, Any]) -> bytes | None:
        if "secrets" in state:
            return ctx.checkpoints.open_sealed(SECRETS_PURPOSE, dict(state["secrets"]))
        raw = state.get("private_key", state.get("keys"))
        if raw is None or "mask_seed" not in state:
            return None
        return encode_secrets(bytes(raw), bytes(state["mask_seed"]))

    return read


@dataclass
class Training:
    """One party's side of a training run: keys (HeParty), checkpointed state (Resumable)."""

    ctx: ComponentContext
    params: HeteroLrParams
    he: HeParty
    weights: Floats
    start: int = 0
    objective: lrmath.Objective = lrmath.LOGISTIC
    extra: dict[str, Any] = field(default_factory=dict)
    """Role-specific state: peer_features, loss_sum, last_loss, stopped, epochs_done."""
    resume: Resumable = field(init=False)

    def __post_init__(self) -> None:
        self.resume = Resumable(self.ctx, self.state)

    def state(self) -> dict[str, Any]:
        # No private key or mask seed here: the checkpoint scope adds them, sealed.
        return {
            "peer_keys": self.he.peer_keys_state(),
            "weights": self.weights,
            "extra": self.extra,
        }

    def save(self, iteration: int) -> None:
        self.resume.save(iteration)

    def rate(self, t: int) -> float:
        return lrmath.learning_rate(self.params.learning_rate, self.params.decay, t)

    @property
    def stopped(self) -> bool:
        return bool(self.extra.get("stopped", False))


def start(
    ctx: ComponentContext,
    x: Floats,
    peers: list[str],
    executor: Executor | None,
    objective: lrmath.Objective = lrmath.LOGISTIC,
    meta: Mapping[str, int] | None = None,
) -> Training:
    """Keys (a sealed task secret, checkpointed before anything is sent), then the key
    exchange with `peers`, or the state the last checkpoint holds."""
    params = ctx.params_as(PARAMS[objective.name])
    ignored = [k for k in RUNTIME_KNOBS if ctx.params.get(k) is not None]
    if ignored:
        log.warning(
            "deprecated_params_ignored",
            job_id=ctx.job_id,
            component=ctx.component,
            params=ignored,
            use="the party's runtime options (worker settings, standalone options)",
        )
    short = params.insecure_short_keys
    private_key, mask_seed = open_secrets(
        ctx,
        f"{objective.name}.secrets",  # hetero_lr: SECRETS_PURPOSE
        key_bits=params.key_bits,
        insecure_short_keys=short,
        legacy=_legacy_secrets(ctx) if objective is lrmath.LOGISTIC else None,
    )
    he = HeParty(ctx, private_key, mask_seed, executor=executor)
    saved = ctx.checkpoints.latest()
    if saved is not None and "peer_keys" in saved.state:
        state = saved.state
        he.restore_peer_keys(state["peer_keys"], short)
        run = Training(
            ctx,
            params,
            he,
            np.asarray(state["weights"], dtype=np.float64),
            start=saved.iteration + 1,
            extra=dict(state["extra"]),
            objective=objective,
        )
        run.resume = Resumable(ctx, run.state, state)
        return run
    metas = he.exchange_keys(
        peers,
        min_bits=min(params.key_bits, 2048),
        insecure_short_keys=short,
        features=x.shape[1],
        **dict(meta or {}),
    )
    counts: dict[str, int] = {}
    for peer, said in metas.items():
        count = said.get("features")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"{objective.name}: {peer} did not say how many features it has")
        counts[peer] = count
    extra: dict[str, Any] = {"peer_features": counts}
    announced = {
        peer: {k: int(v) for k, v in m.items() if k != "features" and isinstance(v, int)}
        for peer, m in metas.items()
    }
    if any(announced.values()):
        extra["peer_meta"] = announced  # one-vs-rest's class count, validation rows
    return Training(ctx, params, he, np.zeros(x.shape[1]), extra=extra, objective=objective)
