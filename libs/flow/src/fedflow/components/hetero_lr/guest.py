"""hetero_lr at the guest: orchestration only (the arithmetic is math.py, the crypto plumbing
fedflow.kit). The exchange, step by step, is in the package docstring."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fedcrypto import EncryptedVector, PublicKey, ShapeMismatchError, encrypted_dot
from fedschemas import FederationData

from fedflow.components import CATALOGUE
from fedflow.components.evaluation.math import binary_metrics
from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr import packing, session
from fedflow.components.hetero_lr.lanes import join_lanes
from fedflow.components.hetero_lr.protocol import MAX_HOSTS
from fedflow.components.hetero_lr.session import INTERCEPT, SHARED_PRECISION, Training
from fedflow.kit.alignment import check_alignment
from fedflow.kit.decrypt_check import decrypt_floats
from fedflow.kit.inputs import check_linear_inputs
from fedflow.kit.loop import LossWatch, iterations, timed
from fedflow.kit.threads import crypto_threads
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

Floats = lrmath.Floats
Objective = lrmath.Objective


def train(ctx: ComponentContext) -> Mapping[str, Table]:
    # This party's own tables first (rows, magnitudes, empty columns: fedflow.kit.inputs),
    # then one round trip that the parties' rows are the same ids in the same order
    # (fedflow.kit.alignment); hetero_linr's wrappers do the same before train_with.
    check_linear_inputs(ctx, lrmath.LOGISTIC.name)
    check_alignment(ctx)
    return train_with(ctx, lrmath.LOGISTIC)


def _labels(table: Table, objective: Objective, ctx_params: Mapping[str, Any]) -> Floats:
    """The guest's labels, refused unless they fit the model's declared LabelRule."""
    name = objective.name
    if table.labels is None:
        raise TableError(f"{name}: the guest's input has no label column")
    labels = np.asarray(table.labels, dtype=np.float64)
    rule = CATALOGUE[name].labels_for(ctx_params)["guest"]
    problem = rule.problem(np.unique(labels).tolist())
    if problem is not None:
        raise ValueError(f"{name} {problem} in label column {table.label_name!r}")
    return labels


def train_with(ctx: ComponentContext, objective: Objective) -> Mapping[str, Table]:
    """The guest's training of `objective` (hetero_lr's, or hetero_linr's squared loss)."""
    table = ctx.input("data")
    labels = _labels(table, objective, ctx.params)
    hosts = list(ctx.parties.get("host", []))
    if not 1 <= len(hosts) <= MAX_HOSTS:
        raise ValueError(f"{objective.name}: needs 1 to {MAX_HOSTS} hosts ({len(hosts)} given)")
    own = session.features(table)
    names = list(table.feature_names)
    session.warn_unscaled(ctx, own, names, objective.name)
    x = lrmath.with_intercept(own)
    multi = objective is lrmath.LOGISTIC and bool(ctx.params.get("multi_class", False))
    classes = lrmath.class_values(labels) if multi else None
    validation = _validation(ctx, table, objective, classes)
    meta: dict[str, int] = {}
    if classes is not None:
        meta["classes"] = len(classes)
    if validation is not None:
        meta["validate_rows"] = validation.rows
    with crypto_threads(ctx) as (executor, background):
        # Key generation, fixed-base precomputation and the key exchange (or a checkpoint load).
        with timed(ctx, "setup_seconds"):
            run = session.start(ctx, x, hosts, executor, objective, meta=meta)
        _check_validation_rows(run, hosts, validation, objective.name)
        try:
            with timed(ctx, "train_seconds"):
                _train(ctx, run, x, labels, hosts, background, classes, validation)
        finally:
            run.he.close()
    weights = session.output_weights(
        run,
        session.lane_states(run.extra, len(classes or [0]), classes is not None),
        run.params.patience > 0,
    )
    if classes is None:
        return {"model": session.model_table([*names, INTERCEPT], weights[:, 0])}
    return {
        "model": session.class_model_table(
            [*names, INTERCEPT], weights, [f"weight_{value:g}" for value in classes]
        )
    }


