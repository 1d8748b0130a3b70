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
from fedflow.kit.loop import iterations
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
    session.warn_unscaled(ctx, x, list(table.feature_names), objective.name)
    with crypto_threads(ctx) as (executor, background):
        run = session.start(ctx, x, [guest], executor, objective)
        try:
            _train(ctx, run, x, guest, others, background)
        finally:
            run.he.close()
    return {"model": session.model_table(list(table.feature_names), run.weights)}


def _train(
    ctx: ComponentContext,
    run: Training,
    x: Floats,
    guest: str,
    others: list[str],
    background: Any,
) -> None:
    params, he, extra = run.params, run.he, run.extra
    rows_total, k_h = x.shape
    k_g = int(extra["peer_features"][guest])
    session.check_batch(params, rows_total, k_g, k_h, run.objective.name)
    ctx.federation.bind_dims(k_g2=k_g + 2)
    per_epoch = len(lrmath.batches(rows_total, params.batch_size, params.seed, 0))
    total = params.epochs * per_epoch
    if not params.reveal_host_scores:  # that mode encrypts nothing under the host's key
        largest = lrmath.largest_batch(rows_total, params.batch_size)
        he.start_prefetch(background, largest, total - run.start)
    done = run.start
    for t in iterations(ctx, run.start, total, lambda: run.stopped):
        epoch, position = divmod(t, per_epoch)
        rows = lrmath.batches(rows_total, params.batch_size, params.seed, epoch)[position]
        xb = x[rows]
        u_h = xb @ run.weights
        if params.reveal_host_scores:
            gradient = _revealed(run, t, guest, xb, u_h)
        else:
            gradient = _taylor(run, t, guest, others, xb, u_h, total - t - 1)
        run.weights = lrmath.sgd_step(run.weights, gradient, run.rate(t), params.alpha)
        if position == per_epoch - 1:
            control = ctx.federation.recv(frm=guest, tag="epoch_end", iteration=t)
            extra["stopped"] = bool(control.meta.get("stop", False))
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
