"""hetero_lr at a host: orchestration only (the arithmetic is math.py, the crypto plumbing
fedflow.kit). The exchange, step by step, is in the package docstring."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fedcrypto import EncryptedVector, encrypted_dot
from fedschemas import FederationData

from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr import packing, session
from fedflow.components.hetero_lr.lanes import join_lanes
from fedflow.components.hetero_lr.session import SHARED_PRECISION, Training
from fedflow.kit.alignment import check_alignment
from fedflow.kit.inputs import check_linear_inputs
from fedflow.kit.loop import iterations
from fedflow.kit.threads import crypto_threads
from fedflow.tables import Table

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

Floats = lrmath.Floats


def train(ctx: ComponentContext) -> Mapping[str, Table]:
    # This party's own tables first (rows, magnitudes, empty columns: fedflow.kit.inputs),
    # then one round trip that the parties' rows are the same ids in the same order
    # (fedflow.kit.alignment); hetero_linr's wrappers do the same before train_with.
    check_linear_inputs(ctx, lrmath.LOGISTIC.name)
    check_alignment(ctx)
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
    lanes = max(classes, 1)
    states = session.lane_states(run.extra, lanes, classes > 0)
    weights = session.output_weights(run, states, run.params.patience > 0)
    if not classes:
        return {"model": session.model_table(names, weights[:, 0])}
    # The host knows how many classes there are, not their values: columns by class index.
    columns = [f"weight_{index}" for index in range(classes)]
    return {"model": session.class_model_table(names, weights, columns)}


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
    """The training loop. One lane per class (lanes.py): with `classes`, every batch trains
    all the classes the guest still trains in one exchange; without, the binary model."""
    params, he, extra = run.params, run.he, run.extra
    rows_total, k_h = x.shape
    k_g = int(extra["peer_features"][guest])
    session.check_batch(params, rows_total, k_g, k_h, run.objective.name)
    lanes = max(classes, 1)
    states = session.lane_states(extra, lanes, classes > 0)
    ctx.federation.bind_dims(k_g2=lanes * (k_g + 2), classes=lanes)
    per_epoch = len(lrmath.batches(rows_total, params.batch_size, params.seed, 0))
    total = params.epochs * per_epoch
    x_val = None if validation is None else session.features(validation)
    sigmoid = lrmath.resolve_sigmoid(params.sigmoid, 1 + len(others))
    if sigmoid == "separable" and others:
        raise ValueError(
            f"{run.objective.name}: sigmoid separable takes exactly one host "
            f"({1 + len(others)} given; sigmoid auto, the default, uses taylor with several hosts)"
        )
    separable = sigmoid == "separable" and not params.reveal_host_scores
    largest = lrmath.largest_batch(rows_total, params.batch_size)
    per_lane = largest * (lrmath.SEPARABLE_RANK + 1 if separable else 1)
    slots = None
    if packing.packs(lanes if classes else 1, 1 + len(others), sigmoid, params.reveal_host_scores):
        slots = packing.slots_for(he.peer_keys[guest], largest)
    if not params.reveal_host_scores:  # that mode encrypts nothing under the host's key
        active = session.active_lanes(states)
        he.start_prefetch(background, per_lane * len(active), total - run.start)
    done = run.start
    for t in iterations(ctx, run.start, total, stopped=lambda: run.stopped):
        epoch, position = divmod(t, per_epoch)
        active = session.active_lanes(states)
        he.prefetch_count = per_lane * len(active)
        rows = lrmath.batches(rows_total, params.batch_size, params.seed, epoch)[position]
        xb = x[rows]
        weights = session.lane_weights(run, lanes)
        u_h = (xb @ weights).T  # (lanes, b)
        step = Step(run, t, guest, others, xb, u_h, active, total - t - 1, slots)
        if params.reveal_host_scores:
            gradient = _revealed(step)
        elif separable:
            gradient = _separable(step)
        else:
            gradient = _taylor(step)
        for lane in active:
            weights[:, lane] = lrmath.sgd_step(
                weights[:, lane], gradient[:, lane], run.rate(t), params.alpha
            )
        if position == per_epoch - 1:
            if x_val is not None:
                # This party's partial scores of the validation rows, in plaintext (as
                # hetero_lr_predict sends them), lane after lane: the guest's validation loss
                # and early stopping.
                ctx.federation.send(
                    FederationData(kind="partial_score", array=(x_val @ weights).T.ravel()),
                    to=guest,
                    tag="validate_scores",
                    iteration=t,
                )
            control = ctx.federation.recv(frm=guest, tag="epoch_end", iteration=t).meta
            _end_epoch(run, states, control, classes)
        run.save(t)
        done = t + 1
    ctx.metrics.log("iterations", float(done))


def _end_epoch(
    run: Training, states: list[dict[str, Any]], control: Mapping[str, Any], classes: int
) -> None:
    """The guest's epoch_end: which lanes keep this epoch's weights as their best, which are
    frozen from now on (per class, one character each, with classes), whether to stop."""
    weights = session.lane_weights(run, len(states))
    if not classes:
        if control.get("best", False):
            states[0]["best_weights"] = weights[:, 0].tolist()
        run.extra["stopped"] = bool(control.get("stop", False))
        return
    best, frozen = str(control.get("best", "")), str(control.get("frozen", ""))
    if len(best) != classes or len(frozen) != classes:
        raise ValueError(
            f"{run.objective.name}: epoch_end names {len(frozen)} class lanes, not {classes}"
        )
    for lane, state in enumerate(states):
        if best[lane] == "1":
            state["best_weights"] = weights[:, lane].tolist()
        if frozen[lane] == "1":
            state["frozen"] = True
    run.extra["stopped"] = bool(control.get("stop", False))


@dataclass(frozen=True)
class Step:
    """One iteration's inputs at a host: the batch's rows, this host's partial scores of
    every class lane (u_h: (lanes, b)), and which lanes are active (lanes.py)."""

    run: Training
    t: int
    guest: str
    others: list[str]
    xb: Floats
    u_h: Floats
    active: list[int]
    iterations_left: int
    slots: packing.Slots | None = None
    """With one-vs-rest, the Taylor line and one host: the guest's residual packing."""

    @property
    def lanes(self) -> int:
        return int(self.u_h.shape[0])

    @property
    def b(self) -> int:
        return int(self.u_h.shape[1])


