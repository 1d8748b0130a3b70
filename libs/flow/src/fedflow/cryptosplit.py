"""Cutting a crypto chunk that would not fit in one bus frame into row slices, and rejoining.

Why: a message above the bus's `max_frame_bytes` is chunked by the bus and reassembled by the
consumer that stores its last piece, holding the earlier pieces unacked. Crypto replicas
consume with prefetch 1 and keep their chunk stores in memory, so a chunked crypto.job would
wait forever for a piece its replica can never receive (or whose pieces went to different
replicas). So no crypto.job may need chunking: the BusExecutor cuts any kernel call whose
arguments (or result, though the reply topic's single consumer could reassemble that) could
exceed its byte budget into row slices first.

All whitelisted kernels but one are row-wise: row i of the result depends only on row i of
their array arguments (an array of one row, e.g. a shared exponent, is broadcast and sent
whole). Their slices' results are concatenated; k_validate's slices get their row offset;
k_multiexp's slices are partial products of the same k columns, multiplied back together
with k_mul (k products). k_prod_segments (homomorphic sums over runs of rows) is not cut; the
executor runs an oversize one in the calling process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fedcrypto.paillier import kernels

Args = tuple[Any, ...]


@dataclass(frozen=True)
class _Rule:
    rows_from: int
    """Position of the argument whose first dimension is the row count."""
    row_args: tuple[int, ...]
    """Positions of arguments sliced with the rows (when they have that many rows)."""
    combine: str
    """"concat" (stack results), "none" (k_validate: nothing to return), "product" (k_multiexp)."""
    offset_arg: int | None = None
    """Position of a row-offset argument that slices shift (k_validate's error messages)."""


_RULES: dict[str, _Rule] = {
    "k_obfuscators": _Rule(1, (1,), "concat"),
    "k_encrypt": _Rule(1, (1, 2), "concat"),
    "k_encrypt_with": _Rule(1, (1, 2), "concat"),
    "k_rerandomize": _Rule(1, (1, 2), "concat"),
    "k_mul": _Rule(1, (1, 2), "concat"),
    "k_add_plain": _Rule(1, (1, 2), "concat"),
    "k_invert": _Rule(1, (1,), "concat"),
    "k_pow": _Rule(1, (1, 2, 3), "concat"),
    "k_decrypt": _Rule(2, (2,), "concat"),
    "k_validate": _Rule(1, (1,), "none", offset_arg=2),
    "k_multiexp": _Rule(1, (1, 2, 3), "product"),
}


def _short_name(name: str) -> str:
    return name.rsplit(":", 1)[-1]


def _spec_modulus_bytes(spec: Any) -> int:
    """Bytes of n^2 for an obfuscation spec (the width of ciphertext rows)."""
    if isinstance(spec, tuple) and spec and spec[0] in ("djn", "textbook"):
        return 2 * len(spec[1]) + 8
    if isinstance(spec, tuple) and spec and spec[0] in ("djn_crt", "textbook_crt"):
        return 2 * (len(spec[1]) + len(spec[2])) + 8
    return 0


def _row_bytes(rule: _Rule, args: Args, rows: int) -> tuple[int, int]:
    """(bytes of arguments per row, bytes of result per row): an estimate from above."""
    in_row = 0
    widest = 0
    for pos in rule.row_args:
        arg = args[pos] if pos < len(args) else None
        if isinstance(arg, np.ndarray) and arg.ndim >= 1 and arg.shape[0] == rows and rows:
            per_row = arg.nbytes // rows
            in_row += per_row
            if arg.dtype == np.uint64:
                widest = max(widest, per_row)
    # Results are limb rows modulo n^2 at most: twice the widest limb argument (plaintexts are
    # half as wide as ciphertexts), or the spec's n^2 when the inputs are only random bytes.
    out_row = 0 if rule.combine != "concat" else max(2 * widest, _spec_modulus_bytes(args[0]))
    return in_row, out_row


def fixed_bytes(args: Args) -> int:
    """Bytes of the arguments that every slice carries whole (keys, specs, shared rows)."""
    total = 0
    for arg in args:
        if isinstance(arg, bytes):
            total += len(arg)
        elif isinstance(arg, tuple):
            total += fixed_bytes(arg) + 1024  # a table travels as a ~1 KiB reference
        elif isinstance(arg, np.ndarray):
            total += arg.nbytes
    return total


def split(name: str, args: Args, budget: int) -> list[Args] | None:
    """Row slices of a kernel call so that each slice's arguments and result fit in `budget`.

    [args] when the call fits already; None when it does not fit and this kernel cannot be cut.
    """
    rule = _RULES.get(_short_name(name))
    if rule is None:
        return [args] if fixed_bytes(args) <= budget else None
    rows_arg = args[rule.rows_from]
    if not isinstance(rows_arg, np.ndarray) or rows_arg.ndim < 1:
        return [args]
    rows = rows_arg.shape[0]
    in_row, out_row = _row_bytes(rule, args, rows)
    shared = fixed_bytes(tuple(a for i, a in enumerate(args) if i not in rule.row_args))
    per_row = max(in_row, out_row, 1)
    # Encoding adds a little per array (dtype, shape, msgpack headers) and per table: keep a
    # margin so that a slice never comes out over the budget once encoded.
    budget = int(budget * 0.9) - 4096
    if shared + rows * per_row <= budget:
        return [args]
    room = budget - shared
    if room < per_row:
        return None
    step = max(1, room // per_row)
    out = []
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        sliced = list(args)
        for pos in rule.row_args:
            arg = args[pos] if pos < len(args) else None
            if isinstance(arg, np.ndarray) and arg.ndim >= 1 and arg.shape[0] == rows:
                sliced[pos] = np.ascontiguousarray(arg[lo:hi])
        if rule.offset_arg is not None:
            base = int(args[rule.offset_arg]) if rule.offset_arg < len(args) else 0
            if rule.offset_arg < len(sliced):
                sliced[rule.offset_arg] = base + lo
            else:
                sliced.append(base + lo)
        out.append(tuple(sliced))
    return out


def combiner(name: str, args: Args) -> Callable[[Sequence[Any]], Any]:
    """How the results of `split`'s slices make the result of the whole call."""
    rule = _RULES[_short_name(name)]
    if rule.combine == "none":
        return lambda _parts: None
    if rule.combine == "product":
        n2_b = args[0]

        def product(parts: Sequence[Any]) -> Any:
            total = parts[0]
            for part in parts[1:]:
                total = kernels.k_mul(n2_b, total, part)
            return total

        return product
    return lambda parts: np.ascontiguousarray(np.concatenate(list(parts), axis=0))
