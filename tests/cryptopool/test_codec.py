"""The crypto job codec: the kernels' data model round-trips; everything else is refused."""

from __future__ import annotations

import pickle

import msgpack
import numpy as np
import pytest
from fedcrypto.paillier import generate_keypair
from fedflow.cryptocodec import CodecError, TableCache, TableDigests, TableRef, decode, encode
from hypothesis import given, settings
from hypothesis import strategies as st

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.binary(max_size=64),
    st.text(max_size=16),
)
_ARRAYS = st.builds(
    lambda rows, cols, seed, dtype: (
        np.random.default_rng(seed).integers(0, 200, size=(rows, cols)).astype(dtype)
    ),
    st.integers(0, 5),
    st.integers(1, 5),
    st.integers(0, 1000),
    st.sampled_from([np.uint64, np.uint8, np.int64, np.bool_]),
)
_VALUES = st.recursive(
    st.one_of(_SCALARS, _ARRAYS), lambda inner: st.tuples(inner, inner) | st.tuples(inner)
)


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b)
        )
    if isinstance(a, tuple):
        return (
            isinstance(b, tuple)
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(_VALUES)
def test_kernel_values_round_trip_exactly(value: object) -> None:
    assert _same(decode(encode(value)), value)


def test_decoded_arrays_are_writable_copies() -> None:
    arr = np.arange(6, dtype=np.uint64).reshape(2, 3)

    out = decode(encode((arr,)))[0]

    out[0, 0] = 99  # would raise on a read-only view of the message
    assert arr[0, 0] == 0


@pytest.mark.parametrize(
    "value",
    [{"a": 1}, 1.5, object(), np.array(["x"]), np.array([1 + 2j])],
    ids=["map", "float", "object", "str-array", "complex-array"],
)
def test_values_outside_the_data_model_are_refused_when_encoding(value: object) -> None:
    with pytest.raises(CodecError):
        encode((value,))


@pytest.mark.parametrize(
    "raw",
    [
        msgpack.packb({"a": 1}),
        msgpack.packb(1.5),
        pickle.dumps(("x",)),
        msgpack.packb(msgpack.ExtType(9, b"")),
        msgpack.packb(
            msgpack.ExtType(2, msgpack.packb({"data": b"1", "dtype": "object", "shape": [1]}))
        ),
        msgpack.packb(msgpack.ExtType(4, msgpack.packb([b"short", b"", b"", 8, 8]))),
    ],
    ids=["map", "float", "pickle", "unknown-ext", "object-dtype", "bad-table-ref"],
)
def test_bytes_outside_the_data_model_are_refused_when_decoding(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode(raw, TableCache().resolve)


def test_a_table_travels_as_digest_and_recipe_and_is_rebuilt_once_per_cache() -> None:
    # Prepare
    pk, _ = generate_keypair(512, insecure_allow_short=True)
    table = pk.precompute()
    cache = TableCache()

    # Execute: two messages naming the same table.
    first = encode(("djn", table), TableDigests())
    a = decode(first, cache.resolve)[1]
    b = decode(encode(("djn", table), TableDigests()), cache.resolve)[1]

    # Assert: small on the wire, same entries, built once.
    assert len(first) < 2048 < table.nbytes
    assert np.array_equal(a.to_array(), table.to_array())
    assert a is b and cache.builds == 1


def test_a_table_whose_rebuild_does_not_match_its_digest_is_refused() -> None:
    pk, _ = generate_keypair(512, insecure_allow_short=True)
    ref = TableDigests().ref(pk.precompute())
    forged = TableRef(b"\x00" * 32, ref.modulus, ref.base, ref.exponent_bits, ref.window)

    with pytest.raises(CodecError, match="digest"):
        TableCache().resolve(forged)


def test_a_table_recipe_over_the_size_limit_is_refused_before_building() -> None:
    pk, _ = generate_keypair(512, insecure_allow_short=True)
    ref = TableDigests().ref(pk.precompute())
    huge = TableRef(ref.digest, ref.modulus, ref.base, 1 << 20, 16)

    with pytest.raises(CodecError, match="over the limit"):
        TableCache().resolve(huge)
