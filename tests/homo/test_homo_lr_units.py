"""homo_lr's pieces without the runtime: FedAvg's arithmetic, the update checks, the wire
formats through a whole secure-aggregation round with a dropout, and the aggregator taking out
a host whose masked input is malformed."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fedcrypto.secagg import (
    SecAggClient,
    SecAggConfig,
    SecAggError,
    SecAggServer,
    UnmaskRefused,
    UnmaskRequest,
)
from fedflow.checkpoints import CheckpointScope
from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr import resume, wire
from fedflow.components.homo_lr.aggregator import Round, RoundFailed
from fedflow.components.homo_lr.client import LocalClient, check_layout, check_unmask
from fedflow.components.homo_lr.params import HomoLrParams
from fedflow.policy import Bounds, ComponentRules, SecurityPolicy, check_task
from fedflow.task import TaskKey
from fedschemas import FederationData


def test_summed_contributions_give_the_row_weighted_average_of_the_local_models() -> None:
    # Prepare: three clients' local models and row counts
    rng = np.random.default_rng(1)
    w = rng.normal(size=4)
    local = [rng.normal(size=4) for _ in range(3)]
    rows = [100, 300, 600]
    losses = [0.5, 0.7, 0.2]

    # Execute
    total = sum(
        hmath.contribution(w, lw, loss, n) for lw, loss, n in zip(local, losses, rows, strict=True)
    )
    new, loss = hmath.apply_sum(w, np.asarray(total))

    # Assert
    expected = sum(n * lw for lw, n in zip(local, rows, strict=True)) / sum(rows)
    np.testing.assert_allclose(new, expected, rtol=0, atol=1e-12)
    assert loss == pytest.approx((100 * 0.5 + 300 * 0.7 + 600 * 0.2) / 1000)


def test_an_update_with_nan_or_the_wrong_shape_is_named_as_such() -> None:
    assert hmath.update_problem(np.zeros(5), 5) is None
    assert "NaN" in str(hmath.update_problem(np.array([0.0, np.nan, np.inf]), 3))
    assert "shape (4,)" in str(hmath.update_problem(np.zeros(4), 5))
    with pytest.raises(ValueError, match="no sample weight"):
        hmath.apply_sum(np.zeros(2), np.zeros(4))


def test_norm_clipping_scales_long_updates_only() -> None:
    short, clipped = hmath.clip_norm(np.array([0.3, 0.4]), 1.0)
    assert not clipped and short.tolist() == [0.3, 0.4]
    long, clipped = hmath.clip_norm(np.array([3.0, 4.0]), 1.0)
    assert clipped
    np.testing.assert_allclose(long, [0.6, 0.8])


def test_a_secure_sum_through_the_wire_formats_recovers_a_client_that_drops() -> None:
    # Prepare: three clients; every message goes through its FederationData form and back
    config = SecAggConfig(session=b"test", num_clients=3, vector_length=5, modulus_bits=64, clip=16)
    clients = {u: SecAggClient(u, config) for u in (1, 2, 3)}
    values = {u: np.linspace(-1, 1, 5) * u for u in (1, 2, 3)}
    server = SecAggServer(config)

    def through(payload: FederationData) -> FederationData:
        return FederationData.model_validate_json(payload.model_dump_json())

    # Execute: client 3 shares its keys, then drops before its masked input
    for u, c in clients.items():
        server.receive_keys(wire.read_keys(u, through(wire.keys_payload(c.advertise_keys()))))
    directory = wire.read_directory(through(wire.directory_payload(server.key_directory())))
    for u, c in clients.items():
        shares = c.share_keys(directory)
        server.receive_shares(wire.read_shares(u, through(wire.shares_payload(shares))))
    routed = server.route_shares()
    for u in (1, 2):
        got = wire.read_routed(u, through(wire.shares_payload(routed[u])))
        masked = clients[u].masked_input(got, values[u])
        server.receive_masked_input(wire.read_masked(u, through(wire.masked_payload(masked))))
    request = wire.read_unmask_request(
        through(wire.unmask_request_payload(server.unmask_request()))
    )
    for u in (1, 2):
        answer = clients[u].unmask(request)
        server.receive_unmasking(wire.read_unmask(u, through(wire.unmask_payload(answer))))
    result = server.result()

    # Assert
    assert request.survivors == (1, 2) and request.dropped == (3,)
    np.testing.assert_allclose(result.sum, values[1] + values[2], rtol=0, atol=result.max_abs_error)


@pytest.mark.parametrize(
    ("reader", "payload", "message"),
    [
        (
            wire.read_keys,
            FederationData(kind="public_key", blob=b"x" * 10, blob_format="secagg.x25519_pair.v1"),
            "10 bytes",
        ),
        (
            wire.read_shares,
            FederationData(
                kind="ciphertext_vector", blob=b"\x00\x00\x00\x02", blob_format="secagg.shares.v1"
            ),
            "truncated",
        ),
        (
            wire.read_unmask,
            FederationData(
                kind="masked_vector", blob=b"\x00\x00\x00\x05", blob_format="secagg.unmask.v1"
            ),
            "truncated",
        ),
        (
            wire.read_keys,
            FederationData(kind="public_key", blob=b"x" * 64, blob_format="secagg.shares.v1"),
            "x25519_pair",
        ),
    ],
)
def test_malformed_secure_aggregation_messages_are_refused(
    reader: Any, payload: FederationData, message: str
) -> None:
    with pytest.raises(SecAggError, match=message):
        reader(2, payload)


class _Federation:
    """Answers recv from canned payloads; records sends."""

    def __init__(self, payloads: dict[tuple[str, str], FederationData]) -> None:
        self.payloads = payloads
        self.sent: list[tuple[str, str, FederationData]] = []

    def recv(self, *, frm: str, tag: str, iteration: int, timeout: float) -> FederationData:
        return self.payloads[(frm, tag)]

    def send(self, payload: FederationData, *, to: str, tag: str, iteration: int) -> None:
        self.sent.append((to, tag, payload))


def test_the_aggregator_takes_out_a_host_whose_masked_input_has_the_wrong_shape() -> None:
    # Prepare: a round at the aggregator with its own client (1) and two hosts, through the
    # key and share steps; host 3's masked vector is one coordinate short
    config = SecAggConfig(session=b"t", num_clients=3, vector_length=4, modulus_bits=64, clip=16)
    clients = {u: SecAggClient(u, config) for u in (1, 2, 3)}
    fed = _Federation({})
    rnd = Round(SimpleNamespace(federation=fed), 0, config, {2: "10000", 3: "10001"}, clients[1])  # type: ignore[arg-type]
    for c in clients.values():
        rnd.server.receive_keys(c.advertise_keys())
    directory = rnd.server.key_directory()
    for c in clients.values():
        rnd.server.receive_shares(c.share_keys(directory))
    routed = rnd.server.route_shares()
    masked = {u: clients[u].masked_input(routed[u], np.full(4, 0.25)) for u in (1, 2, 3)}
    rnd.server.receive_masked_input(masked[1])
    fed.payloads = {
        ("10000", "sa_masked"): wire.masked_payload(masked[2]),
        ("10001", "sa_masked"): FederationData(kind="masked_vector", array=masked[3].masked[:3]),
    }

    # Execute
    got = rnd.collect("sa_masked", 1.0, wire.read_masked)
    rnd.feed(got, rnd.server.receive_masked_input, "sa_masked")
    request = rnd.close(rnd.server.unmask_request)
    rnd.send_next("sa_unmask", lambda _: wire.unmask_request_payload(request))

    # Assert: host 3 is out with the reason and told so; its masks are removed with the
    # others' shares, and the sum is the two others'
    assert list(rnd.hosts) == [2]
    assert "expected uint64(4,)" in rnd.dropped[3][1]
    assert request.survivors == (1, 2) and request.dropped == (3,)
    assert [(to, p.meta.get("excluded")) for to, _, p in fed.sent] == [
        ("10001", True),
        ("10000", None),
    ]
    for u in (1, 2):
        rnd.server.receive_unmasking(clients[u].unmask(request))
    np.testing.assert_allclose(rnd.server.result().sum, np.full(4, 0.5), atol=1e-12)


def test_a_round_with_too_few_clients_fails_naming_who_dropped_and_why() -> None:
    config = SecAggConfig(session=b"t", num_clients=3, vector_length=4, modulus_bits=64, clip=16)
    fed = _Federation({})
    rnd = Round(SimpleNamespace(federation=fed), 4, config, {2: "10000", 3: "10001"}, None)  # type: ignore[arg-type]
    rnd.leave(3, "no sa_keys within 5 s", "sa_keys")
    rnd.server.receive_keys(SecAggClient(2, config).advertise_keys())

    with pytest.raises(RoundFailed, match=r"round 4: .*client 3 \(10001\): no sa_keys within 5 s"):
        rnd.close(rnd.server.key_directory)


def test_fedprox_keeps_local_training_nearer_the_global_model() -> None:
    # Prepare: one client's rows and a starting model
    rng = np.random.default_rng(3)
    x1 = hmath.with_intercept(rng.normal(size=(64, 3)))
    y = (rng.random(64) > 0.5).astype(np.float64)
    w = rng.normal(size=4)
    plain = hmath.LocalTraining(3, 8, 0.3, 0.0, 0)

    # Execute
    steps = {
        mu: hmath.local_sgd(w, x1, y, replace(plain, proximal_mu=mu), (0, 0, 1))
        for mu in (0.0, 0.5, 2.0)
    }

    # Assert: a larger mu, a smaller step away from w; mu 0 is plain SGD
    moved = {mu: float(np.linalg.norm(local - w)) for mu, local in steps.items()}
    assert moved[2.0] < moved[0.5] < moved[0.0]
    np.testing.assert_array_equal(steps[0.0], hmath.local_sgd(w, x1, y, plain, (0, 0, 1)))


def test_the_learning_rate_schedule_shrinks_every_rounds_local_steps() -> None:
    # Prepare: one client's rows; local training at lr 0.4 decaying by half a round
    rng = np.random.default_rng(4)
    x1 = hmath.with_intercept(rng.normal(size=(64, 3)))
    y = (rng.random(64) > 0.5).astype(np.float64)
    w = rng.normal(size=4)
    decaying = hmath.LocalTraining(1, 8, 0.4, 0.0, 0, learning_rate_decay=0.5)
    client = LocalClient(
        1,
        ["a", "b", "c"],
        x1,
        y,
        HomoLrParams(local_epochs=1, batch_size=8, learning_rate=0.4, learning_rate_decay=0.5),
    )

    # Execute: round 2's local model at the client, and with the rate written out
    vector, _ = client.contribution(w, 2)
    by_hand = hmath.local_sgd(w, x1, y, hmath.LocalTraining(1, 8, 0.1, 0.0, 0), (0, 2, 1))

    # Assert: round r steps at 0.4 * 0.5^r, at the client as in the references
    assert [decaying.at_round(r).learning_rate for r in range(3)] == [0.4, 0.2, 0.1]
    expected = hmath.contribution(w, by_hand, hmath.log_loss(w, x1, y), 64)
    np.testing.assert_allclose(vector, expected, rtol=0, atol=1e-15)


def test_server_optimizers_follow_fedavg_fedadam_and_fedyogi() -> None:
    w, delta = np.array([1.0, -2.0]), np.array([0.5, -0.25])
    fedavg, _ = hmath.ServerRule().step(w, delta, {})
    np.testing.assert_array_equal(fedavg, w + delta)
    for name in ("adam", "yogi"):
        rule = hmath.ServerRule(name, learning_rate=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
        state = rule.initial(2)
        new, state = rule.step(w, delta, state)
        m = 0.1 * delta
        # Adam decays v0 = tau^2 by beta2; with v0 < delta^2 Yogi's v grows by (1 - beta2) delta^2
        v = (0.99 if name == "adam" else 1.0) * 1e-6 + 0.01 * delta**2
        np.testing.assert_allclose(state["m"], m, rtol=1e-15)
        np.testing.assert_allclose(state["v"], v, rtol=1e-15)
        np.testing.assert_allclose(new, w + 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-15)
    # Yogi's v shrinks only by (1 - beta2) delta^2 when v exceeds delta^2 (Adam's decays by beta2)
    rule = hmath.ServerRule("yogi", beta2=0.99)
    _, after = rule.step(w, np.array([0.1, 0.1]), {"m": np.zeros(2), "v": np.ones(2)})
    np.testing.assert_allclose(after["v"], 1.0 - 0.01 * 0.01)


def test_a_client_refuses_to_unmask_a_round_that_would_expose_too_few_updates() -> None:
    guest_aggregates = {"guest": ["9999"], "host": ["10000", "10001"]}
    arbiter = {**guest_aggregates, "arbiter": ["8888"]}
    three = UnmaskRequest(survivors=(1, 2, 3), dropped=())
    two = UnmaskRequest(survivors=(1, 2), dropped=(3,))
    check_unmask(guest_aggregates, three, 2, 0)  # the guest learns hosts 2 and 3 summed
    check_unmask(arbiter, two, 2, 0)  # an arbiter learns clients 1 and 2 summed
    with pytest.raises(UnmaskRefused, match=r"round 5: .* 1 update\(s\) .* min_summed_updates 2"):
        check_unmask(guest_aggregates, two, 2, 5)  # the guest subtracts its own: host 2 alone


def test_a_partys_policy_can_refuse_the_guest_learning_its_update() -> None:
    # A host's policy asks for min_summed_updates >= 2; a job that keeps the default 1 is
    # refused by the policy check (the component then refuses a layout with one host, below)
    policy = SecurityPolicy(
        components={"homo_lr": ComponentRules(bounds={"min_summed_updates": Bounds(min=2)})}
    )
    found = check_task(
        policy,
        party_id="10000",
        component="homo_lr_0",
        component_type="homo_lr",
        role="host",
        params=HomoLrParams().model_dump(),
        initiator="9999",
    )
    assert [v.rule for v in found] == ["policy.components.homo_lr.bounds.min_summed_updates"]
    ctx = SimpleNamespace(parties={"guest": ["9999"], "host": ["10000"]}, party_id="10000")
    with pytest.raises(ValueError, match=r"min_summed_updates is 2 at party 10000.*learn 1 "):
        check_layout(ctx, HomoLrParams(min_summed_updates=2))  # type: ignore[arg-type]
    ctx.parties["arbiter"] = ["10000"]  # the host's own party aggregating: it subtracts its own
    with pytest.raises(ValueError, match=r"would learn 1 client"):
        check_layout(ctx, HomoLrParams(min_summed_updates=2))  # type: ignore[arg-type]
    ctx.parties["arbiter"] = ["8888"]
    check_layout(ctx, HomoLrParams(min_summed_updates=2))  # type: ignore[arg-type]


def test_a_client_snapshot_restores_through_a_whole_aggregation() -> None:
    # Prepare: three clients; client 2 is checkpointed after its keys (phase advertised) and
    # client 3 after its shares (phase shared), each then replaced by its restored copy
    config = SecAggConfig(session=b"r", num_clients=3, vector_length=3, modulus_bits=64, clip=16)
    scope = CheckpointScope(_MemoryStore(), TaskKey("j", "c", 0, "p", "host"))  # type: ignore[arg-type]
    clients = {u: SecAggClient(u, config) for u in (1, 2, 3)}
    server = SecAggServer(config)
    for c in clients.values():
        server.receive_keys(c.advertise_keys())
    clients[2], none = resume.restore(resume.snapshot(clients[2], scope), config, scope)
    directory = server.key_directory()
    sent = {u: c.share_keys(directory) for u, c in clients.items()}
    clients[3], again = resume.restore(resume.snapshot(clients[3], scope, sent[3]), config, scope)
    for u in (1, 2, 3):
        server.receive_shares(sent[u])
    routed = server.route_shares()

    # Execute
    for u, c in clients.items():
        server.receive_masked_input(c.masked_input(routed[u], np.full(3, 0.5 * u)))
    request = server.unmask_request()
    for c in clients.values():
        server.receive_unmasking(c.unmask(request))

    # Assert: the restored clients' masks cancel as the originals' would
    assert none is None and again == sent[3]
    np.testing.assert_allclose(server.result().sum, np.full(3, 3.0), atol=1e-12)


class _MemoryStore:
    def save(self, key: Any, iteration: int, state: Any) -> None:
        pass