def _validation(
    ctx: ComponentContext, table: Table, objective: Objective, classes: list[float] | None
) -> Table | None:
    """The validate_data input, checked: the training columns, a label the model takes; None
    without one (patience then refused: it has nothing to watch)."""
    name = objective.name
    params = ctx.params_as(session.PARAMS[name])
    found = session.validation_features(ctx, list(table.feature_names), name)
    if found is None:
        if params.patience:
            raise ValueError(
                f"{name}: patience {params.patience} needs a validate_data input (early "
                "stopping watches the validation loss)"
            )
        return None
    labels = np.asarray(found.labels, dtype=np.float64)
    rule = CATALOGUE[name].labels_for(ctx.params)["guest"]
    problem = rule.problem(np.unique(labels).tolist())
    if problem is not None:
        raise ValueError(f"{name} validate_data: {problem} in label column {found.label_name!r}")
    return found


def _check_validation_rows(
    run: Training, hosts: list[str], validation: Table | None, name: str
) -> None:
    """Every host must score the same validation rows as the guest (or none at all)."""
    ours = 0 if validation is None else validation.rows
    announced = run.extra.get("peer_meta", {})
    for host in hosts:
        theirs = int(announced.get(host, {}).get("validate_rows", 0))
        if theirs != ours:
            raise ValueError(
                f"{name}: validate_data has {ours} rows at the guest and {theirs} at host "
                f"{host}: give every party a validate_data input with the same rows (aligned "
                "by psi), or none"
            )


def _train(
    ctx: ComponentContext,
    run: Training,
    x: Floats,
    labels: Floats,
    hosts: list[str],
    background: Any,
    classes: list[float] | None = None,
    validation: Table | None = None,
) -> None:
    """The training loop. One lane per class (lanes.py): with `classes`, every batch trains
    all the classes still active in one exchange; without, the one binary model."""
    params, he, extra, objective = run.params, run.he, run.extra, run.objective
    rows_total, k_g = x.shape
    k_hosts = {h: int(k) for h, k in extra["peer_features"].items()}
    session.check_batch(params, rows_total, k_g, max(k_hosts.values()), objective.name)
    lanes = len(classes) if classes else 1
    states = session.lane_states(extra, lanes, classes is not None)
    ctx.federation.bind_dims(k_g2=lanes * (k_g + 2), classes=lanes)
    penalty = lrmath.intercept_penalty(k_g)
    per_epoch = len(lrmath.batches(rows_total, params.batch_size, params.seed, 0))
    total = params.epochs * per_epoch
    # Lane l's labels: class l against the rest (binary: the labels).
    y_all = (
        labels[None, :]
        if classes is None
        else np.stack([lrmath.one_vs_rest(labels, value) for value in classes])
    )
    suffixes = [""] if classes is None else [f"_{value:g}" for value in classes]
    x_val = None
    if validation is not None:
        x_val = lrmath.with_intercept(session.features(validation))
        ctx.federation.bind_dims(v=lanes * validation.rows)
    sigmoid = lrmath.resolve_sigmoid(params.sigmoid, len(hosts))
    if sigmoid == "separable" and (len(hosts) > 1 or objective is not lrmath.LOGISTIC):
        raise ValueError(
            f"{objective.name}: sigmoid separable takes exactly one host ({len(hosts)} given; "
            "sigmoid auto, the default, uses taylor with several hosts)"
        )
    separable = sigmoid == "separable" and not params.reveal_host_scores
    # One encryption under our key per row of a batch and active lane (the residual), in
    # either mode; the separable sigmoid encrypts rank + 1 per row; packed, one per row and
    # group of classes.
    largest = lrmath.largest_batch(rows_total, params.batch_size)
    per_lane = largest * (lrmath.SEPARABLE_RANK + 1 if separable else 1)
    slots = None
    if packing.packs(lanes, len(hosts), sigmoid, params.reveal_host_scores):
        slots = packing.slots_for(he.public_key, largest)

    def encryptions(active: list[int]) -> int:
        return per_lane * (len(active) if slots is None else len(slots.groups(active)))

    he.start_prefetch(background, encryptions(session.active_lanes(states)), total - run.start)
    done = run.start
    for t in iterations(ctx, run.start, total, stopped=lambda: run.stopped):
        epoch, position = divmod(t, per_epoch)
        active = session.active_lanes(states)
        he.prefetch_count = encryptions(active)
        watches = {
            lane: LossWatch.restore(
                states[lane].get("watch"),
                objective.name,
                session.advice(params, objective.name),
                tol=params.tol,
                early_stop=params.early_stop,
            )
            for lane in active
        }
        for lane, watch in watches.items():
            last_loss = states[lane].get("last_loss")
            if watch.last is None and last_loss is not None:  # a checkpoint from before the watch
                watch.last = float(last_loss)
        rows = lrmath.batches(rows_total, params.batch_size, params.seed, epoch)[position]
        xb, yb = x[rows], y_all[:, rows]
        weights = session.lane_weights(run, lanes)
        u_g = (xb @ weights).T  # (lanes, b)
        step = Step(run, t, hosts, xb, yb, u_g, k_hosts, active, total - t - 1, slots)
        if params.reveal_host_scores:
            gradient, batch_loss = _revealed(step)
        elif separable:
            gradient, batch_loss = _separable(step)
        else:
            gradient, batch_loss = _taylor(step)
        for lane in active:
            states[lane]["loss_sum"] = float(states[lane].get("loss_sum", 0.0)) + batch_loss[lane]
            # Every iteration, before the step: a diverging model is stopped with a clear
            # error while its numbers still fit a float (an epoch can be many orders of
            # magnitude).
            watches[lane].batch(batch_loss[lane] / len(rows), epoch=epoch, iteration=t)
            weights[:, lane] = lrmath.sgd_step(
                weights[:, lane], gradient[:, lane], run.rate(t), params.alpha, penalty
            )
            states[lane]["watch"] = watches[lane].state()
        if position == per_epoch - 1:
            _end_epoch(
                run, t, epoch, rows_total, hosts, states, watches, classes, x_val, validation
            )
        run.save(t)
        done = t + 1
    ctx.metrics.log("iterations", float(done))
    ctx.metrics.log("epochs", float(extra.get("epochs_done", 0)))
    finals = [float(s["last_loss"]) for s in states if s.get("last_loss") is not None]
    if finals:
        ctx.metrics.log("final_loss", float(np.mean(finals)))
    if classes is not None:
        for state, suffix in zip(states, suffixes, strict=True):
            if state.get("last_loss") is not None:
                ctx.metrics.log("final_loss" + suffix, float(state["last_loss"]))


