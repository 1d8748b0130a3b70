"""hetero_poisson's training at the guest and at the hosts (the exchange is in the package
docstring; the keys, masks and checkpoints are hetero_lr's kit: HeParty, Resumable)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fedcrypto import EncryptedVector, PublicKey, ShapeMismatchError, encrypted_dot
from fedschemas import FederationData

from fedflow.components import CATALOGUE
from fedflow.components.hetero_lr import math as lrmath
from fedflow.components.hetero_lr import session
from fedflow.components.hetero_lr.protocol import MAX_HOSTS
from fedflow.components.hetero_lr.session import INTERCEPT, Training
from fedflow.components.hetero_poisson import HeteroPoissonParams
from fedflow.components.hetero_poisson import math as pmath
from fedflow.kit.alignment import check_alignment
from fedflow.kit.decrypt_check import decrypt_floats
from fedflow.kit.he import HeParty, open_secrets
from fedflow.kit.inputs import check_linear_inputs
from fedflow.kit.loop import LossWatch, iterations, timed
from fedflow.kit.resume import Resumable
from fedflow.kit.threads import crypto_threads
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

NAME = "hetero_poisson"
Floats = lrmath.Floats


def split_exposure(table: Table, column: str | None) -> tuple[Floats, list[str], Floats]:
    """The guest's features without the exposure column, their names, and the exposure
    (ones without a column), refused unless > 0."""
    x, names = session.features(table), list(table.feature_names)
    if column is None:
        return x, names, np.ones(table.rows)
    if column not in names:
        raise TableError(f"{NAME}: exposure column {column!r} is not in the guest's table")
    i = names.index(column)
    exposure = np.asarray(table.features, dtype=np.float64)[:, i]
    pmath.check_exposure(exposure, column, NAME)
    return np.delete(x, i, axis=1), names[:i] + names[i + 1 :], exposure


def _labels(table: Table) -> Floats:
    if table.labels is None:
        raise TableError(f"{NAME}: the guest's input has no label column")
    labels = np.asarray(table.labels, dtype=np.float64)
    problem = CATALOGUE[NAME].labels["guest"].problem(np.unique(labels).tolist())
    if problem is not None:
        raise ValueError(
            f"{NAME} takes counts (non-negative integers) as labels, found "
            f"{problem.split('found ', 1)[-1]} in label column {table.label_name!r}"
        )
    return labels


def _start(
    ctx: ComponentContext,
    x: Floats,
    peers: list[str],
    executor: Executor | None,
    validate_rows: int = 0,
) -> Training:
    """Keys (a sealed task secret), then the key exchange (with this party's feature count and
    validate_data rows), or the last checkpoint's state."""
    params = ctx.params_as(HeteroPoissonParams)
    short = params.insecure_short_keys
    private_key, mask_seed = open_secrets(
        ctx, f"{NAME}.secrets", key_bits=params.key_bits, insecure_short_keys=short
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
        )
        run.resume = Resumable(ctx, run.state, state)
        return run
    metas = he.exchange_keys(
        peers,
        min_bits=min(params.key_bits, 2048),
        insecure_short_keys=short,
        features=x.shape[1],
        validate_rows=validate_rows,
    )
    counts: dict[str, int] = {}
    for peer, meta in metas.items():
        count = meta.get("features")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"{NAME}: {peer} did not say how many features it has")
        counts[peer] = count
        theirs = int(meta.get("validate_rows", 0))
        if theirs != validate_rows:
            raise ValueError(
                f"{NAME}: validate_data has {validate_rows} rows at party {ctx.party_id} and "
                f"{theirs} at {peer}: give every party a validate_data input with the same rows "
                "(aligned by psi), or none"
            )
    return Training(ctx, params, he, np.zeros(x.shape[1]), extra={"peer_features": counts})


@dataclass(frozen=True)
class Chain:
    """The hosts in the order the rates are multiplied (the job's host list, the same at every
    party): the first host's key carries the chain [[r_1 ... r_j]] that ends at the guest, the
    guest's key the chain [[c r_1 ... r_j]] that ends at the last host as [[mu]]."""

    hosts: tuple[str, ...]

    @property
    def key_host(self) -> str:
        return self.hosts[0]

    @property
    def last(self) -> str:
        return self.hosts[-1]

    def position(self, host: str) -> int:
        return self.hosts.index(host)

    def next_of(self, host: str) -> str | None:
        i = self.position(host)
        return self.hosts[i + 1] if i + 1 < len(self.hosts) else None

    def previous_of(self, host: str) -> str | None:
        i = self.position(host)
        return self.hosts[i - 1] if i > 0 else None


