"""NDArray: numpy arrays through payloads without pickle, whitelisted dtypes, size limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from fedschemas import (
    ALLOWED_DTYPES,
    Envelope,
    FederationData,
    MalformedMessage,
    decode_envelope,
    decode_payload,
    encode_envelope,
    encode_payload,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

SHAPES = [(), (0,), (5,), (0, 3), (3, 0), (2, 3), (2, 3, 4), (1, 1, 1, 1, 2)]


def _round_trip(array: np.ndarray[Any, Any], make_envelope: Callable[..., Envelope]) -> Any:
    payload = FederationData(kind="masked_vector", array=array)
    env = make_envelope(type="federation.data", payload=encode_payload(payload))
    decoded = decode_payload(decode_envelope(encode_envelope(env)), FederationData)
    assert decoded.array is not None
    return decoded.array


def _sample(dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    size = int(np.prod(shape))
    if dtype.kind == "b":
        base = np.array([True, False, False], dtype=dtype)
    elif dtype.kind == "f":
        info_f = np.finfo(dtype)
        base = np.array([info_f.min, info_f.max, info_f.tiny, -2.5, 0.1], dtype=dtype)
    else:
        info = np.iinfo(dtype)
        base = np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype)
    return np.resize(base, size).reshape(shape)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype_name", list(ALLOWED_DTYPES))
def test_every_allowed_dtype_and_shape_round_trips_exactly(
    dtype_name: str, shape: tuple[int, ...], make_envelope: Callable[..., Envelope]
) -> None:
    # Prepare
    original = _sample(np.dtype(dtype_name), shape)

    # Execute
    decoded = _round_trip(original, make_envelope)

    # Assert
    assert decoded.dtype == np.dtype(dtype_name)
    assert decoded.shape == shape
    np.testing.assert_array_equal(decoded, original)


def test_big_endian_and_non_contiguous_inputs_keep_their_values(
    make_envelope: Callable[..., Envelope],
) -> None:
    big_endian = np.arange(12, dtype=">i4").reshape(3, 4)
    transposed = np.arange(12, dtype=np.float64).reshape(3, 4).T
    strided = np.arange(20, dtype=np.uint16)[::3]

    for original in (big_endian, transposed, strided):
        decoded = _round_trip(original, make_envelope)
        np.testing.assert_array_equal(decoded, original)
        assert decoded.dtype.byteorder in "<|="


def test_nan_and_infinities_survive(make_envelope: Callable[..., Envelope]) -> None:
    original = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float32)

    decoded = _round_trip(original, make_envelope)

    np.testing.assert_array_equal(decoded, original)
    assert np.signbit(decoded[3])


def test_decoded_arrays_are_read_only_views(make_envelope: Callable[..., Envelope]) -> None:
    decoded = _round_trip(np.ones(4), make_envelope)

    with pytest.raises(ValueError, match="read-only"):
        decoded[0] = 2.0
    assert decoded.copy().flags.writeable


@pytest.mark.parametrize(
    "array",
    [
        np.array([object(), 1], dtype=object),
        np.array(["a", "b"]),
        np.array([1 + 2j]),
        np.array([1.0], dtype=np.float16),
        np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.array(["2024-01-01"], dtype="datetime64[D]"),
    ],
    ids=["object", "unicode", "complex", "float16", "structured", "datetime64"],
)
def test_dtypes_outside_the_whitelist_are_refused_when_building(array: Any) -> None:
    with pytest.raises(ValidationError, match="not allowed"):
        FederationData(kind="masked_vector", array=array)


def _payload_with_array(array_map: Any) -> bytes:
    return msgpack.packb({"array": array_map, "kind": "masked_vector", "meta": {}})  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("array_map", "reason"),
    [
        ({"data": b"\x00" * 8, "dtype": "object", "shape": [1]}, "dtype 'object' is not allowed"),
        ({"data": b"\x00" * 8, "dtype": "<f8", "shape": [1]}, "not allowed"),
        ({"data": b"\x00" * 16, "dtype": "complex128", "shape": [1]}, "not allowed"),
        ({"data": b"\x00" * 8, "dtype": "float64", "shape": [2]}, "need 16"),
        ({"data": b"\x00" * 8, "dtype": "float64", "shape": [-1]}, "non-negative"),
        ({"data": b"\x00" * 8, "dtype": "float64", "shape": [True]}, "non-negative"),
        ({"data": "AAAAAAAAAAA=", "dtype": "float64", "shape": [1]}, "binary"),
        ({"data": b"", "dtype": "float64", "shape": [1] * 33}, "dimensions"),
        ({"data": b"\x00" * 8, "dtype": "float64"}, "exactly the keys"),
        ({"data": b"\x00" * 8, "dtype": "float64", "shape": [1], "x": 1}, "exactly the keys"),
        ([b"\x00" * 8, "float64", [1]], "expected a numpy array"),
    ],
    ids=[
        "object-dtype",
        "byte-order-string",
        "complex",
        "short-data",
        "negative-dim",
        "bool-dim",
        "text-data",
        "too-many-dims",
        "missing-key",
        "extra-key",
        "not-a-map",
    ],
)
def test_bad_array_maps_on_the_wire_are_malformed_with_a_reason(
    array_map: Any, reason: str, make_envelope: Callable[..., Envelope]
) -> None:
    env = make_envelope(type="federation.data", payload=_payload_with_array(array_map))

    with pytest.raises(MalformedMessage) as caught:
        decode_payload(env)

    assert reason in caught.value.reason
    assert "array" in caught.value.reason


def test_arrays_over_the_size_limit_are_refused(make_envelope: Callable[..., Envelope]) -> None:
    # Prepare: a 1 KiB array, decoded with a 1000-byte limit.
    env = make_envelope(
        type="federation.data",
        payload=encode_payload(FederationData(kind="aggregate", array=np.zeros(128))),
    )

    # Execute / Assert
    assert decode_payload(env, max_array_bytes=1024) is not None
    with pytest.raises(MalformedMessage, match="1024 bytes, over the limit of 1000 bytes"):
        decode_payload(env, max_array_bytes=1000)


def test_huge_declared_shape_is_refused_before_allocating(
    make_envelope: Callable[..., Envelope],
) -> None:
    array_map = {"data": b"", "dtype": "float64", "shape": [2**40, 2**20]}
    env = make_envelope(type="federation.data", payload=_payload_with_array(array_map))

    with pytest.raises(MalformedMessage, match="over the limit"):
        decode_payload(env)


@settings(max_examples=30, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(list(ALLOWED_DTYPES.values())),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_random_arrays_round_trip_bit_for_bit(array: np.ndarray[Any, Any]) -> None:
    payload = FederationData(kind="aggregate", array=array)

    decoded = FederationData.model_validate(
        msgpack.unpackb(encode_payload(payload), raw=False)
    ).array

    assert decoded is not None
    assert decoded.shape == array.shape
    little_endian = array.astype(array.dtype.newbyteorder("<"))
    assert decoded.tobytes() == little_endian.tobytes()