def _end_epoch(
    run: Training,
    t: int,
    epoch: int,
    rows_total: int,
    hosts: list[str],
    states: list[dict[str, Any]],
    watches: Mapping[int, LossWatch],
    classes: list[float] | None,
    x_val: Floats | None,
    validation: Table | None,
) -> None:
    """After an epoch's last batch: each active class's epoch loss, early stopping (the
    Taylor loss's tol, validate_data's patience), the classes that stop frozen; epoch_end
    tells the hosts (per class, with multi_class)."""
    ctx, extra = run.ctx, run.extra
    lanes = len(states)
    suffixes = [""] if classes is None else [f"_{value:g}" for value in classes]
    best = [False] * lanes
    stops: dict[int, bool] = {}
    for lane, watch in watches.items():
        state = states[lane]
        loss = float(state.get("loss_sum", 0.0)) / rows_total
        ctx.metrics.log("loss" + suffixes[lane], loss, epoch)
        stops[lane] = watch.epoch(loss, epoch=epoch)
        state["watch"] = watch.state()
        state["loss_sum"], state["last_loss"] = 0.0, loss
    extra["epochs_done"] = epoch + 1
    if validation is not None and x_val is not None:
        assert validation.labels is not None
        scores = _validation_scores(run, t, hosts, x_val, lanes)
        y_val = np.asarray(validation.labels, dtype=np.float64)
        for lane in watches:
            y_lane = y_val if classes is None else lrmath.one_vs_rest(y_val, classes[lane])
            best[lane], stop_val = _validate(
                run, states[lane], epoch, scores[:, lane], y_lane, suffixes[lane]
            )
            stops[lane] = stops[lane] or stop_val
    weights = session.lane_weights(run, lanes)
    for lane in watches:
        if best[lane]:
            states[lane]["best_weights"] = weights[:, lane].tolist()
    control: dict[str, str | int | float | bool] = {"epoch": epoch}
    if classes is None:  # binary: the control as before
        control["stop"] = stops[0]
        if validation is not None:
            control.update(best=best[0], next_class=False)
        extra["stopped"] = stops[0]
    else:
        for lane, stop in stops.items():
            if stop:
                states[lane]["frozen"] = True
        left = session.active_lanes(states)
        # one character per class lane: which kept this epoch's weights as their best, which
        # are frozen from now on
        control.update(
            stop=not left,
            best="".join("1" if b else "0" for b in best),
            frozen="".join("0" if lane in left else "1" for lane in range(lanes)),
        )
        extra["stopped"] = not left
    ctx.federation.send(
        FederationData(kind="plain_control", meta=control), to="host", tag="epoch_end", iteration=t
    )