def _send_score_squares(step: Step) -> None:
    """Per lane, sum over the batch of u_h^2 (the Taylor loss's): one scalar for the binary
    model (host_score_sq), one per class lane with classes (host_class_score_sq; 0 for a
    frozen lane)."""
    squares = np.zeros(step.lanes)
    for lane in step.active:
        squares[lane] = float(step.u_h[lane] @ step.u_h[lane])
    binary = step.lanes == 1
    step.run.ctx.federation.send(
        FederationData(kind="aggregate", array=np.array(squares[0]) if binary else squares),
        to=step.guest,
        tag="host_score_sq" if binary else "host_class_score_sq",
        iteration=step.t,
    )


def _gradients(step: Step, unmasked: Floats) -> Floats:
    """This host's gradients (features, lanes) from the unmasked X_h^T d of every lane."""
    return np.asarray(unmasked.reshape(step.lanes, -1).T / step.b, dtype=np.float64)


def _taylor(step: Step) -> Floats:
    """One iteration of the Taylor protocol, every active lane in the same messages; this
    host's gradients (features, lanes)."""
    run, t, guest, others, active = step.run, step.t, step.guest, step.others, step.active
    he, coef = run.he, run.objective.host_coef
    b, xb, k_h = step.b, step.xb, step.xb.shape[1]
    guest_key = he.peer_keys[guest]
    scores = step.u_h[active]  # (active, b)
    run.resume.send_ciphertexts(
        "host_scores", t, lambda: (he.encrypt(scores.ravel()), {}), to=guest
    )
    he.prefetch(step.iterations_left)
    if others:
        # [[host_coef u_h]] (hetero_lr: u_h / 4) under the guest's key: the other hosts add
        # it to their residual.
        run.resume.send_ciphertexts(
            "peer_scores",
            t,
            lambda: (
                he.encrypt(coef * scores.ravel(), key=guest_key, precision=SHARED_PRECISION),
                {},
            ),
            to="host",
        )
    if step.slots is not None:
        return _taylor_packed(step, step.slots, scores)
    rows = len(active) * b
    d = he.recv_ciphertexts("residual", t, guest, guest_key, rows)
    peer_scores = [
        he.recv_ciphertexts("peer_scores", t, other, guest_key, rows) for other in others
    ]
    for peer in peer_scores:
        d = d + peer  # same exponent (SHARED_PRECISION): no re-scaling

    def host_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        # [[X_h^T d + R_h]] per lane: X_h^T [[v]] plus the host's own host_coef X_h^T u_h,
        # masked
        parts = [
            encrypted_dot(xb, d[i * b : (i + 1) * b], executor=he.executor)
            + coef * (xb.T @ scores[i])
            for i in range(len(active))
        ]
        return he.masked(join_lanes(parts, active, step.lanes, k_h, guest_key), "host_gradient", t)

    sent = run.resume.send_ciphertexts("host_gradient", t, host_gradient, to=guest)
    if others:
        run.resume.send_ciphertexts(
            "host_cross", t, lambda: (_host_cross(step, scores, peer_scores), {}), to=guest
        )
    he.decrypt_for_peer("guest_gradient", t, "guest_gradient_masked", guest)
    _send_score_squares(step)
    return _gradients(step, he.unmask(sent, "host_gradient_masked", t, guest, "host_gradient"))


