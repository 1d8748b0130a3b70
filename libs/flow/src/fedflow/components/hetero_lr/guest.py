"""hetero_lr at the guest: orchestration only (the arithmetic is math.py, the crypto plumbing
fedflow.kit). The exchange, step by step, is in the package docstring."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from fedcrypto import EncryptedVector, ShapeMismatchError, encrypted_dot
from fedschemas import FederationData

from fedflow.components import CATALOGUE
from fedflow.components.evaluation.math import binary_metrics
from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr import session
from fedflow.components.hetero_lr.protocol import MAX_HOSTS
from fedflow.components.hetero_lr.session import INTERCEPT, SHARED_PRECISION, Training
from fedflow.kit.loop import LossWatch, timed
from fedflow.kit.threads import crypto_threads
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

Floats = lrmath.Floats
Objective = lrmath.Objective


def train(ctx: ComponentContext) -> Mapping[str, Table]:
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
    keep_best = run.params.patience > 0
    if classes is None:
        weights = session.chosen_weights(run, keep_best)
        return {"model": session.model_table([*names, INTERCEPT], weights)}
    per_class = [*run.extra.get("class_weights", [])]
    if len(per_class) < len(classes):  # the last class ends with the loop
        per_class.append(session.chosen_weights(run, keep_best).tolist())
    return {
        "model": session.class_model_table(
            [*names, INTERCEPT],
            np.array(per_class, dtype=np.float64).T,
            [f"weight_{value:g}" for value in classes],
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
    params, he, extra, objective = run.params, run.he, run.extra, run.objective
    rows_total, k_g = x.shape
    k_hosts = {h: int(k) for h, k in extra["peer_features"].items()}
    session.check_batch(params, rows_total, k_g, max(k_hosts.values()), objective.name)
    ctx.federation.bind_dims(k_g2=k_g + 2)
    penalty = lrmath.intercept_penalty(k_g)
    per_epoch = len(lrmath.batches(rows_total, params.batch_size, params.seed, 0))
    per_class = params.epochs * per_epoch
    total = (len(classes) if classes else 1) * per_class
    x_val = None
    if validation is not None:
        x_val = lrmath.with_intercept(session.features(validation))
        ctx.federation.bind_dims(v=validation.rows)
    sigmoid = lrmath.resolve_sigmoid(params.sigmoid, len(hosts))
    if sigmoid == "separable" and (len(hosts) > 1 or objective is not lrmath.LOGISTIC):
        raise ValueError(
            f"{objective.name}: sigmoid separable takes exactly one host ({len(hosts)} given; "
            "sigmoid auto, the default, uses taylor with several hosts)"
        )
    separable = sigmoid == "separable" and not params.reveal_host_scores
    # One encryption under our key per row of a batch (the residual), in either mode; the
    # separable sigmoid encrypts rank + 1 per row.
    largest = lrmath.largest_batch(rows_total, params.batch_size)
    if separable:
        largest *= lrmath.SEPARABLE_RANK + 1
    he.start_prefetch(background, largest, total - run.start)
    done = run.start
    for t in session.class_iterations(ctx, run, total):
        index, within = divmod(t, per_class)
        epoch, position = divmod(within, per_epoch)
        suffix = "" if classes is None else f"_{classes[index]:g}"
        y_all = labels if classes is None else lrmath.one_vs_rest(labels, classes[index])
        watch = LossWatch.restore(
            extra.get("watch"),
            objective.name,
            session.advice(params, objective.name),
            tol=params.tol,
            early_stop=params.early_stop,
        )
        loss_sum = float(extra.get("loss_sum", 0.0))
        last_loss = extra.get("last_loss")
        if watch.last is None and last_loss is not None:  # a checkpoint from before the watch
            watch.last = float(last_loss)
        rows = lrmath.batches(rows_total, params.batch_size, params.seed, epoch)[position]
        xb, yb = x[rows], y_all[rows]
        u_g = xb @ run.weights
        if params.reveal_host_scores:
            gradient, batch_loss = _revealed(run, t, hosts, xb, yb, u_g, k_hosts, total - t - 1)
        elif separable:
            gradient, batch_loss = _separable(run, t, hosts[0], xb, yb, u_g, k_hosts, total - t - 1)
        else:
            gradient, batch_loss = _taylor(run, t, hosts, xb, yb, u_g, k_hosts, total - t - 1)
        loss_sum += batch_loss
        # Every iteration, before the step: a diverging model is stopped with a clear error
        # while its numbers still fit a float (an epoch can be many orders of magnitude).
        watch.batch(batch_loss / len(rows), epoch=epoch, iteration=t)
        run.weights = lrmath.sgd_step(
            run.weights, gradient, run.rate(within), params.alpha, penalty
        )
        extra["loss_sum"], extra["watch"] = loss_sum, watch.state()
        if position == per_epoch - 1:
            loss = loss_sum / rows_total
            ctx.metrics.log("loss" + suffix, loss, epoch)
            stop = watch.epoch(loss, epoch=epoch)
            extra["watch"] = watch.state()
            extra["loss_sum"], extra["last_loss"] = 0.0, loss
            extra["epochs_done"] = epoch + 1
            best = False
            if validation is not None and x_val is not None:
                assert validation.labels is not None
                y_val = np.asarray(validation.labels, dtype=np.float64)
                if classes is not None:
                    y_val = lrmath.one_vs_rest(y_val, classes[index])
                best, stop_val = _validate(run, t, epoch, hosts, x_val, y_val, suffix)
                stop = stop or stop_val
            if best:
                extra["best_weights"] = run.weights.tolist()
            last_of_class = stop or epoch == params.epochs - 1
            next_class = classes is not None and last_of_class and index < len(classes) - 1
            control: dict[str, str | int | float | bool] = {
                "stop": stop and not next_class,
                "epoch": epoch,
            }
            if validation is not None or classes is not None:
                control.update(best=best, next_class=next_class)
            ctx.federation.send(
                FederationData(kind="plain_control", meta=control),
                to="host",
                tag="epoch_end",
                iteration=t,
            )
            if next_class:
                session.finish_class(run, params.patience > 0, (index + 1) * per_class)
            else:
                extra["stopped"] = stop
        run.save(t)
        done = t + 1
    ctx.metrics.log("iterations", float(done))
    ctx.metrics.log("epochs", float(extra.get("epochs_done", 0)))
    if extra.get("last_loss") is not None:
        ctx.metrics.log("final_loss", float(extra["last_loss"]))


def _validate(
    run: Training,
    t: int,
    epoch: int,
    hosts: list[str],
    x_val: Floats,
    y_val: Floats,
    suffix: str,
) -> tuple[bool, bool]:
    """After an epoch: the validation rows' scores (the hosts' partial scores of those rows
    arrive in plaintext), their loss (hetero_lr: log loss and AUC; hetero_linr: half mean
    squared error and RMSE) as metrics; (whether this epoch is the best
    so far, whether validation early stopping ends the run or class)."""
    ctx, params = run.ctx, run.params
    z = x_val @ run.weights
    for host in hosts:
        got = ctx.federation.recv(frm=host, tag="validate_scores", iteration=t)
        if got.array is None or got.array.shape != z.shape:
            raise ShapeMismatchError(
                f"{run.objective.name}: validate_scores from {host} is not ({len(z)},)"
            )
        z = z + np.asarray(got.array, dtype=np.float64)
    loss = run.objective.validate_loss(y_val, z)
    ctx.metrics.log("validate_loss" + suffix, loss, epoch)
    if run.objective is lrmath.SQUARED:
        ctx.metrics.log("validate_rmse", float(np.sqrt(2.0 * loss)), epoch)
    elif 0 < y_val.sum() < len(y_val):
        auc = binary_metrics(y_val == 1.0, z, threshold=0.0, curve_points=2).auc
        ctx.metrics.log("validate_auc" + suffix, auc, epoch)
    patience = lrmath.Patience.restore(run.extra.get("patience"), params.patience, params.min_delta)
    best, stop = patience.update(loss, epoch)
    run.extra["patience"] = patience.state()
    return best, stop


def _taylor(
    run: Training,
    t: int,
    hosts: list[str],
    xb: Floats,
    yb: Floats,
    u_g: Floats,
    k_hosts: Mapping[str, int],
    iterations_left: int,
) -> tuple[Floats, float]:
    """One iteration of the Taylor protocol; the guest's gradient and the batch's loss."""
    he, ctx, objective = run.he, run.ctx, run.objective
    b, k_g = len(yb), xb.shape[1]
    several = len(hosts) > 1
    v = objective.residual_part(u_g, yb)
    precision = SHARED_PRECISION if several else None
    run.resume.send_ciphertexts(
        "residual", t, lambda: (he.encrypt(v, precision=precision), {}), to="host"
    )
    he.prefetch(iterations_left)
    design = np.hstack([xb, objective.label_column(yb)[:, None], u_g[:, None]])
    # encrypted_dot quantises a matrix on one grid (2^-24 of its largest entry): each column is
    # first brought to magnitude <= 1 by a power of two (exact), so that small columns (the
    # features) keep their precision next to large ones (hetero_linr's labels and u_g).
    scales = lrmath.column_scales(design)
    design = design / scales
    sent: dict[str, dict[str, Any]] = {}
    for host in hosts:
        u_h = he.recv_ciphertexts("host_scores", t, host, he.peer_keys[host], b)

        def guest_gradient(
            u_h: EncryptedVector = u_h, host: str = host
        ) -> tuple[EncryptedVector, dict[str, Any]]:
            # [[A^T u_h + R_g]]: the guest's gradient term and two loss aggregates, masked
            vec = encrypted_dot(design, u_h, executor=he.executor)
            return he.masked(vec, f"guest_gradient:{host}", t)

        sent[host] = run.resume.send_ciphertexts(
            "guest_gradient", t, guest_gradient, to=host, key=f"guest_gradient:{host}"
        )
    for host in hosts:
        he.decrypt_for_peer("host_gradient", t, "host_gradient_masked", host, k_hosts[host])
    from_hosts = np.zeros(k_g + 2)
    u_h_sq = 0.0
    for host in hosts:
        from_hosts += scales * he.unmask(
            sent[host], "guest_gradient_masked", t, host, f"guest_gradient:{host}"
        )
        sq = ctx.federation.recv(frm=host, tag="host_score_sq", iteration=t)
        u_h_sq += float(np.asarray(sq.array, dtype=np.float64)) if sq.array is not None else 0
        if several:
            # sum over the other hosts h' of u_h . (host_coef u_h'), an aggregate for the loss
            cross = he.recv_ciphertexts("host_cross", t, host, he.public_key, 1)
            ctx.federation.authorize_decrypt("host_cross", t, frm=host)
            u_h_sq += float(he.private_key.decrypt(cross)[0]) / objective.host_coef
    gradient = (xb.T @ v + objective.host_coef * from_hosts[:k_g]) / b
    loss = objective.batch_loss(yb, u_g, float(from_hosts[k_g]), float(from_hosts[k_g + 1]), u_h_sq)
    return gradient, loss


def _separable(
    run: Training,
    t: int,
    host: str,
    xb: Floats,
    yb: Floats,
    u_g: Floats,
    k_hosts: Mapping[str, int],
    iterations_left: int,
) -> tuple[Floats, float]:
    """One iteration with the separable sigmoid, d = a_0(u_g) - y + sum_j a_j(u_g) b_j(u_h):
    the guest sends [[a_0 - y; a_1; ...]] (its factors, rows stacked) under its key, the host
    [[b_1; ...; u_h]] under its own; each side multiplies the other's ciphertexts by plaintext
    built from its own factors. The Taylor loss's aggregates come from the u_h block, as in
    the Taylor protocol."""
    he, ctx, objective = run.he, run.ctx, run.objective
    b, k_g = len(yb), xb.shape[1]
    rank = lrmath.SEPARABLE_RANK
    factors = lrmath.separable_guest(u_g)
    factors[0] = factors[0] - yb
    run.resume.send_ciphertexts("residual", t, lambda: (he.encrypt(factors.ravel()), {}), to="host")
    he.prefetch(iterations_left)
    # [[b_1 .. b_rank, u_h]] (rows stacked) times [X_g a_j | 0 ; 0 | y', u_g]
    design = np.zeros(((rank + 1) * b, k_g + 2))
    for j in range(rank):
        design[j * b : (j + 1) * b, :k_g] = xb * factors[j + 1][:, None]
    design[rank * b :, k_g] = objective.label_column(yb)
    design[rank * b :, k_g + 1] = u_g
    scales = lrmath.column_scales(design)
    design = design / scales
    scores = he.recv_ciphertexts("host_scores", t, host, he.peer_keys[host], (rank + 1) * b)

    def guest_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        vec = encrypted_dot(design, scores, executor=he.executor)
        return he.masked(vec, f"guest_gradient:{host}", t)

    sent = run.resume.send_ciphertexts(
        "guest_gradient", t, guest_gradient, to=host, key=f"guest_gradient:{host}"
    )
    he.decrypt_for_peer("host_gradient", t, "host_gradient_masked", host, k_hosts[host])
    from_host = scales * he.unmask(sent, "guest_gradient_masked", t, host, f"guest_gradient:{host}")
    sq = ctx.federation.recv(frm=host, tag="host_score_sq", iteration=t)
    u_h_sq = float(np.asarray(sq.array, dtype=np.float64)) if sq.array is not None else 0.0
    gradient = (xb.T @ factors[0] + from_host[:k_g]) / b
    loss = objective.batch_loss(yb, u_g, float(from_host[k_g]), float(from_host[k_g + 1]), u_h_sq)
    return gradient, loss


def _revealed(
    run: Training,
    t: int,
    hosts: list[str],
    xb: Floats,
    yb: Floats,
    u_g: Floats,
    k_hosts: Mapping[str, int],
    iterations_left: int,
) -> tuple[Floats, float]:
    """One iteration with `reveal_host_scores`: the hosts' partial scores arrive in plaintext,
    the residual is the exact sigmoid's, and only the hosts' gradients go through Paillier
    (one key, the guest's). Returns the guest's gradient and the batch's log loss."""
    he, ctx = run.he, run.ctx
    b = len(yb)
    z = u_g.copy()
    for host in hosts:
        got = ctx.federation.recv(frm=host, tag="host_scores_revealed", iteration=t)
        if got.array is None or got.array.shape != (b,):
            raise ShapeMismatchError(f"hetero_lr: host_scores_revealed from {host} is not ({b},)")
        z += np.asarray(got.array, dtype=np.float64)
    d = lrmath.sigmoid(z) - yb
    run.resume.send_ciphertexts("residual", t, lambda: (he.encrypt(d), {}), to="host")
    he.prefetch(iterations_left)
    for host in hosts:
        he.decrypt_for_peer("host_gradient", t, "host_gradient_masked", host, k_hosts[host])
    return xb.T @ d / b, lrmath.logistic_loss(yb, z)
