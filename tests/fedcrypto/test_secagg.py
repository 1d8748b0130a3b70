"""Secure aggregation: exact sums under dropout, masking, refusals, bad input."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection

import numpy as np
import pytest
from fedcrypto.secagg import (
    AdvertiseKeys,
    AggregationResult,
    FixedPoint,
    MaskedInput,
    NotEnoughClients,
    SecAggClient,
    SecAggConfig,
    SecAggError,
    SecAggServer,
    UnmaskRefused,
    UnmaskRequest,
    UnmaskResponse,
    default_threshold,
    expand_mask,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def make_inputs(n: int, length: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {u: rng.uniform(-1, 1, length) for u in range(1, n + 1)}


def run_aggregation(
    config: SecAggConfig,
    inputs: dict[int, np.ndarray],
    *,
    silent_at_keys: Collection[int] = (),
    silent_at_shares: Collection[int] = (),
    silent_at_input: Collection[int] = (),
    silent_at_unmask: Collection[int] = (),
) -> AggregationResult:
    """All rounds in one process; clients in silent_at_X stop answering from round X on."""
    clients = clients_for(config, inputs)
    server = SecAggServer(config)
    gone: set[int] = set(silent_at_keys)
    for u, c in clients.items():
        if u not in gone:
            server.receive_keys(c.advertise_keys())
    directory = server.key_directory()
    gone |= set(silent_at_shares)
    for u, c in clients.items():
        if u not in gone:
            server.receive_shares(c.share_keys(directory))
    inboxes = server.route_shares()
    gone |= set(silent_at_input)
    for u, c in clients.items():
        if u not in gone:
            server.receive_masked_input(c.masked_input(inboxes[u], inputs[u]))
    request = server.unmask_request()
    gone |= set(silent_at_unmask)
    for u, c in clients.items():
        if u not in gone:
            server.receive_unmasking(c.unmask(request))
    return server.result()


def clipped_sum(inputs: dict[int, np.ndarray], members: Collection[int], clip: float) -> np.ndarray:
    """Correctly rounded reference sum (math.fsum per coordinate)."""
    rows = np.array([np.clip(inputs[u], -clip, clip) for u in members])
    return np.array([math.fsum(column) for column in rows.T])


def within_bound(result: AggregationResult, expected: np.ndarray) -> bool:
    # The reference itself is rounded to nearest: allow half an ulp on top.
    slack = np.spacing(np.abs(expected)) / 2
    return bool(np.all(np.abs(result.sum - expected) <= result.max_abs_error + slack))


def config_for(n: int = 6, length: int = 200, **kwargs: object) -> SecAggConfig:
    return SecAggConfig(session=b"job-1/round-3", num_clients=n, vector_length=length, **kwargs)  # type: ignore[arg-type]


def clients_for(config: SecAggConfig, ids: Collection[int]) -> dict[int, SecAggClient]:
    return {u: SecAggClient(u, config) for u in ids}


def shares_sent(config: SecAggConfig, clients: dict[int, SecAggClient]) -> SecAggServer:
    """Rounds 0 and 1 with every client answering: keys advertised, shares sent (not yet routed)."""
    server = SecAggServer(config)
    for c in clients.values():
        server.receive_keys(c.advertise_keys())
    directory = server.key_directory()
    for c in clients.values():
        server.receive_shares(c.share_keys(directory))
    return server


# ------------------------------------------------------------------ correctness


@pytest.mark.parametrize("bits", [32, 64])
def test_sum_without_dropout_matches_within_the_stated_error(bits: int) -> None:
    config = config_for(n=5, length=1000, modulus_bits=bits)
    inputs = make_inputs(5, 1000)

    result = run_aggregation(config, inputs)

    expected = clipped_sum(inputs, inputs, 1.0)
    assert result.survivors == (1, 2, 3, 4, 5) and result.dropped == ()
    assert within_bound(result, expected)
    assert result.max_abs_error == config.fixed_point.sum_error_bound(5)
    assert result.max_abs_error < (1e-7 if bits == 32 else 1e-14)


def test_third_of_clients_dropping_after_masked_input_still_gives_full_sum() -> None:
    config = config_for(n=9, length=500)
    inputs = make_inputs(9, 500, seed=1)

    result = run_aggregation(config, inputs, silent_at_unmask={2, 5, 9})

    # Their masked inputs arrived, so the sum covers all nine.
    assert result.survivors == tuple(range(1, 10))
    assert within_bound(result, clipped_sum(inputs, inputs, 1.0))


def test_dropout_before_masked_input_sums_the_survivors_only() -> None:
    config = config_for(n=9, length=500)
    inputs = make_inputs(9, 500, seed=2)

    result = run_aggregation(config, inputs, silent_at_input={3, 8})

    survivors = [1, 2, 4, 5, 6, 7, 9]
    assert result.survivors == tuple(survivors) and result.dropped == (3, 8)
    assert within_bound(result, clipped_sum(inputs, survivors, 1.0))


def test_dropouts_in_every_round_combined() -> None:
    # n=12, t=8: one silent from the start, one after keys, one before input,
    # one after its input; 8 survivors answer the unmasking request.
    config = config_for(n=12, length=300)
    inputs = make_inputs(12, 300, seed=3)

    result = run_aggregation(
        config,
        inputs,
        silent_at_keys={12},
        silent_at_shares={1},
        silent_at_input={6},
        silent_at_unmask={7},
    )

    survivors = [2, 3, 4, 5, 7, 8, 9, 10, 11]
    assert result.survivors == tuple(survivors) and result.dropped == (6,)
    assert within_bound(result, clipped_sum(inputs, survivors, 1.0))


def test_values_outside_the_clip_range_are_clipped() -> None:
    config = config_for(n=3, length=4, clip=2.0)
    inputs = {u: np.array([5.0, -7.0, 1.5, 0.0]) for u in (1, 2, 3)}

    result = run_aggregation(config, inputs)

    np.testing.assert_allclose(result.sum, [6.0, -6.0, 4.5, 0.0], atol=result.max_abs_error)


def test_extreme_inputs_do_not_wrap_around() -> None:
    config = config_for(n=4, length=2, clip=1.0)
    inputs = {u: np.array([1.0, -1.0]) for u in range(1, 5)}

    result = run_aggregation(config, inputs)

    np.testing.assert_allclose(result.sum, [4.0, -4.0], atol=result.max_abs_error)


# ------------------------------------------------------------------ privacy


def test_masked_input_of_zeros_looks_uniform_and_differs_from_the_encoding() -> None:
    config = config_for(n=3, length=64_000)
    clients = clients_for(config, (1, 2, 3))
    server = shares_sent(config, clients)
    inboxes = server.route_shares()

    masked = clients[1].masked_input(inboxes[1], np.zeros(64_000)).masked

    assert masked.dtype == np.uint32
    assert np.count_nonzero(masked == 0) < 10  # the encoding of 0.0 is 0
    # Top 4 bits spread evenly over 16 buckets: chi-square with 15 dof,
    # p < 1e-6 above ~ 50.
    counts = np.bincount((masked >> 28).astype(np.int64), minlength=16)
    expected = masked.size / 16
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 50
    assert abs(float(np.mean(masked / 2.0**32)) - 0.5) < 0.01


def test_same_input_is_masked_differently_each_session() -> None:
    first = make_masked_single(np.full(100, 0.25))
    second = make_masked_single(np.full(100, 0.25))

    assert not np.array_equal(first, second)


def make_masked_single(x: np.ndarray) -> np.ndarray:
    config = config_for(n=2, length=x.size)
    clients = clients_for(config, (1, 2))
    server = shares_sent(config, clients)
    return clients[1].masked_input(server.route_shares()[1], x).masked


def test_share_messages_do_not_contain_the_secrets() -> None:
    config = config_for(n=3, length=8)
    clients = clients_for(config, (1, 2, 3))
    server = SecAggServer(config)
    for c in clients.values():
        server.receive_keys(c.advertise_keys())
    directory = server.key_directory()

    shares = clients[1].share_keys(directory)

    secret_key = clients[1]._s_key.private_bytes_raw()
    seed = clients[1]._self_seed
    blob = b"".join(shares.ciphertexts.values())
    assert secret_key not in blob and seed not in blob
    assert set(shares.ciphertexts) == {2, 3}


# ------------------------------------------------------------------ thresholds


def test_default_threshold_tolerates_a_third_and_exceeds_half() -> None:
    for n in range(2, 40):
        t = default_threshold(n)
        assert 2 * t > n
        assert n - t == n // 3


def test_too_few_clients_advertising_keys_fails_clearly() -> None:
    config = config_for(n=6)  # t = 4

    with pytest.raises(NotEnoughClients, match="3 clients, threshold is 4"):
        run_aggregation(config, make_inputs(6, 200), silent_at_keys={1, 2, 3})


def test_too_few_masked_inputs_fails_clearly() -> None:
    config = config_for(n=6)

    with pytest.raises(NotEnoughClients, match="masked inputs"):
        run_aggregation(config, make_inputs(6, 200), silent_at_input={1, 2, 3})


def test_too_few_unmasking_answers_fails_clearly() -> None:
    config = config_for(n=6)

    with pytest.raises(NotEnoughClients, match="answered the unmasking request: 3 clients"):
        run_aggregation(config, make_inputs(6, 200), silent_at_unmask={4, 5, 6})


@pytest.mark.parametrize(("n", "t"), [(6, 3), (4, 2), (5, 6), (5, 1)])
def test_insecure_or_impossible_thresholds_are_refused(n: int, t: int) -> None:
    with pytest.raises(SecAggError, match="threshold"):
        config_for(n=n, threshold=t)


# ------------------------------------------------------------------ refusals


def masked_round(n: int = 6) -> tuple[SecAggConfig, dict[int, SecAggClient], SecAggServer]:
    """Run rounds 0-2 with every client; return them ready for unmasking."""
    config = config_for(n=n, length=16)
    clients = clients_for(config, range(1, n + 1))
    server = shares_sent(config, clients)
    inboxes = server.route_shares()
    for u, c in clients.items():
        server.receive_masked_input(c.masked_input(inboxes[u], np.zeros(16)))
    return config, clients, server


def test_request_for_both_shares_of_one_client_is_refused() -> None:
    _, clients, _ = masked_round()

    with pytest.raises(UnmaskRefused, match=r"both .* client\(s\) \[4\]"):
        clients[1].unmask(UnmaskRequest(survivors=(1, 2, 3, 4, 5, 6), dropped=(4,)))


def test_second_unmasking_request_is_refused() -> None:
    _, clients, server = masked_round()
    clients[1].unmask(server.unmask_request())

    with pytest.raises(UnmaskRefused, match="already answered"):
        clients[1].unmask(UnmaskRequest(survivors=(1, 2, 3, 4), dropped=(5, 6)))


def test_request_listing_the_client_itself_as_dropped_is_refused() -> None:
    _, clients, _ = masked_round()

    with pytest.raises(UnmaskRefused, match="survivor"):
        clients[1].unmask(UnmaskRequest(survivors=(2, 3, 4, 5, 6), dropped=(1,)))


def test_request_that_omits_a_client_is_refused() -> None:
    _, clients, _ = masked_round()

    with pytest.raises(UnmaskRefused, match="names"):
        clients[1].unmask(UnmaskRequest(survivors=(1, 2, 3, 4, 5), dropped=()))


def test_request_with_fewer_than_t_survivors_is_refused() -> None:
    _, clients, _ = masked_round()

    with pytest.raises(NotEnoughClients, match="survivors"):
        clients[1].unmask(UnmaskRequest(survivors=(1, 2, 3), dropped=(4, 5, 6)))


def test_server_request_never_overlaps() -> None:
    config = config_for(n=6, length=16)
    clients = clients_for(config, range(1, 7))
    server = shares_sent(config, clients)
    inboxes = server.route_shares()
    for u in (1, 2, 3, 4):
        server.receive_masked_input(clients[u].masked_input(inboxes[u], np.zeros(16)))

    request = server.unmask_request()

    assert request.survivors == (1, 2, 3, 4) and request.dropped == (5, 6)
    with pytest.raises(SecAggError, match=r"not in U2|phase"):
        server.receive_masked_input(clients[5].masked_input(inboxes[5], np.zeros(16)))


# ------------------------------------------------------------------ bad input


def test_tampered_share_ciphertext_is_detected() -> None:
    config = config_for(n=3, length=4)
    clients = clients_for(config, (1, 2, 3))
    server = shares_sent(config, clients)
    inbox = server.route_shares()[1]
    blob = bytearray(inbox.ciphertexts[2])
    blob[-1] ^= 1
    tampered = dataclasses.replace(inbox, ciphertexts={**inbox.ciphertexts, 2: bytes(blob)})

    with pytest.raises(SecAggError, match="does not decrypt"):
        clients[1].masked_input(tampered, np.zeros(4))


def test_shares_misrouted_to_another_client_do_not_decrypt() -> None:
    config = config_for(n=3, length=4)
    clients = clients_for(config, (1, 2, 3))
    server = shares_sent(config, clients)
    inboxes = server.route_shares()
    # Give client 1 the share that client 3 wrote for client 2, labelled as from 3.
    swapped = dataclasses.replace(
        inboxes[1], ciphertexts={2: inboxes[1].ciphertexts[2], 3: inboxes[2].ciphertexts[3]}
    )

    with pytest.raises(SecAggError, match="does not decrypt"):
        clients[1].masked_input(swapped, np.zeros(4))


def test_client_with_a_different_config_cannot_read_shares() -> None:
    config = config_for(n=3, length=4)
    other = dataclasses.replace(config, session=b"another-job")
    clients = {1: SecAggClient(1, config), 2: SecAggClient(2, config), 3: SecAggClient(3, other)}
    server = shares_sent(config, clients)
    inboxes = server.route_shares()

    with pytest.raises(SecAggError, match="another session"):
        clients[1].masked_input(inboxes[1], np.zeros(4))


def test_corrupted_unmasking_share_is_detected() -> None:
    _, clients, server = masked_round(n=6)
    request = server.unmask_request()
    for u in (1, 2, 3, 4, 5):
        server.receive_unmasking(clients[u].unmask(request))
    honest = clients[6].unmask(request)
    bad_value = bytearray(honest.self_mask_shares[3])
    bad_value[-1] ^= 1
    server.receive_unmasking(
        UnmaskResponse(6, {**honest.self_mask_shares, 3: bytes(bad_value)}, {})
    )

    with pytest.raises(SecAggError, match="self-mask seed of client 3"):
        server.result()


@pytest.mark.parametrize(
    "values",
    [np.zeros(15), np.zeros(17), np.zeros((4, 4)), np.array([np.nan] + [0.0] * 15)],
)
def test_wrong_length_or_non_finite_input_is_refused(values: np.ndarray) -> None:
    config = config_for(n=3, length=16)
    clients = clients_for(config, (1, 2, 3))
    server = shares_sent(config, clients)

    with pytest.raises(SecAggError, match=r"shape|NaN"):
        clients[1].masked_input(server.route_shares()[1], values)


def test_server_refuses_bad_key_messages() -> None:
    server = SecAggServer(config_for(n=3))
    good = SecAggClient(1, config_for(n=3)).advertise_keys()

    with pytest.raises(SecAggError, match="32 bytes"):
        server.receive_keys(AdvertiseKeys(2, b"short", good.s_public))
    with pytest.raises(SecAggError, match=r"outside 1\.\.3"):
        server.receive_keys(AdvertiseKeys(4, good.c_public, good.s_public))
    server.receive_keys(good)
    with pytest.raises(SecAggError, match="twice"):
        server.receive_keys(good)


def test_server_refuses_masked_input_of_wrong_shape_or_dtype() -> None:
    config = config_for(n=3, length=16)
    clients = clients_for(config, (1, 2, 3))
    server = shares_sent(config, clients)
    server.route_shares()

    with pytest.raises(SecAggError, match="expected uint32"):
        server.receive_masked_input(MaskedInput(1, np.zeros(16, dtype=np.int64)))
    with pytest.raises(SecAggError, match="expected uint32"):
        server.receive_masked_input(MaskedInput(1, np.zeros(15, dtype=np.uint32)))


def test_rounds_out_of_order_are_refused() -> None:
    config = config_for(n=3)
    client = SecAggClient(1, config)
    server = SecAggServer(config)

    with pytest.raises(SecAggError, match="phase"):
        client.unmask(UnmaskRequest((1, 2), (3,)))
    with pytest.raises(SecAggError, match="phase"):
        server.route_shares()
    client.advertise_keys()
    with pytest.raises(SecAggError, match="phase"):
        client.advertise_keys()


def test_bad_config_values_are_refused() -> None:
    with pytest.raises(SecAggError, match="session"):
        SecAggConfig(session=b"", num_clients=3, vector_length=4)
    with pytest.raises(SecAggError, match="modulus_bits"):
        config_for(modulus_bits=16)
    with pytest.raises(SecAggError, match="clip"):
        config_for(clip=float("inf"))
    with pytest.raises(SecAggError, match="vector_length"):
        config_for(length=0)
    with pytest.raises(SecAggError, match="does not fit"):
        config_for(n=3, clip=2.0**40)


# ------------------------------------------------------------------ quantization


@settings(max_examples=40, deadline=None)
@given(
    bits=st.sampled_from([32, 64]),
    clip=st.floats(min_value=1e-3, max_value=1e3),
    summands=st.integers(min_value=1, max_value=50),
    data=st.data(),
)
def test_quantized_sums_stay_within_the_stated_error(
    bits: int, clip: float, summands: int, data: st.DataObject
) -> None:
    fp = FixedPoint(bits, clip, summands)
    values = data.draw(
        hnp.arrays(
            np.float64,
            (summands, 8),
            elements=st.floats(min_value=-clip, max_value=clip, allow_nan=False),
        )
    )

    encoded = np.zeros(8, dtype=fp.dtype)
    for row in values:
        encoded += fp.quantize(row)

    exact = np.array([math.fsum(column) for column in values.T])
    bound = fp.sum_error_bound(summands) + np.spacing(np.abs(exact)) / 2
    assert np.all(np.abs(fp.dequantize(encoded) - exact) <= bound)


def test_frac_bits_leave_room_for_the_sum() -> None:
    fp = FixedPoint(32, 1.0, 10)

    assert fp.frac_bits == 27  # 10 * (2^27 + 0.5) < 2^31 <= 10 * (2^28 + 0.5)
    assert fp.resolution == 2.0**-27


def test_expand_mask_is_deterministic_and_key_dependent() -> None:
    a = expand_mask(bytes(32), 1000, np.uint32)
    b = expand_mask(bytes(32), 1000, np.uint32)
    c = expand_mask(bytes(31) + b"\x01", 1000, np.uint32)

    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(SecAggError, match="32 bytes"):
        expand_mask(b"short", 10, np.uint32)


def test_clients_restored_from_their_exported_state_complete_the_aggregation() -> None:
    # Prepare: 5 clients; client 2 is exported after its keys, client 3 after its shares
    config = config_for(5)
    inputs = make_inputs(5, 200)
    clients = clients_for(config, inputs)
    server = SecAggServer(config)
    for c in clients.values():
        server.receive_keys(c.advertise_keys())
    clients[2] = SecAggClient.from_state(clients[2].export_state(), config)
    directory = server.key_directory()
    for c in clients.values():
        server.receive_shares(c.share_keys(directory))
    exported = clients[3].export_state()
    clients[3] = SecAggClient.from_state(exported, config)

    # Execute: the rest of the round with the restored clients
    inboxes = server.route_shares()
    for u, c in clients.items():
        server.receive_masked_input(c.masked_input(inboxes[u], inputs[u]))
    request = server.unmask_request()
    for c in clients.values():
        server.receive_unmasking(c.unmask(request))

    # Assert: the masks cancel as the originals' would; the state carries only public keys
    assert within_bound(server.result(), clipped_sum(inputs, range(1, 6), config.clip))
    assert exported.phase == "shared" and len(exported.secret) == exported.secret_size()
    assert set(exported.directory) == set(range(1, 6))


def test_exporting_or_restoring_a_client_state_in_a_wrong_shape_is_refused() -> None:
    # Prepare
    config = config_for(3)
    fresh = SecAggClient(1, config)
    advertised = SecAggClient(1, config)
    advertised.advertise_keys()
    state = advertised.export_state()
    other_keys = SecAggClient(2, config).advertise_keys()

    # Execute / Assert
    with pytest.raises(SecAggError, match="not in 'new'"):
        fresh.export_state()
    with pytest.raises(SecAggError, match="secret bytes"):
        SecAggClient.from_state(dataclasses.replace(state, secret=state.secret[:-1]), config)
    with pytest.raises(SecAggError, match="cannot be restored"):
        SecAggClient.from_state(dataclasses.replace(state, phase="masked"), config)
    shared = dataclasses.replace(
        state,
        phase="shared",
        secret=state.secret + bytes(66),
        directory={1: (other_keys.c_public, other_keys.s_public)},
    )
    with pytest.raises(SecAggError, match="own keys"):
        SecAggClient.from_state(shared, config)
