"""hetero_lr at a host: orchestration only (the arithmetic is math.py, the crypto plumbing
fedflow.kit). The exchange, step by step, is in the package docstring."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from fedcrypto import EncryptedVector, encrypted_dot
from fedschemas import FederationData

from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr import session
from fedflow.components.hetero_lr.session import SHARED_PRECISION, Training
from fedflow.kit.threads import crypto_threads
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

Floats = lrmath.Floats


def train(ctx: ComponentContext) -> Mapping[str, Table]:
    return train_with(ctx, lrmath.LOGISTIC)


def train_with(ctx: ComponentContext, objective: lrmath.Objective) -> Mapping[str, Table]:
    """A host's training of `objective` (hetero_lr's, or hetero_linr's squared loss)."""
    table = ctx.input("data")
    guest = ctx.parties["guest"][0]
    others = [h for h in ctx.parties.get("host", []) if h != ctx.party_id]
    x = session.features(table)
    names = list(table.feature_names)
    session.warn_unscaled(ctx, x, names, objective.name)
    validation = session.validation_features(ctx, names, objective.name)
    meta = {} if validation is None else {"validate_rows": validation.rows}
    with crypto_threads(ctx) as (executor, background):
        run = session.start(ctx, x, [guest], executor, objective, meta=meta)
        said = run.extra.get("peer_meta", {}).get(guest, {})
        theirs, ours = int(said.get("validate_rows", 0)), int(meta.get("validate_rows", 0))
        if theirs != ours:
            raise ValueError(
                f"{objective.name}: validate_data has {ours} rows at host {ctx.party_id} and "
                f"{theirs} at the guest: give every party a validate_data input with the same "
                "rows (aligned by psi), or none"
            )
        classes = int(said.get("classes", 0))
        try:
            _train(ctx, run, x, guest, others, background, classes, validation)
        finally:
            run.he.close()
    keep_best = run.params.patience > 0
    if not classes:
        return {"model": session.model_table(names, session.chosen_weights(run, keep_best))}
    per_class = [*run.extra.get("class_weights", [])]
    if len(per_class) < classes:
        per_class.append(session.chosen_weights(run, keep_best).tolist())
    # The host knows how many classes there are, not their values: columns by class index.
    columns = [f"weight_{index}" for index in range(classes)]
    return {
        "model": session.class_model_table(names, np.array(per_class, dtype=np.float64).T, columns)
    }


def _train(
    ctx: ComponentContext,
    run: Training,
    x: Floats,
    guest: str,
    others: list[str],
    background: Any,
    classes: int = 0,
    validation: Table | None = None,
) -> None:
    params, he, extra = run.params, run.he, run.extra
    rows_total, k_h = x.shape
    k_g = int(extra["peer_features"][guest])
    session.check_batch(params, rows_total, k_g, k_h, run.objective.name)
    ctx.federation.bind_dims(k_g2=k_g + 2)
    per_epoch = len(lrmath.batches(rows_total, params.batch_size, params.seed, 0))
    per_class = params.epochs * per_epoch
    total = max(classes, 1) * per_class
    x_val = None if validation is None else session.features(validation)
    sigmoid = lrmath.resolve_sigmoid(params.sigmoid, 1 + len(others))
    if sigmoid == "separable" and others:
        raise ValueError(
            f"{run.objective.name}: sigmoid separable takes exactly one host "
            f"({1 + len(others)} given; sigmoid auto, the default, uses taylor with several hosts)"
        )
    separable = sigmoid == "separable" and not params.reveal_host_scores
    if not params.reveal_host_scores:  # that mode encrypts nothing under the host's key
        largest = lrmath.largest_batch(rows_total, params.batch_size)
        if separable:
            largest *= lrmath.SEPARABLE_RANK + 1
        he.start_prefetch(background, largest, total - run.start)
    done = run.start
    for t in session.class_iterations(ctx, run, total):
        index, within = divmod(t, per_class)
        epoch, position = divmod(within, per_epoch)
        rows = lrmath.batches(rows_total, params.batch_size, params.seed, epoch)[position]
        xb = x[rows]
        u_h = xb @ run.weights
        if params.reveal_host_scores:
            gradient = _revealed(run, t, guest, xb, u_h)
        elif separable:
            gradient = _separable(run, t, guest, xb, u_h, total - t - 1)
        else:
            gradient = _taylor(run, t, guest, others, xb, u_h, total - t - 1)
        run.weights = lrmath.sgd_step(run.weights, gradient, run.rate(within), params.alpha)
        if position == per_epoch - 1:
            if x_val is not None:
                # This party's partial scores of the validation rows, in plaintext (as
                # hetero_lr_predict sends them): the guest's validation loss and early stopping.
                ctx.federation.send(
                    FederationData(kind="partial_score", array=x_val @ run.weights),
                    to=guest,
                    tag="validate_scores",
                    iteration=t,
                )
            control = ctx.federation.recv(frm=guest, tag="epoch_end", iteration=t).meta
            if control.get("best", False):
                extra["best_weights"] = run.weights.tolist()
            if control.get("next_class", False) and index < classes - 1:
                session.finish_class(run, params.patience > 0, (index + 1) * per_class)
            else:
                extra["stopped"] = bool(control.get("stop", False))
        run.save(t)
        done = t + 1
    ctx.metrics.log("iterations", float(done))


