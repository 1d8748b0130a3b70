"""Kernel arguments and results on the wire without pickle: the crypto job pool's codec.

fedcrypto's batch kernels take bytes, ints, tuples, ndarrays and FixedBaseTable objects and
return limb arrays (or None). This codec writes exactly that data model as msgpack
(`ARGS_FORMAT`, `RESULT_FORMAT`), with extension types for what msgpack has no native form of:

  ext 1  tuple       packed msgpack array of the encoded items
  ext 2  ndarray     packed fedschemas NDArray map {data, dtype, shape}: whitelisted dtypes
                     only, little-endian C-order bytes, size-checked before anything is read
  ext 3  big int     sign byte (0 or 1) + little-endian magnitude, for ints outside int64/uint64
  ext 4  table ref   packed [sha256 of the table's limb array, modulus, base, exponent_bits,
                     window] (little-endian integers as bytes)

Everything else (dicts, floats, objects) is refused on both sides, so decoding never runs code.

Fixed-base tables (16 MiB for a 2048-bit key) are never shipped. A table's entries are a pure
function of (base, modulus, exponent_bits, window) -- FixedBaseTable.build is deterministic and
entry [position 0, digit 1] is the base itself -- so a job carries that recipe (under 1 KiB)
plus the sha256 of the limb array. A replica looks the digest up in its `TableCache`; on a miss
it rebuilds the table once (about 0.3 s for 2048 bits, less than shipping 16 MiB through the
broker and cheaper than a request/reply round trip), checks that the rebuilt entries hash to
the digest (refusing the job if they do not: a different fedcrypto build would otherwise give
wrong ciphertexts), and keeps it for every later chunk of any job that uses it.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import numpy as np
from fedcrypto.paillier.fixed_base import FixedBaseTable
from fedcrypto.paillier.limbs import int_from_bytes, int_to_bytes, limbs_for
from fedschemas import NDArray
from fedschemas.ndarray import CONTEXT_MAX_ARRAY_BYTES, CONTEXT_WIRE, MAX_ARRAY_BYTES
from pydantic import TypeAdapter, ValidationError

ARGS_FORMAT: Final = "fedflow.cryptopool.args.v1"
RESULT_FORMAT: Final = "fedflow.cryptopool.result.v1"

_EXT_TUPLE: Final = 1
_EXT_ARRAY: Final = 2
_EXT_BIGINT: Final = 3
_EXT_TABLE: Final = 4

_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1

MAX_TABLE_BYTES: Final = 64 * 1024 * 1024
"""Largest fixed-base table a replica agrees to build (a 2048-bit key's is 16 MiB)."""

_ARRAY = TypeAdapter(NDArray)


class CodecError(ValueError):
    """A value that this codec does not carry, or bytes that are not a valid encoding."""


@dataclass(frozen=True)
class TableRef:
    """How a job names a fixed-base table: its content digest and the recipe to rebuild it."""

    digest: bytes
    modulus: bytes
    base: bytes
    exponent_bits: int
    window: int

    def table_bytes(self) -> int:
        positions = -(-self.exponent_bits // self.window)
        return (positions << self.window) * limbs_for(int_from_bytes(self.modulus)) * 8


class TableDigests:
    """The sender's side: the digest of each table object, computed once (16 MiB of sha256)."""

    def __init__(self) -> None:
        self._refs: weakref.WeakKeyDictionary[FixedBaseTable, TableRef] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def ref(self, table: FixedBaseTable) -> TableRef:
        with self._lock:
            ref = self._refs.get(table)
            if ref is None:
                array = np.ascontiguousarray(table.to_array())
                ref = TableRef(
                    digest=table_digest(table),
                    modulus=int_to_bytes(table.modulus),
                    # Entry [position 0, digit 1] is base^1: the base itself, reduced.
                    base=array[1].tobytes(),
                    exponent_bits=table.exponent_bits,
                    window=table.window,
                )
                self._refs[table] = ref
            return ref


def table_digest(table: FixedBaseTable) -> bytes:
    """sha256 of the table's limb array (little-endian uint64, C order) and its parameters."""
    h = hashlib.sha256()
    h.update(f"fbt:{table.window}:{table.exponent_bits}:".encode())
    h.update(int_to_bytes(table.modulus))
    h.update(np.ascontiguousarray(table.to_array(), dtype="<u8").tobytes())
    return h.digest()


class TableCache:
    """The replica's side: tables by digest, rebuilt from their recipe on a miss (LRU).

    Thread-safe; a miss builds under the lock, so two chunks that miss the same table at once
    build it once.
    """

    def __init__(self, max_tables: int = 8, max_table_bytes: int = MAX_TABLE_BYTES) -> None:
        self._tables: OrderedDict[bytes, FixedBaseTable] = OrderedDict()
        self._max_tables = max_tables
        self._max_table_bytes = max_table_bytes
        self._lock = threading.Lock()
        self.builds = 0
        """How many tables this cache built (a test and operator counter)."""

    def __len__(self) -> int:
        with self._lock:
            return len(self._tables)

    def resolve(self, ref: TableRef) -> FixedBaseTable:
        with self._lock:
            table = self._tables.get(ref.digest)
            if table is not None:
                self._tables.move_to_end(ref.digest)
                return table
            table = self._build(ref)
            self._tables[ref.digest] = table
            while len(self._tables) > self._max_tables:
                self._tables.popitem(last=False)
            return table

    def _build(self, ref: TableRef) -> FixedBaseTable:
        if not 1 <= ref.window <= 16 or ref.exponent_bits <= 0 or ref.exponent_bits % 8:
            raise CodecError("table recipe has an invalid window or exponent size")
        if ref.table_bytes() > self._max_table_bytes:
            raise CodecError(
                f"table of {ref.table_bytes()} bytes is over the limit of {self._max_table_bytes}"
            )
        modulus = int_from_bytes(ref.modulus)
        if modulus < 3:
            raise CodecError("table modulus must be at least 3")
        table = FixedBaseTable.build(
            int_from_bytes(ref.base), modulus, ref.exponent_bits, ref.window
        )
        self.builds += 1
        if table_digest(table) != ref.digest:
            raise CodecError("rebuilt table does not match its digest (fedcrypto versions differ?)")
        return table


def encode(value: Any, tables: TableDigests | None = None) -> bytes:
    """msgpack bytes of `value` (args tuple or kernel result) in this module's data model."""
    return msgpack.packb(_to_wire(value, tables), use_bin_type=True)  # type: ignore[no-any-return]


def _to_wire(value: Any, tables: TableDigests | None) -> Any:
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) or type(value).__name__ == "mpz":
        v = int(value)
        if _INT64_MIN <= v <= _UINT64_MAX:
            return v
        magnitude = abs(v)
        raw = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
        return msgpack.ExtType(_EXT_BIGINT, (b"\x01" if v < 0 else b"\x00") + raw)
    if isinstance(value, tuple):
        items = [_to_wire(v, tables) for v in value]
        return msgpack.ExtType(_EXT_TUPLE, msgpack.packb(items, use_bin_type=True))
    if isinstance(value, np.ndarray):
        try:
            wire = _ARRAY.dump_python(value, context={CONTEXT_WIRE: True})
        except (ValueError, ValidationError) as exc:
            raise CodecError(str(exc)) from exc
        return msgpack.ExtType(_EXT_ARRAY, msgpack.packb(wire, use_bin_type=True))
    if isinstance(value, FixedBaseTable):
        if tables is None:
            raise CodecError("a fixed-base table needs a TableDigests to be encoded")
        ref = tables.ref(value)
        fields = [ref.digest, ref.modulus, ref.base, ref.exponent_bits, ref.window]
        return msgpack.ExtType(_EXT_TABLE, msgpack.packb(fields, use_bin_type=True))
    raise CodecError(f"{type(value).__name__} values are not carried by the crypto job codec")


def decode(
    data: bytes,
    resolve_table: Callable[[TableRef], FixedBaseTable] | None = None,
    *,
    max_array_bytes: int = MAX_ARRAY_BYTES,
) -> Any:
    """The value `encode` wrote; CodecError for anything else. Arrays come back writable."""

    def hook(code: int, raw: bytes) -> Any:
        if code == _EXT_TUPLE:
            items = _unpack(raw)
            if not isinstance(items, list):
                raise CodecError("tuple extension must hold an array")
            return tuple(items)
        if code == _EXT_ARRAY:
            wire = msgpack.unpackb(raw, raw=False, strict_map_key=True)
            try:
                arr = _ARRAY.validate_python(
                    wire, context={CONTEXT_MAX_ARRAY_BYTES: max_array_bytes}
                )
            except ValidationError as exc:
                raise CodecError(f"bad array: {exc.errors()[0]['msg']}") from exc
            # Kernels may hand inputs to the C extension as buffers: give them their own copy.
            return np.array(arr, copy=True)
        if code == _EXT_BIGINT:
            if len(raw) < 2 or raw[0] not in (0, 1):
                raise CodecError("bad big integer")
            magnitude = int.from_bytes(raw[1:], "little")
            return -magnitude if raw[0] else magnitude
        if code == _EXT_TABLE:
            fields = msgpack.unpackb(raw, raw=False, strict_map_key=True)
            if (
                not isinstance(fields, list)
                or len(fields) != 5
                or not all(isinstance(f, bytes) for f in fields[:3])
                or not all(isinstance(f, int) and not isinstance(f, bool) for f in fields[3:])
                or len(fields[0]) != 32
            ):
                raise CodecError("bad table reference")
            if resolve_table is None:
                raise CodecError("a table reference where none is allowed")
            return resolve_table(TableRef(*fields))
        raise CodecError(f"unknown extension type {code}")

    def _unpack(raw: bytes) -> Any:
        try:
            return msgpack.unpackb(raw, raw=False, strict_map_key=True, ext_hook=hook)
        except CodecError:
            raise
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise CodecError(f"not valid msgpack ({type(exc).__name__})") from exc

    value = _unpack(data)
    _check_model(value)
    return value


def _check_model(value: Any) -> None:
    """Refuse maps and floats: the data model is bytes, ints, str, None, tuples, arrays."""
    if isinstance(value, tuple | list):
        for item in value:
            _check_model(item)
    elif not (
        value is None or isinstance(value, bool | int | str | bytes | np.ndarray | FixedBaseTable)
    ):
        raise CodecError(f"{type(value).__name__} is not part of the crypto job data model")