def _validation_scores(
    run: Training, t: int, hosts: list[str], x_val: Floats, lanes: int
) -> Floats:
    """The validation rows' full scores, (rows, lanes): ours plus every host's partial scores
    of those rows (in plaintext, lane after lane)."""
    z = x_val @ session.lane_weights(run, lanes)
    for host in hosts:
        got = run.ctx.federation.recv(frm=host, tag="validate_scores", iteration=t)
        if got.array is None or got.array.shape != (z.size,):
            raise ShapeMismatchError(
                f"{run.objective.name}: validate_scores from {host} is not ({z.size},)"
            )
        z = z + np.asarray(got.array, dtype=np.float64).reshape(lanes, -1).T
    return z


def _validate(
    run: Training,
    state: dict[str, Any],
    epoch: int,
    z: Floats,
    y_val: Floats,
    suffix: str,
) -> tuple[bool, bool]:
    """One class lane's validation after an epoch, from the validation rows' full scores z:
    the loss (hetero_lr: log loss and AUC; hetero_linr: half mean squared error and RMSE) as
    metrics; (whether this epoch is the lane's best so far, whether validation early stopping
    ends it)."""
    ctx, params = run.ctx, run.params
    loss = run.objective.validate_loss(y_val, z)
    ctx.metrics.log("validate_loss" + suffix, loss, epoch)
    if run.objective is lrmath.SQUARED:
        ctx.metrics.log("validate_rmse", float(np.sqrt(2.0 * loss)), epoch)
    elif 0 < y_val.sum() < len(y_val):
        auc = binary_metrics(y_val == 1.0, z, threshold=0.0, curve_points=2).auc
        ctx.metrics.log("validate_auc" + suffix, auc, epoch)
    patience = lrmath.Patience.restore(state.get("patience"), params.patience, params.min_delta)
    best, stop = patience.update(loss, epoch)
    state["patience"] = patience.state()
    return best, stop


@dataclass(frozen=True)
class Step:
    """One iteration's inputs at the guest: the batch's rows of every class lane (u_g, yb:
    (lanes, b)), and which lanes are active (the others are frozen: lanes.py)."""

    run: Training
    t: int
    hosts: list[str]
    xb: Floats
    yb: Floats
    u_g: Floats
    k_hosts: Mapping[str, int]
    active: list[int]
    iterations_left: int
    slots: packing.Slots | None = None
    """With one-vs-rest, the Taylor line and one host: the residual's class packing."""

    @property
    def lanes(self) -> int:
        return int(self.u_g.shape[0])

    def answer_rows(self, host: str) -> int:
        """Rows of a host's gradient: a lane per class, or (packed) a group per plaintext."""
        if self.slots is not None:
            return len(self.slots.groups(self.active)) * self.k_hosts[host]
        return self.lanes * self.k_hosts[host]

    @property
    def b(self) -> int:
        return int(self.u_g.shape[1])