def _taylor(
    run: Training,
    t: int,
    guest: str,
    others: list[str],
    xb: Floats,
    u_h: Floats,
    iterations_left: int,
) -> Floats:
    """One iteration of the Taylor protocol; this host's gradient."""
    he, ctx, coef = run.he, run.ctx, run.objective.host_coef
    b = len(u_h)
    guest_key = he.peer_keys[guest]
    run.resume.send_ciphertexts("host_scores", t, lambda: (he.encrypt(u_h), {}), to=guest)
    he.prefetch(iterations_left)
    if others:
        # [[host_coef u_h]] (hetero_lr: u_h / 4) under the guest's key: the other hosts add
        # it to their residual.
        run.resume.send_ciphertexts(
            "peer_scores",
            t,
            lambda: (he.encrypt(coef * u_h, key=guest_key, precision=SHARED_PRECISION), {}),
            to="host",
        )
    d = he.recv_ciphertexts("residual", t, guest, guest_key, b)
    peer_scores = [he.recv_ciphertexts("peer_scores", t, other, guest_key, b) for other in others]
    for scores in peer_scores:
        d = d + scores  # same exponent (SHARED_PRECISION): no re-scaling

    def host_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        # [[X_h^T d + R_h]]: X_h^T [[v]] plus the host's own host_coef X_h^T u_h, masked
        vec = encrypted_dot(xb, d, executor=he.executor) + coef * (xb.T @ u_h)
        return he.masked(vec, "host_gradient", t)

    sent = run.resume.send_ciphertexts("host_gradient", t, host_gradient, to=guest)
    if others:

        def host_cross() -> tuple[EncryptedVector, dict[str, Any]]:
            total_cross = encrypted_dot(u_h[:, None], peer_scores[0])
            for scores in peer_scores[1:]:
                total_cross = total_cross + encrypted_dot(u_h[:, None], scores)
            # Sent to the key holder: re-randomised first.
            return total_cross.obfuscate(executor=he.executor), {}

        run.resume.send_ciphertexts("host_cross", t, host_cross, to=guest)
    he.decrypt_for_peer("guest_gradient", t, "guest_gradient_masked", guest)
    ctx.federation.send(
        FederationData(kind="aggregate", array=np.array(float(u_h @ u_h))),
        to=guest,
        tag="host_score_sq",
        iteration=t,
    )
    return he.unmask(sent, "host_gradient_masked", t, guest, "host_gradient") / b


def _separable(
    run: Training, t: int, guest: str, xb: Floats, u_h: Floats, iterations_left: int
) -> Floats:
    """The separable sigmoid (guest.py's _separable): send [[b_1; ...; b_rank; u_h]] under
    our key, answer the guest's [[a_0 - y; a_1; ...]] with [[X_h^T d + R_h]], d = a_0 - y +
    sum_j a_j b_j(u_h) (rows stacked: X_h, then X_h scaled by each b_j)."""
    he, ctx = run.he, run.ctx
    b = len(u_h)
    rank = lrmath.SEPARABLE_RANK
    factors = lrmath.separable_host(u_h)
    ours = np.concatenate([factors.ravel(), u_h])
    run.resume.send_ciphertexts("host_scores", t, lambda: (he.encrypt(ours), {}), to=guest)
    he.prefetch(iterations_left)
    theirs = he.recv_ciphertexts("residual", t, guest, he.peer_keys[guest], (rank + 1) * b)
    stacked = np.vstack([xb, *(xb * factors[j][:, None] for j in range(rank))])

    def host_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        return he.masked(encrypted_dot(stacked, theirs, executor=he.executor), "host_gradient", t)

    sent = run.resume.send_ciphertexts("host_gradient", t, host_gradient, to=guest)
    he.decrypt_for_peer("guest_gradient", t, "guest_gradient_masked", guest)
    ctx.federation.send(
        FederationData(kind="aggregate", array=np.array(float(u_h @ u_h))),
        to=guest,
        tag="host_score_sq",
        iteration=t,
    )
    return he.unmask(sent, "host_gradient_masked", t, guest, "host_gradient") / b


def _revealed(run: Training, t: int, guest: str, xb: Floats, u_h: Floats) -> Floats:
    """`reveal_host_scores`: send u_h in plaintext; answer [[d]] with [[X_h^T d + R_h]]."""
    he, ctx = run.he, run.ctx
    ctx.federation.send(
        FederationData(kind="partial_score", array=u_h),
        to=guest,
        tag="host_scores_revealed",
        iteration=t,
    )
    d = he.recv_ciphertexts("residual", t, guest, he.peer_keys[guest], len(u_h))

    def host_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        return he.masked(encrypted_dot(xb, d, executor=he.executor), "host_gradient", t)

    sent = run.resume.send_ciphertexts("host_gradient", t, host_gradient, to=guest)
    return he.unmask(sent, "host_gradient_masked", t, guest, "host_gradient") / len(u_h)