def _chain(ctx: ComponentContext) -> Chain:
    hosts = tuple(ctx.parties.get("host", []))
    if not 1 <= len(hosts) <= MAX_HOSTS:
        raise ValueError(f"{NAME}: needs 1 to {MAX_HOSTS} hosts ({len(hosts)} given)")
    if len(set(hosts)) != len(hosts):
        raise ValueError(f"{NAME}: a host is named twice ({', '.join(hosts)})")
    return Chain(hosts)


def _output_weights(run: Training, best: bool) -> Floats:
    """The weights to output: the best validation epoch's (extra["best_weights"], kept by
    the training loops below) when `best` and one was kept, else the current ones."""
    kept = run.extra.get("best_weights")
    if best and kept is not None:
        return np.asarray(kept, dtype=np.float64)
    return np.asarray(run.weights, dtype=np.float64)


# -- guest --------------------------------------------------------------------------------------


def guest(ctx: ComponentContext) -> Mapping[str, Table]:
    params = ctx.params_as(HeteroPoissonParams)
    table = ctx.input("data")
    labels = _labels(table)
    chain = _chain(ctx)
    check_linear_inputs(ctx, NAME, not_features=[params.exposure] if params.exposure else [])
    check_alignment(ctx)
    own, names, exposure = split_exposure(table, params.exposure)
    session.warn_unscaled(ctx, own, names, NAME)
    x = lrmath.with_intercept(own)
    validation = _guest_validation(ctx, params, table)
    with crypto_threads(ctx) as (executor, background):
        with timed(ctx, "setup_seconds"):
            rows = 0 if validation is None else validation.rows
            run = _start(ctx, x, list(chain.hosts), executor, rows)
        if run.start == 0:
            run.weights[-1] = pmath.start_intercept(labels, exposure)
        try:
            with timed(ctx, "train_seconds"):
                _guest_train(ctx, run, x, labels, np.log(exposure), chain, background, validation)
        finally:
            run.he.close()
    weights = _output_weights(run, params.patience > 0)
    return {"model": session.model_table([*names, INTERCEPT], weights)}


@dataclass(frozen=True)
class Validation:
    """The guest's validate_data: its design (with the intercept), log exposure and counts."""

    x: Floats
    log_e: Floats
    labels: Floats

    @property
    def rows(self) -> int:
        return len(self.labels)


def _guest_validation(
    ctx: ComponentContext, params: HeteroPoissonParams, table: Table
) -> Validation | None:
    """The validate_data input at the guest, checked: the training columns, counts, and an
    exposure > 0 where training has one; None without one."""
    found = session.validation_features(ctx, list(table.feature_names), NAME)
    if found is None:
        if params.patience > 0:
            raise ValueError(
                f"{NAME}: patience {params.patience} needs a validate_data input (early "
                "stopping on the validation rows' deviance)"
            )
        return None
    labels = _labels(found)
    own, _, exposure = split_exposure(found, params.exposure)
    return Validation(lrmath.with_intercept(own), np.log(exposure), labels)