def _host_cross(step: Step, scores: Floats, peer_scores: list[EncryptedVector]) -> EncryptedVector:
    """Per lane, [[sum over the other hosts h' of u_h . (host_coef u_h')]] under the guest's
    key (the loss's cross terms; Enc(0) for a frozen lane). The guest decrypts it, so it is
    re-randomised first."""
    he, b = step.run.he, step.b
    guest_key = he.peer_keys[step.guest]
    parts = []
    for i in range(len(step.active)):
        lane = slice(i * b, (i + 1) * b)
        total = encrypted_dot(scores[i][:, None], peer_scores[0][lane])
        for peer in peer_scores[1:]:
            total = total + encrypted_dot(scores[i][:, None], peer[lane])
        parts.append(total)
    joined = join_lanes(parts, step.active, step.lanes, 1, guest_key)
    return joined.obfuscate(executor=he.executor)


def _taylor_packed(step: Step, slots: packing.Slots, scores: Floats) -> Floats:
    """The Taylor protocol's host side with the guest's residual packed (packing.py): one
    multi-exponentiation per group of classes gives each class's X_h^T v_k in its slot; the
    host adds its own host_coef X_h^T u_h^k after unpacking."""
    run, t, guest, active = step.run, step.t, step.guest, step.active
    he, coef, b, xb = run.he, run.objective.host_coef, step.b, step.xb
    guest_key = he.peer_keys[guest]
    groups = slots.groups(active)
    d = he.recv_ciphertexts("residual", t, guest, guest_key, len(groups) * b)

    def host_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        parts = [
            encrypted_dot(xb, d[g * b : (g + 1) * b], executor=he.executor)
            for g in range(len(groups))
        ]
        joined = join_lanes(parts, range(len(groups)), len(groups), xb.shape[1], guest_key)
        return he.masked(joined, "host_gradient", t)

    sent = run.resume.send_ciphertexts("host_gradient", t, host_gradient, to=guest)
    he.decrypt_for_peer("guest_gradient", t, "guest_gradient_masked", guest)
    _send_score_squares(step)
    products = packing.unmask_packed(
        he, sent, "host_gradient_masked", t, guest, "host_gradient", slots, groups, step.lanes
    )
    for i, lane in enumerate(active):
        products[lane] += coef * (xb.T @ scores[i])
    return _gradients(step, products)


def _separable(step: Step) -> Floats:
    """The separable sigmoid (guest.py's _separable), per active lane: send [[b_1; ...;
    b_rank; u_h]] under our key, answer the guest's [[a_0 - y; a_1; ...]] with [[X_h^T d +
    R_h]], d = a_0 - y + sum_j a_j b_j(u_h) (rows stacked: X_h, then X_h scaled by each
    b_j)."""
    run, t, guest, active = step.run, step.t, step.guest, step.active
    he, b, xb = run.he, step.b, step.xb
    rank = lrmath.SEPARABLE_RANK
    height = (rank + 1) * b
    factors = [lrmath.separable_host(step.u_h[lane]) for lane in active]
    ours = (
        np.concatenate(
            [
                np.concatenate([f.ravel(), step.u_h[lane]])
                for f, lane in zip(factors, active, strict=True)
            ]
        )
        if active
        else np.zeros(0)
    )
    run.resume.send_ciphertexts("host_scores", t, lambda: (he.encrypt(ours), {}), to=guest)
    he.prefetch(step.iterations_left)
    guest_key = he.peer_keys[guest]
    theirs = he.recv_ciphertexts("residual", t, guest, guest_key, len(active) * height)
    stacked = [np.vstack([xb, *(xb * f[j][:, None] for j in range(rank))]) for f in factors]

    def host_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        parts = [
            encrypted_dot(s, theirs[i * height : (i + 1) * height], executor=he.executor)
            for i, s in enumerate(stacked)
        ]
        joined = join_lanes(parts, active, step.lanes, xb.shape[1], guest_key)
        return he.masked(joined, "host_gradient", t)

    sent = run.resume.send_ciphertexts("host_gradient", t, host_gradient, to=guest)
    he.decrypt_for_peer("guest_gradient", t, "guest_gradient_masked", guest)
    _send_score_squares(step)
    return _gradients(step, he.unmask(sent, "host_gradient_masked", t, guest, "host_gradient"))


def _revealed(step: Step) -> Floats:
    """`reveal_host_scores`: send every active lane's u_h in plaintext; answer [[d]] with
    [[X_h^T d + R_h]] per lane."""
    run, t, guest, active = step.run, step.t, step.guest, step.active
    he, ctx, b, xb = run.he, run.ctx, step.b, step.xb
    ctx.federation.send(
        FederationData(kind="partial_score", array=step.u_h[active].ravel()),
        to=guest,
        tag="host_scores_revealed",
        iteration=t,
    )
    guest_key = he.peer_keys[guest]
    d = he.recv_ciphertexts("residual", t, guest, guest_key, len(active) * b)

    def host_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        parts = [
            encrypted_dot(xb, d[i * b : (i + 1) * b], executor=he.executor)
            for i in range(len(active))
        ]
        joined = join_lanes(parts, active, step.lanes, xb.shape[1], guest_key)
        return he.masked(joined, "host_gradient", t)

    sent = run.resume.send_ciphertexts("host_gradient", t, host_gradient, to=guest)
    return _gradients(step, he.unmask(sent, "host_gradient_masked", t, guest, "host_gradient"))
