"""numpy arrays on the wire without pickle.

`NDArray` is a pydantic field type. On the wire an array is a msgpack map
`{"data": bin, "dtype": str, "shape": [int, ...]}` where `data` is the C-order, little-endian
bytes of the array (`len(data) == prod(shape) * itemsize`). Only the dtypes in
`ALLOWED_DTYPES` are accepted: fixed-size numeric types whose bytes mean the same thing on
every platform. Object, string, structured, complex and half-float dtypes are refused, so
decoding never runs code and never depends on the sender's machine.

Decoded arrays are read-only views over the received bytes (no copy); call `.copy()` to get a
writable one. Limits: `MAX_ARRAY_BYTES` per array (override per call through the validation
context key `"max_array_bytes"`) and `MAX_NDIM` dimensions.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Annotated, Any, Final

import numpy as np
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

MAX_ARRAY_BYTES: Final = 1 << 30
"""Default upper bound on one array's data (1 GiB)."""

MAX_NDIM: Final = 32

# Wire name -> little-endian numpy dtype. The wire names are the numpy names; the byte order is
# always little-endian on the wire whatever the sender's native order.
ALLOWED_DTYPES: Final[Mapping[str, np.dtype[Any]]] = {
    "bool": np.dtype("|b1"),
    "int8": np.dtype("|i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("|u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "uint64": np.dtype("<u8"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}

# Context key a caller sets to change the per-array limit for one validation.
CONTEXT_MAX_ARRAY_BYTES: Final = "max_array_bytes"
# Context key encode_payload sets so the serializer hands msgpack a zero-copy memoryview.
CONTEXT_WIRE: Final = "fedschemas_wire"

_ALLOWED_LIST = ", ".join(ALLOWED_DTYPES)


def wire_dtype_name(dtype: np.dtype[Any]) -> str:
    """The wire name of `dtype`, or ValueError when the dtype is not allowed on the wire."""
    # dtype.name ignores byte order ("int32" for both <i4 and >i4); the kind check keeps out
    # object, string, void/structured, complex and datetime dtypes.
    if dtype.kind in "biuf" and dtype.name in ALLOWED_DTYPES:
        return dtype.name
    raise ValueError(f"array dtype {dtype} is not allowed on the wire; allowed: {_ALLOWED_LIST}")


def _limit(info: ValidationInfo | None) -> int:
    context = info.context if info is not None else None
    if isinstance(context, Mapping):
        value = context.get(CONTEXT_MAX_ARRAY_BYTES)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return MAX_ARRAY_BYTES


def _check_size(nbytes: int, limit: int) -> None:
    if nbytes > limit:
        raise ValueError(f"array is {nbytes} bytes, over the limit of {limit} bytes")


def _normalize(value: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    name = wire_dtype_name(value.dtype)
    if value.ndim > MAX_NDIM:
        raise ValueError(f"array has {value.ndim} dimensions, over the limit of {MAX_NDIM}")
    # No copy when the array is already little-endian and C-contiguous. (Not
    # np.ascontiguousarray: it turns a 0-d array into shape (1,).)
    return value.astype(ALLOWED_DTYPES[name], order="C", copy=False)


def _from_array(value: np.ndarray[Any, Any], limit: int) -> np.ndarray[Any, Any]:
    wire_dtype_name(value.dtype)  # refuse a bad dtype before talking about its size
    _check_size(value.nbytes, limit)
    return _normalize(value)


def _from_wire(value: Mapping[Any, Any], limit: int, *, json: bool) -> np.ndarray[Any, Any]:
    if set(value) != {"data", "dtype", "shape"}:
        raise ValueError("array must be a map with exactly the keys data, dtype, shape")
    dtype_name, shape, data = value["dtype"], value["shape"], value["data"]
    if not isinstance(dtype_name, str) or dtype_name not in ALLOWED_DTYPES:
        shown = dtype_name if isinstance(dtype_name, str) else type(dtype_name).__name__
        raise ValueError(f"array dtype {shown!r} is not allowed; allowed: {_ALLOWED_LIST}")
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ValueError("array shape must be a list of non-negative integers")
    if len(shape) > MAX_NDIM:
        raise ValueError(f"array has {len(shape)} dimensions, over the limit of {MAX_NDIM}")
    if json and isinstance(data, str):  # JSON form (debug dumps, REST): urlsafe base64
        try:
            data = base64.urlsafe_b64decode(data.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise ValueError("array data is not valid base64") from exc
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError("array data must be binary")
    dtype = ALLOWED_DTYPES[dtype_name]
    expected = math.prod(shape) * dtype.itemsize
    _check_size(expected, limit)
    if len(data) != expected:
        raise ValueError(
            f"array data is {len(data)} bytes but dtype {dtype_name} and shape "
            f"{list(shape)} need {expected}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(tuple(shape))


def _validate(value: Any, info: ValidationInfo) -> np.ndarray[Any, Any]:
    limit = _limit(info)
    if isinstance(value, np.ndarray):
        return _from_array(value, limit)
    if isinstance(value, Mapping):
        return _from_wire(value, limit, json=info.mode == "json")
    raise ValueError(
        f"expected a numpy array or a {{data, dtype, shape}} map, got {type(value).__name__}"
    )


def _serialize(value: np.ndarray[Any, Any], info: core_schema.SerializationInfo) -> Any:
    arr = _normalize(value)
    shape = list(arr.shape)
    name = wire_dtype_name(arr.dtype)
    if info.mode == "json":
        data_b64 = base64.urlsafe_b64encode(arr.tobytes()).decode("ascii")
        return {"data": data_b64, "dtype": name, "shape": shape}
    context = info.context
    if isinstance(context, Mapping) and context.get(CONTEXT_WIRE):
        # msgpack packs any buffer as bin: hand it the array's memory, saving one full copy of
        # what can be hundreds of MiB.
        return {"data": arr.reshape(-1).view(np.uint8).data, "dtype": name, "shape": shape}
    return {"data": arr.tobytes(), "dtype": name, "shape": shape}


class _NDArrayAnnotation:
    """pydantic hooks for `NDArray`: validator, serializer and the JSON Schema of the wire map."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            _validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize, info_arg=True
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "object",
            "title": "NDArray",
            "description": (
                "numpy array: data is the C-order little-endian bytes, "
                "len(data) == prod(shape) * itemsize(dtype)"
            ),
            "properties": {
                "data": {"type": "string", "format": "binary"},
                "dtype": {"type": "string", "enum": list(ALLOWED_DTYPES)},
                "shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "maxItems": MAX_NDIM,
                },
            },
            "required": ["data", "dtype", "shape"],
            "additionalProperties": False,
        }


NDArray = Annotated[np.ndarray[Any, np.dtype[Any]], _NDArrayAnnotation]
"""A numpy array field: whitelisted dtypes only, little-endian C-order on the wire."""