def _score_squares(step: Step, host: str) -> Floats:
    """The host's sum of u_h^2 over the batch, per lane: host_score_sq (one scalar) for the
    binary model, host_class_score_sq (one per class lane, 0 for a frozen one) with classes."""
    ctx = step.run.ctx
    tag = "host_score_sq" if step.lanes == 1 else "host_class_score_sq"
    got = ctx.federation.recv(frm=host, tag=tag, iteration=step.t)
    if got.array is None:
        return np.zeros(step.lanes)
    squares = np.asarray(got.array, dtype=np.float64).reshape(-1)
    if squares.shape != (step.lanes,):
        raise ShapeMismatchError(f"{tag} from {host} has {squares.size} values, not {step.lanes}")
    return squares


CROSS_SLACK = 2.0**-20
"""Relative slack of _cross_bound per sqrt(batch rows): the host's encrypted_dot quantises its
u_h on a grid of at most 2^-23 of its largest magnitude (<= sqrt(S_h)), so the decrypted cross
term is off by at most 2^-24 sqrt(b) host_coef sqrt(S_h S_h'); 2^-20 leaves a factor 16."""
CROSS_FLOOR = 2.0**-40
"""Absolute slack per row and other host: the other hosts' [[host_coef u_h']] are encoded at
SHARED_PRECISION (2^-48, rounding 2^-49 each)."""


def _cross_bound(step: Step, host: str, squares: Mapping[str, Floats]) -> Floats:
    """Per lane, the largest |sum over the other hosts h' of u_h . (host_coef u_h')| that
    honest scores allow: Cauchy-Schwarz on the sums of squares each host sent in plaintext
    (host_score_sq), |u_h . u_h'| <= sqrt(S_h S_h'), plus the encoding's slack."""
    coef, b = step.run.objective.host_coef, step.b
    own = np.maximum(squares[host], 0.0)
    others = [np.maximum(s, 0.0) for h, s in squares.items() if h != host]
    products = sum(np.sqrt(own * theirs) for theirs in others)
    slack = CROSS_FLOOR * b * (1.0 + np.sqrt(own)) * len(others)
    return np.asarray(coef * products * (1.0 + CROSS_SLACK * np.sqrt(b)) + slack)


def _decrypt_cross(
    step: Step, host: str, cross: EncryptedVector, squares: Mapping[str, Floats]
) -> Floats:
    """`host`'s host_cross decrypted under the guest's key, per lane, checked against
    _cross_bound and reported to this party's audit (report.decrypt_check) before it is used.
    The host chose the ciphertexts, so a value outside the bound is its doing: the guest refuses
    it (the batch's loss would be made up)."""
    he, t = step.run.he, step.t
    bound = _cross_bound(step, host, squares)
    values = decrypt_floats(
        step.run.ctx,
        he.private_key,
        cross,
        peer=host,
        tag="host_cross",
        iteration=t,
        low=-bound,
        high=bound,
        bound="|sum over other hosts h' of u_h . (host_coef u_h')| <= host_coef sum "
        "sqrt(S_h S_h') per lane (Cauchy-Schwarz on the hosts' host_score_sq), plus encoding",
        executor=he.executor,
    )
    if np.any(np.abs(values) > bound):
        raise ValueError(
            f"{step.run.objective.name}: host_cross from {host} at iteration {t} exceeds what "
            "the hosts' sums of squared scores allow (Cauchy-Schwarz)"
        )
    return values


def _gradients_and_losses(
    step: Step, own: list[Floats], from_hosts: Floats, u_h_sq: Floats, coef: float = 1.0
) -> tuple[Floats, Floats]:
    """Per active lane, the guest's gradient (X_g^T own + coef X_g^T u_h, the latter
    unmasked from the hosts) / b and the batch's summed loss from the aggregates; a frozen
    lane's stay 0."""
    objective, xb, b = step.run.objective, step.xb, step.b
    k_g = xb.shape[1]
    gradient, losses = np.zeros((k_g, step.lanes)), np.zeros(step.lanes)
    for i, lane in enumerate(step.active):
        gradient[:, lane] = (xb.T @ own[i] + coef * from_hosts[lane, :k_g]) / b
        losses[lane] = objective.batch_loss(
            step.yb[lane],
            step.u_g[lane],
            float(from_hosts[lane, k_g]),
            float(from_hosts[lane, k_g + 1]),
            float(u_h_sq[lane]),
        )
    return gradient, losses


