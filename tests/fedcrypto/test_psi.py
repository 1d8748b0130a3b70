"""ECDH-PSI: correctness, commutativity, what the messages hide, bad input."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from fedcrypto.psi import (
    PsiError,
    PsiParty,
    blind_points,
    canonical_id,
    hash_to_point,
)


def run_protocol(
    ids_a: object, ids_b: object, **party_kwargs: object
) -> tuple[list[object], list[object], dict[str, list[bytes]]]:
    """Both sides of the four-message protocol; returns both results and the wire messages."""
    a, b = PsiParty(**party_kwargs), PsiParty(**party_kwargs)  # type: ignore[arg-type]
    msg1 = a.blind(ids_a)  # type: ignore[arg-type]
    msg2 = b.blind(ids_b)  # type: ignore[arg-type]
    msg3 = a.reblind(msg2)
    msg4 = b.reblind(msg1)
    result_a = a.intersect(own_double_blinded=msg4, peer_double_blinded=msg3)
    result_b = b.intersect(own_double_blinded=msg3, peer_double_blinded=msg4)
    return result_a, result_b, {"1": msg1, "2": msg2, "3": msg3, "4": msg4}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sets_with_known_overlap_intersect_exactly(seed: int) -> None:
    rng = random.Random(seed)
    universe = rng.sample(range(10**9), 900)
    common = universe[:120]
    ids_a = common + universe[120:500]
    ids_b = universe[500:] + common
    rng.shuffle(ids_a)
    rng.shuffle(ids_b)

    result_a, result_b, msgs = run_protocol(
        [f"user-{i}" for i in ids_a], [f"user-{i}".encode() for i in ids_b]
    )

    assert set(result_a) == {f"user-{i}" for i in common}
    assert set(result_b) == {f"user-{i}".encode() for i in common}
    assert len(msgs["1"]) == len(ids_a) == 500
    assert len(msgs["2"]) == len(ids_b) == 520


def test_intersection_keeps_own_input_order_and_original_values() -> None:
    ids_a = ["e", "b", "z", "a", "q"]
    ids_b = ["a", "q", "e", "x"]

    result_a, result_b, _ = run_protocol(ids_a, ids_b)

    assert result_a == ["e", "a", "q"]
    assert result_b == ["a", "q", "e"]


def test_intersect_positions_index_the_callers_rows() -> None:
    a, b = PsiParty(), PsiParty()
    ids_a = np.array(["r0", "r1", "r2", "r3"])
    msg1, msg2 = a.blind(ids_a), b.blind(["r3", "r1", "zz"])

    positions = a.intersect_positions(b.reblind(msg1), a.reblind(msg2))

    assert positions.tolist() == [1, 3]


def test_blinding_commutes() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    sa = a.private_bytes_raw()
    sb = b.private_bytes_raw()
    points = [hash_to_point(f"id{i}") for i in range(50)]

    ab = blind_points(sb, blind_points(sa, points))
    ba = blind_points(sa, blind_points(sb, points))

    assert ab == ba


def test_no_id_or_hash_of_id_appears_in_any_message() -> None:
    ids_a = [f"alice-{i:05d}" for i in range(200)]
    ids_b = [f"alice-{i:05d}" for i in range(100, 300)]

    _, _, msgs = run_protocol(ids_a, ids_b)

    secrets = {s.encode() for s in ids_a + ids_b} | {hash_to_point(s) for s in ids_a + ids_b}
    wire = b"".join(b"".join(m) for m in msgs.values())
    for s in secrets:
        assert s not in wire
    for m in msgs.values():
        assert all(len(v) == 32 for v in m)


def test_blinded_message_is_sorted_so_input_order_does_not_leak() -> None:
    party = PsiParty()

    msg = party.blind([f"id{i}" for i in range(300)])

    assert msg == sorted(msg)


def test_fresh_parties_blind_the_same_ids_differently() -> None:
    ids = [f"id{i}" for i in range(50)]

    first, second = PsiParty().blind(ids), PsiParty().blind(ids)

    assert not set(first) & set(second)


def test_fixed_secret_is_deterministic() -> None:
    secret = bytes(range(32))

    first = PsiParty(secret=secret).blind(["x", "y"])
    second = PsiParty(secret=secret).blind(["y", "x"])

    assert first == second


def test_empty_sets_give_empty_intersections() -> None:
    result_a, result_b, msgs = run_protocol([], ["a", "b"])
    assert result_a == [] and result_b == []
    assert msgs["1"] == [] and msgs["4"] == []

    result_a, result_b, _ = run_protocol([], [])
    assert result_a == [] and result_b == []


def test_duplicates_are_dropped_and_peer_sees_distinct_count() -> None:
    ids_a = ["a", "b", "a", "c", "b", "a"]
    party = PsiParty()

    msg = party.blind(ids_a)
    result_a, result_b, _ = run_protocol(ids_a, ["a", "a", "c"])

    assert len(msg) == 3 and party.set_size == 3
    assert result_a == ["a", "c"]
    assert result_b == ["a", "c"]


def test_int_str_and_bytes_forms_of_an_id_match() -> None:
    result_a, result_b, _ = run_protocol(np.array([12, 7, 99], dtype=np.int64), ["12", "99", "5"])

    assert result_a == [12, 99]
    assert result_b == ["12", "99"]
    assert canonical_id(12) == canonical_id("12") == canonical_id(b"12")
    assert canonical_id(np.int32(-4)) == b"-4"


def test_unicode_ids_and_numpy_str_arrays_work() -> None:
    result_a, _, _ = run_protocol(np.array(["Zoë", "北京", "x"]), ["北京", "Zoë"])

    assert result_a == ["Zoë", "北京"]


def test_executor_gives_the_same_result_as_serial() -> None:
    secret = bytes([7] * 32)
    ids = [f"id{i}" for i in range(1000)]

    serial = PsiParty(secret=secret).blind(ids)
    with ThreadPoolExecutor(max_workers=2) as pool:
        parallel = PsiParty(secret=secret, executor=pool, chunk_size=128).blind(ids)

    assert parallel == serial


def test_protocol_with_executor_intersects_correctly() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        result_a, _, _ = run_protocol(
            [f"{i}" for i in range(0, 600, 2)],
            [f"{i}" for i in range(0, 600, 3)],
            executor=pool,
            chunk_size=64,
        )

    assert result_a == [f"{i}" for i in range(0, 600, 6)]


@pytest.mark.parametrize("bad", [1.5, True, None, ("a",)])
def test_unsupported_id_types_are_refused(bad: object) -> None:
    with pytest.raises(PsiError, match="id"):
        PsiParty().blind(["ok", bad])


def test_single_string_instead_of_collection_is_refused() -> None:
    with pytest.raises(PsiError, match="collection"):
        PsiParty().blind("abc")


def test_float_and_2d_arrays_are_refused() -> None:
    with pytest.raises(PsiError, match="dtype"):
        PsiParty().blind(np.array([1.0, 2.0]))
    with pytest.raises(PsiError, match="1-D"):
        PsiParty().blind(np.array([["a", "b"]]))


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_wrong_secret_size_is_refused(size: int) -> None:
    with pytest.raises(PsiError, match="32 bytes"):
        PsiParty(secret=bytes(size))


def test_low_order_point_from_peer_is_refused() -> None:
    party = PsiParty()
    party.blind(["a"])

    with pytest.raises(PsiError, match="low-order"):
        party.reblind([bytes(32)])
    with pytest.raises(PsiError, match="low-order"):
        party.reblind([(1).to_bytes(32, "little")])


def test_malformed_peer_point_is_refused() -> None:
    party = PsiParty()
    party.blind(["a"])

    with pytest.raises(PsiError, match="32 bytes"):
        party.reblind([b"short"])


def test_repeated_peer_values_are_refused() -> None:
    party = PsiParty()
    party.blind(["a"])
    value = hash_to_point("x")

    with pytest.raises(PsiError, match="repeated"):
        party.reblind([value, value])


def test_steps_out_of_order_are_refused() -> None:
    party = PsiParty()
    with pytest.raises(PsiError, match="blind"):
        party.reblind([hash_to_point("x")])
    with pytest.raises(PsiError, match="blind"):
        party.intersect([], [])


def test_party_is_single_use() -> None:
    party = PsiParty()
    party.blind(["a"])

    with pytest.raises(PsiError, match="fresh"):
        party.blind(["b"])


def test_own_list_of_wrong_length_is_refused() -> None:
    party = PsiParty()
    party.blind(["a", "b"])

    with pytest.raises(PsiError, match="expected 2"):
        party.intersect([hash_to_point("a")], [])


def test_hash_to_point_is_canonical_and_usable() -> None:
    key = X25519PrivateKey.generate()
    for i in range(200):
        u = hash_to_point(i)
        assert len(u) == 32
        assert int.from_bytes(u, "little") < 2**255 - 19
        key.exchange(X25519PublicKey.from_public_bytes(u))  # does not raise
