"""The shared limb layout and its converters."""

from __future__ import annotations

import numpy as np
import pytest
from fedaccel.limbs import (
    exponent_words,
    from_limbs,
    limbs_for,
    limbs_to_words,
    to_limbs,
    words_to_limbs,
)
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**2048 - 1), min_size=1, max_size=5))
def test_ints_round_trip_through_the_limb_layout(values: list[int]) -> None:
    data = to_limbs(values, 32)

    assert data.dtype == np.dtype("<u8") and data.shape == (len(values), 32)
    assert from_limbs(data) == values


def test_limb_layout_matches_the_contract_little_endian_u64_and_u32_views() -> None:
    value = (0x1122334455667788 << 64) | 0x99AABBCCDDEEFF00

    data = to_limbs([value], 2)

    assert data[0, 0] == 0x99AABBCCDDEEFF00 and data[0, 1] == 0x1122334455667788
    words = data.view("<u4")
    assert list(words[0]) == [0xDDEEFF00, 0x99AABBCC, 0x55667788, 0x11223344]
    assert int.from_bytes(data[0].tobytes(), "little") == value


def test_limbs_for_counts_64_bit_limbs_of_n_squared() -> None:
    assert limbs_for((1 << 2048) - 1) == 32
    assert limbs_for(1 << 2048) == 33


def test_words_padding_and_trimming_keep_the_value() -> None:
    data = to_limbs([5, 2**100 + 3], 4)

    w = limbs_to_words(data, 12)
    back = words_to_limbs(w, 4)

    assert w.shape == (2, 12)
    assert from_limbs(back) == [5, 2**100 + 3]
    assert from_limbs(limbs_to_words(data, 4)) == [5, 2**100 + 3]


def test_trimming_refuses_to_drop_nonzero_words() -> None:
    data = to_limbs([2**200], 4)

    with pytest.raises(ValueError, match="do not fit"):
        limbs_to_words(data, 6)


def test_to_limbs_refuses_negative_and_too_wide_values() -> None:
    with pytest.raises(ValueError):
        to_limbs([-1], 2)
    with pytest.raises(OverflowError):
        to_limbs([2**128], 2)


def test_exponents_accept_an_int_a_vector_or_limb_rows() -> None:
    shared, is_shared = exponent_words(2**40 + 7, 3)
    per_elem, per_shared = exponent_words(np.array([1, 2, 3], dtype=np.uint64), 3)
    wide, _ = exponent_words(to_limbs([2**70, 1, 0], 2), 3)

    assert is_shared and shared.shape == (1, 2) and from_limbs(shared) == [2**40 + 7]
    assert not per_shared and from_limbs(per_elem) == [1, 2, 3]
    assert from_limbs(wide) == [2**70, 1, 0]
    with pytest.raises(ValueError):
        exponent_words(np.array([1, 2], dtype=np.uint64), 3)