def _guest_train(
    ctx: ComponentContext,
    run: Training,
    x: Floats,
    labels: Floats,
    log_e: Floats,
    chain: Chain,
    background: Any,
    validation: Validation | None,
) -> None:
    params, he, extra = run.params, run.he, run.extra
    rows_total, k_g = x.shape
    k_hosts = {h: int(extra["peer_features"][h]) for h in chain.hosts}
    session.check_batch(params, rows_total, k_g, max(k_hosts.values()), NAME)
    ctx.federation.bind_dims(k_g1=k_g)
    if validation is not None:
        ctx.federation.bind_dims(v=validation.rows)
    penalty = lrmath.intercept_penalty(k_g)
    per_epoch = len(lrmath.batches(rows_total, params.batch_size, params.seed, 0))
    total = params.epochs * per_epoch
    largest = lrmath.largest_batch(rows_total, params.batch_size)
    he.start_prefetch(background, 2 * largest, total - run.start)  # [[c]] and [[y]]
    loss_sum, last_loss = float(extra.get("loss_sum", 0.0)), extra.get("last_loss")
    watch = LossWatch.restore(
        extra.get("watch"),
        NAME,
        session.advice(params, NAME),
        tol=params.tol,
        early_stop=params.early_stop,
    )
    done = run.start
    for t in iterations(ctx, run.start, total, lambda: run.stopped):
        epoch, position = divmod(t, per_epoch)
        rows = lrmath.batches(rows_total, params.batch_size, params.seed, epoch)[position]
        xb, yb = x[rows], labels[rows]
        log_c = xb @ run.weights + log_e[rows]
        if not np.all(log_c < pmath.EXP_LIMIT):
            # exp() would overflow: the model diverged (a clear error, before any inf)
            watch.batch(float("inf"), epoch=epoch, iteration=t)
        gradient, batch_loss = _guest_iteration(
            run, t, chain, xb, yb, log_c, k_hosts, total - t - 1
        )
        loss_sum += batch_loss
        watch.batch(batch_loss / len(rows), epoch=epoch, iteration=t)
        run.weights = lrmath.sgd_step(run.weights, gradient, run.rate(t), params.alpha, penalty)
        if position == per_epoch - 1:
            loss = loss_sum / rows_total
            ctx.metrics.log("loss", loss, epoch)
            stop = watch.epoch(loss, epoch=epoch)
            control: dict[str, str | int | float | bool] = {"stop": stop, "epoch": epoch}
            if validation is not None:
                best, stop_val = _validate(run, t, epoch, chain, validation)
                if best:
                    extra["best_weights"] = run.weights.tolist()
                stop = stop or stop_val
                control.update(stop=stop, best=best)
            ctx.federation.send(
                FederationData(kind="plain_control", meta=control),
                to="host",
                tag="epoch_end",
                iteration=t,
            )
            last_loss, loss_sum = loss, 0.0
            extra["stopped"], extra["epochs_done"] = stop, epoch + 1
        extra["loss_sum"], extra["last_loss"], extra["watch"] = loss_sum, last_loss, watch.state()
        run.save(t)
        done = t + 1
    ctx.metrics.log("iterations", float(done))
    ctx.metrics.log("epochs", float(extra.get("epochs_done", 0)))
    if last_loss is not None:
        ctx.metrics.log("final_loss", float(last_loss))


def _validate(
    run: Training, t: int, epoch: int, chain: Chain, validation: Validation
) -> tuple[bool, bool]:
    """After an epoch: the validation rows' half mean deviance from the hosts' partial scores
    of those rows (in plaintext, as hetero_poisson_predict has them), as the metric
    `validate_loss`; (whether this epoch is the best so far, whether patience ends the run)."""
    ctx, params = run.ctx, run.params
    z = validation.x @ run.weights + validation.log_e
    for host in chain.hosts:
        got = ctx.federation.recv(frm=host, tag="validate_scores", iteration=t)
        if got.array is None or got.array.shape != z.shape:
            raise ShapeMismatchError(f"{NAME}: validate_scores from {host} is not ({len(z)},)")
        z = z + np.asarray(got.array, dtype=np.float64)
    mu = np.exp(np.minimum(z, pmath.EXP_LIMIT))
    loss = pmath.half_deviance(validation.labels, mu) / validation.rows
    ctx.metrics.log("validate_loss", loss, epoch)
    patience = lrmath.Patience.restore(run.extra.get("patience"), params.patience, params.min_delta)
    best, stop = patience.update(loss, epoch)
    run.extra["patience"] = patience.state()
    return best, stop


def _guest_iteration(
    run: Training,
    t: int,
    chain: Chain,
    xb: Floats,
    yb: Floats,
    log_c: Floats,
    k_hosts: Mapping[str, int],
    iterations_left: int,
) -> tuple[Floats, float]:
    """One iteration; the guest's gradient and the batch's summed half deviance."""
    he, ctx = run.he, run.ctx
    b = len(yb)
    c = np.exp(log_c)
    run.resume.send_ciphertexts("guest_rate", t, lambda: (he.encrypt(c), {}), to=chain.key_host)
    run.resume.send_ciphertexts("labels", t, lambda: (he.encrypt(yb), {}), to="host")
    he.prefetch(iterations_left)
    # (c X_g)^T [[r]] = X_g^T [[mu]]; each column brought to magnitude <= 1 by a power of two
    # (exact) first, as hetero_lr does, so that encrypted_dot's one grid keeps every column's
    # precision.
    design = xb * c[:, None]
    scales = lrmath.column_scales(design)
    design = design / scales
    # [[r_1 ... r_m]] under the key host's key, from the last host of the chain
    r = he.recv_ciphertexts("host_rate", t, chain.last, he.peer_keys[chain.key_host], b)

    def guest_gradient(r: EncryptedVector = r) -> tuple[EncryptedVector, dict[str, Any]]:
        return he.masked(encrypted_dot(design, r, executor=he.executor), "guest_gradient", t)

    sent = run.resume.send_ciphertexts("guest_gradient", t, guest_gradient, to=chain.key_host)
    y_dot_uh = 0.0
    for host in chain.hosts:
        he.decrypt_for_peer("host_gradient", t, "host_gradient_masked", host, k_hosts[host])
        score = he.recv_ciphertexts("label_score", t, host, he.public_key, 1)
        ctx.federation.authorize_decrypt("label_score", t, frm=host)
        y_dot_uh += _decrypt_label_score(run, score, host, t, yb)
    x_mu = scales * he.unmask(sent, "guest_gradient_masked", t, chain.key_host, "guest_gradient")
    gradient = (x_mu - xb.T @ yb) / b
    return gradient, pmath.batch_loss(yb, log_c, y_dot_uh, float(x_mu[-1]))


