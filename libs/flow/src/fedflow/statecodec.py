"""Checkpoint state to bytes and back, without pickle.

msgpack of JSON-like values (None, bool, int, float, str, bytes, lists/tuples, dicts with str
or int keys) plus two extension types:
  ext 1  numpy array: msgpack [dtype name, shape, C-order little-endian bytes]; numeric and
         bool dtypes as in fedschemas' wire whitelist, plus fixed-width unicode ("<U<n>")
         for id columns;
  ext 2  an int outside 64 bits (RNG states hold 128-bit ints): its decimal digits.
numpy scalars are stored as the Python number. Decoding builds only these types, so a
tampered checkpoint can at worst fail to decode; it never runs code. Tuples come back as lists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import msgpack
import numpy as np
from fedschemas import ALLOWED_DTYPES

_EXT_ARRAY: Final = 1
_EXT_BIGINT: Final = 2
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_UNICODE = re.compile(r"^<U[0-9]{1,6}$")


class StateCodecError(ValueError):
    """State that cannot be stored, or bytes that are not a stored state."""


def _array_dtype(name: str) -> np.dtype[Any]:
    if name in ALLOWED_DTYPES:
        return ALLOWED_DTYPES[name]
    if _UNICODE.match(name):
        return np.dtype(name)
    raise StateCodecError(f"array dtype {name!r} cannot be checkpointed")


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "U":
            name = f"<U{max(value.dtype.itemsize // 4, 1)}"
        elif value.dtype.kind in "biuf" and value.dtype.name in ALLOWED_DTYPES:
            name = value.dtype.name
        else:
            raise StateCodecError(f"array dtype {value.dtype} cannot be checkpointed")
        data = np.ascontiguousarray(value, dtype=_array_dtype(name)).tobytes()
        return msgpack.ExtType(
            _EXT_ARRAY, msgpack.packb([name, list(value.shape), data], use_bin_type=True)
        )
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return _int(int(value))
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, int):  # only reached for ints msgpack cannot pack
        return msgpack.ExtType(_EXT_BIGINT, str(value).encode("ascii"))
    raise StateCodecError(f"cannot checkpoint a {type(value).__name__}")


def _int(value: int) -> Any:
    if _INT64_MIN <= value <= _UINT64_MAX:
        return value
    return msgpack.ExtType(_EXT_BIGINT, str(value).encode("ascii"))


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_BIGINT:
        text = data.decode("ascii")
        if not re.fullmatch(r"-?[0-9]{1,4000}", text):
            raise StateCodecError("bad big int in checkpoint")
        return int(text)
    if code == _EXT_ARRAY:
        name, shape, raw = msgpack.unpackb(data, raw=False)
        dtype = _array_dtype(name)
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise StateCodecError("bad array shape in checkpoint")
        count = int(np.prod(shape)) if shape else 1
        if len(raw) != count * dtype.itemsize:
            raise StateCodecError("array bytes do not match dtype and shape in checkpoint")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    raise StateCodecError(f"unknown extension type {code} in checkpoint")


def _prepare(value: Any) -> Any:
    # msgpack raises OverflowError on big ints before calling `default`; convert them first.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise StateCodecError(f"checkpoint dict keys must be str or int, got {key!r}")
            out[key] = _prepare(item)
        return out
    if isinstance(value, list | tuple):
        return [_prepare(item) for item in value]
    return value


def encode_state(state: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(_prepare(state), default=_default, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, StateCodecError):
            raise
        raise StateCodecError(f"cannot checkpoint this state: {exc}") from exc
    return packed


def decode_state(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    except StateCodecError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise StateCodecError(f"not a checkpoint state: {exc}") from exc
