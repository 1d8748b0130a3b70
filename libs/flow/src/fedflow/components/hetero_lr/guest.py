"""hetero_lr at the guest: orchestration only (the arithmetic is math.py, the crypto plumbing
fedflow.kit). The exchange, step by step, is in the package docstring."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from fedcrypto import EncryptedVector, ShapeMismatchError, encrypted_dot
from fedschemas import FederationData

from fedflow.components import CATALOGUE
from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr import session
from fedflow.components.hetero_lr.protocol import MAX_HOSTS
from fedflow.components.hetero_lr.session import INTERCEPT, SHARED_PRECISION, Training
from fedflow.kit.loop import LossWatch, iterations, timed
from fedflow.kit.threads import crypto_threads
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

Floats = lrmath.Floats
Objective = lrmath.Objective


def train(ctx: ComponentContext) -> Mapping[str, Table]:
    return train_with(ctx, lrmath.LOGISTIC)


def _labels(table: Table, objective: Objective) -> Floats:
    """The guest's labels, refused unless they fit the model's declared LabelRule."""
    name = objective.name
    if table.labels is None:
        raise TableError(f"{name}: the guest's input has no label column")
    labels = np.asarray(table.labels, dtype=np.float64)
    problem = CATALOGUE[name].labels["guest"].problem(np.unique(labels).tolist())
    if problem is not None:
        raise ValueError(f"{name} {problem} in label column {table.label_name!r}")
    return labels


def train_with(ctx: ComponentContext, objective: Objective) -> Mapping[str, Table]:
    """The guest's training of `objective` (hetero_lr's, or hetero_linr's squared loss)."""
    table = ctx.input("data")
    labels = _labels(table, objective)
    hosts = list(ctx.parties.get("host", []))
    if not 1 <= len(hosts) <= MAX_HOSTS:
        raise ValueError(f"{objective.name}: needs 1 to {MAX_HOSTS} hosts ({len(hosts)} given)")
    own = session.features(table)
    session.warn_unscaled(ctx, own, list(table.feature_names), objective.name)
    x = lrmath.with_intercept(own)
    with crypto_threads(ctx) as (executor, background):
        # Key generation, fixed-base precomputation and the key exchange (or a checkpoint load).
        with timed(ctx, "setup_seconds"):
            run = session.start(ctx, x, hosts, executor, objective)
        try:
            with timed(ctx, "train_seconds"):
                _train(ctx, run, x, labels, hosts, background)
        finally:
            run.he.close()
    return {"model": session.model_table([*table.feature_names, INTERCEPT], run.weights)}


def _train(
    ctx: ComponentContext,
    run: Training,
    x: Floats,
    labels: Floats,
    hosts: list[str],
    background: Any,
) -> None:
    params, he, extra, objective = run.params, run.he, run.extra, run.objective
    rows_total, k_g = x.shape
    k_hosts = {h: int(k) for h, k in extra["peer_features"].items()}
    session.check_batch(params, rows_total, k_g, max(k_hosts.values()), objective.name)
    ctx.federation.bind_dims(k_g2=k_g + 2)
    penalty = lrmath.intercept_penalty(k_g)
    per_epoch = len(lrmath.batches(rows_total, params.batch_size, params.seed, 0))
    total = params.epochs * per_epoch
    # One encryption under our key per row of a batch (the residual), in either mode.
    largest = lrmath.largest_batch(rows_total, params.batch_size)
    he.start_prefetch(background, largest, total - run.start)
    loss_sum = float(extra.get("loss_sum", 0.0))
    last_loss = extra.get("last_loss")
    watch = LossWatch.restore(
        extra.get("watch"),
        objective.name,
        session.advice(params, objective.name),
        tol=params.tol,
        early_stop=params.early_stop,
    )
    if watch.last is None and last_loss is not None:  # a checkpoint from before the watch
        watch.last = float(last_loss)
    done = run.start
    for t in iterations(ctx, run.start, total, lambda: run.stopped):
        epoch, position = divmod(t, per_epoch)
        rows = lrmath.batches(rows_total, params.batch_size, params.seed, epoch)[position]
        xb, yb = x[rows], labels[rows]
        u_g = xb @ run.weights
        if params.reveal_host_scores:
            gradient, batch_loss = _revealed(run, t, hosts, xb, yb, u_g, k_hosts, total - t - 1)
        else:
            gradient, batch_loss = _taylor(run, t, hosts, xb, yb, u_g, k_hosts, total - t - 1)
        loss_sum += batch_loss
        # Every iteration, before the step: a diverging model is stopped with a clear error
        # while its numbers still fit a float (an epoch can be many orders of magnitude).
        watch.batch(batch_loss / len(rows), epoch=epoch, iteration=t)
        run.weights = lrmath.sgd_step(run.weights, gradient, run.rate(t), params.alpha, penalty)
        if position == per_epoch - 1:
            loss = loss_sum / rows_total
            ctx.metrics.log("loss", loss, epoch)
            stop = watch.epoch(loss, epoch=epoch)
            ctx.federation.send(
                FederationData(kind="plain_control", meta={"stop": stop, "epoch": epoch}),
                to="host",
                tag="epoch_end",
                iteration=t,
            )
            last_loss, loss_sum = loss, 0.0
            extra["stopped"] = stop
            extra["epochs_done"] = epoch + 1
        extra["loss_sum"], extra["last_loss"] = loss_sum, last_loss
        extra["watch"] = watch.state()
        run.save(t)
        done = t + 1
    ctx.metrics.log("iterations", float(done))
    ctx.metrics.log("epochs", float(extra.get("epochs_done", 0)))
    if last_loss is not None:
        ctx.metrics.log("final_loss", float(last_loss))


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