def _taylor(step: Step) -> tuple[Floats, Floats]:
    """One iteration of the Taylor protocol, every active class lane in the same messages;
    the guest's gradients (features, lanes) and the batch's losses (lanes,)."""
    run, t, hosts, active = step.run, step.t, step.hosts, step.active
    he, ctx, objective = run.he, run.ctx, run.objective
    b, k_g = step.b, step.xb.shape[1]
    several = len(hosts) > 1
    v = objective.residual_part(step.u_g[active], step.yb[active])  # (active, b)
    precision = SHARED_PRECISION if several else None
    slots = step.slots

    def residual() -> tuple[EncryptedVector, dict[str, Any]]:
        if slots is not None:  # several classes per plaintext (packing.py)
            return packing.encrypt(he.private_key, v, slots, pool=he.pool, executor=he.executor), {}
        return he.encrypt(v.ravel(), precision=precision), {}

    run.resume.send_ciphertexts("residual", t, residual, to="host")
    he.prefetch(step.iterations_left)
    # encrypted_dot quantises a matrix on one grid (2^-24 of its largest entry): each column is
    # first brought to magnitude <= 1 by a power of two (exact), so that small columns (the
    # features) keep their precision next to large ones (hetero_linr's labels and u_g).
    designs, scales = [], []
    for lane in active:
        design = np.hstack(
            [step.xb, objective.label_column(step.yb[lane])[:, None], step.u_g[lane][:, None]]
        )
        scales.append(lrmath.column_scales(design))
        designs.append(design / scales[-1])
    sent: dict[str, dict[str, Any]] = {}
    for host in hosts:
        key = he.peer_keys[host]
        u_h = he.recv_ciphertexts("host_scores", t, host, key, len(active) * b)

        def guest_gradient(
            u_h: EncryptedVector = u_h, host: str = host, key: PublicKey = key
        ) -> tuple[EncryptedVector, dict[str, Any]]:
            # [[A^T u_h + R_g]] per lane: the guest's gradient term and two loss aggregates
            parts = [
                encrypted_dot(design, u_h[i * b : (i + 1) * b], executor=he.executor)
                for i, design in enumerate(designs)
            ]
            joined = join_lanes(parts, active, step.lanes, k_g + 2, key)
            return he.masked(joined, f"guest_gradient:{host}", t)

        sent[host] = run.resume.send_ciphertexts(
            "guest_gradient", t, guest_gradient, to=host, key=f"guest_gradient:{host}"
        )
    for host in hosts:
        he.decrypt_for_peer(
            "host_gradient", t, "host_gradient_masked", host, step.answer_rows(host)
        )
    from_hosts = np.zeros((step.lanes, k_g + 2))
    u_h_sq = np.zeros(step.lanes)
    squares: dict[str, Floats] = {}
    for host in hosts:
        got = he.unmask(sent[host], "guest_gradient_masked", t, host, f"guest_gradient:{host}")
        got = got.reshape(step.lanes, k_g + 2)
        for i, lane in enumerate(active):
            from_hosts[lane] += scales[i] * got[lane]
        squares[host] = _score_squares(step, host)
        u_h_sq += squares[host]
    if several:
        # per lane, the sum over the other hosts h' of u_h . (host_coef u_h'): loss terms,
        # checked against every host's sum of squares (hence after all of them)
        for host in hosts:
            cross = he.recv_ciphertexts("host_cross", t, host, he.public_key, step.lanes)
            ctx.federation.authorize_decrypt("host_cross", t, frm=host)
            u_h_sq += _decrypt_cross(step, host, cross, squares) / objective.host_coef
    own = [v[i] for i in range(len(active))]
    return _gradients_and_losses(step, own, from_hosts, u_h_sq, objective.host_coef)


