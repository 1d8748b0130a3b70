"""Shamir secret sharing over GF(2^256 + 297)."""

from __future__ import annotations

import itertools
import os
import random

import gmpy2
import pytest
from fedcrypto.shamir import (
    PRIME,
    InconsistentShares,
    NotEnoughShares,
    ShamirError,
    Share,
    combine,
    combine_bytes,
    split,
    split_bytes,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def test_field_is_the_smallest_prime_above_2_256() -> None:
    assert gmpy2.is_prime(PRIME)
    assert gmpy2.next_prime(2**256) == PRIME


@settings(max_examples=30, deadline=None)
@given(
    secret=st.integers(min_value=0, max_value=PRIME - 1),
    n=st.integers(min_value=1, max_value=9),
    data=st.data(),
)
def test_any_threshold_subset_recovers_the_secret(secret: int, n: int, data: st.DataObject) -> None:
    threshold = data.draw(st.integers(min_value=1, max_value=n))
    shares = split(secret, threshold, range(1, n + 1))

    subset = data.draw(st.permutations(shares)).__getitem__(slice(threshold))

    assert combine(subset, threshold) == secret


def test_all_subsets_of_size_t_agree() -> None:
    secret = random.getrandbits(256)
    shares = split(secret, 3, [5, 9, 11, 200, 7])

    for subset in itertools.combinations(shares, 3):
        assert combine(subset, 3) == secret


def test_fewer_than_threshold_shares_fail_clearly() -> None:
    shares = split(12345, 4, range(1, 7))

    with pytest.raises(NotEnoughShares, match="need 4 shares"):
        combine(shares[:3], 4)


def test_interpolating_too_few_shares_gives_an_unrelated_value() -> None:
    # Why combine needs the threshold: t - 1 shares interpolate *some* polynomial,
    # whose constant term is a random field element, not the secret.
    shares = split(42, 3, [1, 2, 3])

    wrong = combine(shares[:2], 2)

    assert wrong != 42
    assert combine(shares, 3) == 42


def test_extra_shares_catch_a_corrupted_share() -> None:
    shares = split(777, 3, range(1, 6))
    bad = Share(shares[4].x, (shares[4].y + 1) % PRIME)

    with pytest.raises(InconsistentShares):
        combine([*shares[:4], bad], 3)


def test_bytes_round_trip() -> None:
    secret = os.urandom(32)

    shares = split_bytes(secret, 2, [3, 4, 5])

    assert combine_bytes(shares[1:], 2) == secret
    assert Share.from_y_bytes(3, shares[0].y_bytes()) == shares[0]


@pytest.mark.parametrize(
    ("secret", "threshold", "xs", "match"),
    [
        (1, 0, [1, 2], "at least 1"),
        (1, 3, [1, 2], "exceeds"),
        (1, 2, [1, 1], "distinct"),
        (1, 2, [0, 1], r"\[1, PRIME\)"),
        (-1, 2, [1, 2], "field element"),
        (PRIME, 2, [1, 2], "field element"),
    ],
)
def test_bad_split_parameters_are_refused(
    secret: int, threshold: int, xs: list[int], match: str
) -> None:
    with pytest.raises(ShamirError, match=match):
        split(secret, threshold, xs)


def test_wrong_secret_length_and_share_bytes_are_refused() -> None:
    with pytest.raises(ShamirError, match="32 bytes"):
        split_bytes(b"short", 2, [1, 2])
    with pytest.raises(ShamirError, match="33 bytes"):
        Share.from_y_bytes(1, b"\x00" * 32)


def test_repeated_x_in_combine_is_refused() -> None:
    shares = split(9, 2, [1, 2])

    with pytest.raises(ShamirError, match="repeated"):
        combine([shares[0], shares[0]], 2)