def _decrypt_label_score(
    run: Training, score: EncryptedVector, host: str, t: int, yb: Floats
) -> float:
    """`host`'s y . u_h, decrypted under the guest's key and checked against
    pmath.label_score_bound (reported to this party's audit, report.decrypt_check, before it
    is used). The host chose the ciphertext, so a value outside the bound is its doing: the
    guest refuses it (the batch's loss would be made up)."""
    bound = pmath.label_score_bound(yb)
    value = decrypt_floats(
        run.ctx,
        run.he.private_key,
        score,
        peer=host,
        tag="label_score",
        iteration=t,
        low=-bound,
        high=bound,
        bound=f"|y . u_h| <= {pmath.EXP_LIMIT:g} x sum(y) ({float(np.sum(yb)):g}), each host "
        f"score inside (-{pmath.EXP_LIMIT:g}, {pmath.EXP_LIMIT:g})",
        executor=run.he.executor,
    )
    got = float(value[0])
    if not abs(got) <= bound:
        raise ValueError(
            f"{NAME}: label_score from {host} at iteration {t} is {got:g}, outside what "
            f"the batch's labels allow (|y . u_h| <= {bound:g})"
        )
    return got


# -- host ---------------------------------------------------------------------------------------


def host(ctx: ComponentContext) -> Mapping[str, Table]:
    table = ctx.input("data")
    guest_id = ctx.parties["guest"][0]
    chain = _chain(ctx)
    check_linear_inputs(ctx, NAME)
    check_alignment(ctx)
    x = session.features(table)
    session.warn_unscaled(ctx, x, list(table.feature_names), NAME)
    # Every host exchanges keys with the guest and with the other hosts: the key host's public
    # key encrypts the rate chain the others multiply into.
    peers = [guest_id, *(h for h in chain.hosts if h != ctx.party_id)]
    validation = session.validation_features(ctx, list(table.feature_names), NAME)
    x_val = None if validation is None else session.features(validation)
    params = ctx.params_as(HeteroPoissonParams)
    with crypto_threads(ctx) as (executor, background):
        run = _start(ctx, x, peers, executor, 0 if x_val is None else len(x_val))
        try:
            _host_train(ctx, run, x, guest_id, chain, background, x_val)
        finally:
            run.he.close()
    weights = _output_weights(run, params.patience > 0)
    return {"model": session.model_table(list(table.feature_names), weights)}


def _host_train(
    ctx: ComponentContext,
    run: Training,
    x: Floats,
    guest_id: str,
    chain: Chain,
    background: Any,
    x_val: Floats | None,
) -> None:
    params, he, extra = run.params, run.he, run.extra
    rows_total, k_h = x.shape
    counts = {p: int(k) for p, k in extra["peer_features"].items()}
    k_g = counts[guest_id]
    widest_host = max([k_h, *(k for p, k in counts.items() if p != guest_id)])
    session.check_batch(params, rows_total, k_g, widest_host, NAME)
    ctx.federation.bind_dims(k_g1=k_g)
    if x_val is not None:
        ctx.federation.bind_dims(v=len(x_val))
    per_epoch = len(lrmath.batches(rows_total, params.batch_size, params.seed, 0))
    total = params.epochs * per_epoch
    largest = lrmath.largest_batch(rows_total, params.batch_size)
    # Only the key host encrypts under its own key (the first link of the rate chain).
    if ctx.party_id == chain.key_host:
        he.start_prefetch(background, largest, total - run.start)
    done = run.start
    for t in iterations(ctx, run.start, total, lambda: run.stopped):
        epoch, position = divmod(t, per_epoch)
        rows = lrmath.batches(rows_total, params.batch_size, params.seed, epoch)[position]
        gradient = _host_iteration(run, t, guest_id, chain, x[rows], total - t - 1)
        run.weights = lrmath.sgd_step(run.weights, gradient, run.rate(t), params.alpha)
        if position == per_epoch - 1:
            if x_val is not None:
                # This host's partial scores of the validation rows, in plaintext (as
                # hetero_poisson_predict sends them): the guest's validation deviance.
                ctx.federation.send(
                    FederationData(kind="partial_score", array=x_val @ run.weights),
                    to=guest_id,
                    tag="validate_scores",
                    iteration=t,
                )
            control = ctx.federation.recv(frm=guest_id, tag="epoch_end", iteration=t).meta
            if control.get("best", False):
                extra["best_weights"] = run.weights.tolist()
            extra["stopped"] = bool(control.get("stop", False))
        run.save(t)
        done = t + 1
    ctx.metrics.log("iterations", float(done))