def _separable(step: Step) -> tuple[Floats, Floats]:
    """One iteration with the separable sigmoid, d = a_0(u_g) - y + sum_j a_j(u_g) b_j(u_h):
    per active lane the guest sends [[a_0 - y; a_1; ...]] (its factors, rows stacked) under
    its key, the host [[b_1; ...; u_h]] under its own; each side multiplies the other's
    ciphertexts by plaintext built from its own factors. The Taylor loss's aggregates come
    from the u_h block, as in the Taylor protocol."""
    run, t, host, active = step.run, step.t, step.hosts[0], step.active
    he, objective = run.he, run.objective
    b, k_g, xb = step.b, step.xb.shape[1], step.xb
    rank = lrmath.SEPARABLE_RANK
    height = (rank + 1) * b
    factors = []
    for lane in active:
        f = lrmath.separable_guest(step.u_g[lane])
        f[0] = f[0] - step.yb[lane]
        factors.append(f)
    plain = np.concatenate([f.ravel() for f in factors]) if factors else np.zeros(0)
    run.resume.send_ciphertexts("residual", t, lambda: (he.encrypt(plain), {}), to="host")
    he.prefetch(step.iterations_left)
    # [[b_1 .. b_rank, u_h]] (rows stacked) times [X_g a_j | 0 ; 0 | y', u_g], per lane
    designs, scales = [], []
    for f, lane in zip(factors, active, strict=True):
        design = np.zeros((height, k_g + 2))
        for j in range(rank):
            design[j * b : (j + 1) * b, :k_g] = xb * f[j + 1][:, None]
        design[rank * b :, k_g] = objective.label_column(step.yb[lane])
        design[rank * b :, k_g + 1] = step.u_g[lane]
        scales.append(lrmath.column_scales(design))
        designs.append(design / scales[-1])
    key = he.peer_keys[host]
    scores = he.recv_ciphertexts("host_scores", t, host, key, len(active) * height)

    def guest_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        parts = [
            encrypted_dot(design, scores[i * height : (i + 1) * height], executor=he.executor)
            for i, design in enumerate(designs)
        ]
        joined = join_lanes(parts, active, step.lanes, k_g + 2, key)
        return he.masked(joined, f"guest_gradient:{host}", t)

    sent = run.resume.send_ciphertexts(
        "guest_gradient", t, guest_gradient, to=host, key=f"guest_gradient:{host}"
    )
    he.decrypt_for_peer(
        "host_gradient", t, "host_gradient_masked", host, step.lanes * step.k_hosts[host]
    )
    got = he.unmask(sent, "guest_gradient_masked", t, host, f"guest_gradient:{host}")
    got = got.reshape(step.lanes, k_g + 2)
    from_host = np.zeros((step.lanes, k_g + 2))
    for i, lane in enumerate(active):
        from_host[lane] = scales[i] * got[lane]
    u_h_sq = _score_squares(step, host)
    own = [f[0] for f in factors]
    return _gradients_and_losses(step, own, from_host, u_h_sq)


def _revealed(step: Step) -> tuple[Floats, Floats]:
    """One iteration with `reveal_host_scores`: the hosts' partial scores arrive in plaintext
    (every active lane's), the residual is the exact sigmoid's, and only the hosts' gradients
    go through Paillier (one key, the guest's). Returns the guest's gradients and the
    batch's log losses."""
    run, t, hosts, active = step.run, step.t, step.hosts, step.active
    he, ctx = run.he, run.ctx
    b = step.b
    z = step.u_g[active].copy()
    for host in hosts:
        got = ctx.federation.recv(frm=host, tag="host_scores_revealed", iteration=t)
        if got.array is None or got.array.shape != (z.size,):
            raise ShapeMismatchError(
                f"hetero_lr: host_scores_revealed from {host} is not ({z.size},)"
            )
        z += np.asarray(got.array, dtype=np.float64).reshape(z.shape)
    d = lrmath.sigmoid(z) - step.yb[active]
    run.resume.send_ciphertexts("residual", t, lambda: (he.encrypt(d.ravel()), {}), to="host")
    he.prefetch(step.iterations_left)
    for host in hosts:
        he.decrypt_for_peer(
            "host_gradient", t, "host_gradient_masked", host, step.lanes * step.k_hosts[host]
        )
    gradient, losses = np.zeros((step.xb.shape[1], step.lanes)), np.zeros(step.lanes)
    for i, lane in enumerate(active):
        gradient[:, lane] = step.xb.T @ d[i] / b
        losses[lane] = lrmath.logistic_loss(step.yb[lane], z[i])
    return gradient, losses