def _times(
    run: Training, vec: EncryptedVector, factor: Floats
) -> tuple[EncryptedVector, dict[str, Any]]:
    """[[v * factor]] re-randomised: a party that saw [[v]] must not find `factor` by comparing
    [[v]]^factor with it (a small exponent is a feasible discrete logarithm)."""
    executor = run.he.executor
    return vec.mul(factor, executor=executor).obfuscate(executor=executor), {}


def _label_score(run: Training, u_h: Floats, y: EncryptedVector) -> EncryptedVector:
    """[[y . u_h]] under the guest's key (the guest decrypts it: re-randomised first)."""
    return encrypted_dot(u_h[:, None], y).obfuscate(executor=run.he.executor)


def _host_iteration(
    run: Training,
    t: int,
    guest_id: str,
    chain: Chain,
    xb: Floats,
    iterations_left: int,
) -> Floats:
    """One iteration; this host's gradient X_h^T (mu - y) / b."""
    he, me = run.he, run.ctx.party_id
    b = xb.shape[0]
    u_h = xb @ run.weights
    if not np.all(np.abs(u_h) < pmath.EXP_LIMIT):
        # Both ways: past +EXP_LIMIT exp() overflows, at -EXP_LIMIT the rate leaves float64's
        # normal range; the guest's bound on y . u_h (label_score) rests on both.
        raise ValueError(
            f"{NAME} diverged at iteration {t}: the host's scores leave exp()'s range "
            f"(|u| >= {pmath.EXP_LIMIT:g}); "
            f"{session.advice(run.params, NAME)}"
        )
    r = np.exp(u_h)
    guest_key = he.peer_keys[guest_id]
    previous, following = chain.previous_of(me), chain.next_of(me)
    # 1. The rate chain under the key host's key: [[r_1 ... r_j]] goes on to the next host,
    #    the last link ([[r_1 ... r_m]]) to the guest.
    rate_to, rate_tag = (guest_id, "host_rate") if following is None else (following, "rate_chain")
    if previous is None:
        run.resume.send_ciphertexts(rate_tag, t, lambda: (he.encrypt(r), {}), to=rate_to)
        he.prefetch(iterations_left)
    else:
        key: PublicKey = he.peer_keys[chain.key_host]
        before = he.recv_ciphertexts("rate_chain", t, previous, key, b)
        run.resume.send_ciphertexts(rate_tag, t, lambda: _times(run, before, r), to=rate_to)
    # 2. The guest's chain: [[c r_1 ... r_j]] under the guest's key; the last host's product is
    #    [[mu]], which it sends to the other hosts.
    if previous is None:
        rated = he.recv_ciphertexts("guest_rate", t, guest_id, guest_key, b)
    else:
        rated = he.recv_ciphertexts("guest_rate_chain", t, previous, guest_key, b)
    if following is not None:
        run.resume.send_ciphertexts(
            "guest_rate_chain", t, lambda: _times(run, rated, r), to=following
        )
        mu = he.recv_ciphertexts("rate_product", t, chain.last, guest_key, b)
    else:
        mu = rated.mul(r, executor=he.executor)
        if len(chain.hosts) > 1:
            run.resume.send_ciphertexts(
                "rate_product",
                t,
                lambda: (mu.obfuscate(executor=he.executor), {}),
                to="host",
            )
    y = he.recv_ciphertexts("labels", t, guest_id, guest_key, b)

    def host_gradient() -> tuple[EncryptedVector, dict[str, Any]]:
        # [[mu - y]], then X_h^T [[mu - y]] + R_h
        d = mu - y
        return he.masked(encrypted_dot(xb, d, executor=he.executor), "host_gradient", t)

    sent = run.resume.send_ciphertexts("host_gradient", t, host_gradient, to=guest_id)

    run.resume.send_ciphertexts(
        "label_score", t, lambda: (_label_score(run, u_h, y), {}), to=guest_id
    )
    if me == chain.key_host:
        he.decrypt_for_peer("guest_gradient", t, "guest_gradient_masked", guest_id)
    masked = he.unmask(sent, "host_gradient_masked", t, guest_id, "host_gradient")
    return np.asarray(masked / b, dtype=np.float64)
