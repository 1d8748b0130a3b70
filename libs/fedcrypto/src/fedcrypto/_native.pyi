"""Type stub of the optional C extension fedcrypto._native (source: libs/fedcrypto/native).

Buffers are C-contiguous: residue rows are uint64 limbs (count, limbs), exponents uint8 bytes
(rows, exp_bytes), moduli little-endian bytes. Every function fills `out` (scan_rows: `digests`;
product_gcd returns its answer) and releases the GIL.
"""

from typing import Any

from numpy.typing import NDArray

Buffer = NDArray[Any] | bytes | bytearray | memoryview

def simd_supported() -> bool: ...
def table52_limbs(modulus: bytes) -> int: ...
def mulmod(out: Buffer, a: Buffer, b: Buffer, modulus: bytes, limbs: int, simd: bool) -> None: ...
def powmod(
    out: Buffer,
    limbs: int,
    base: Buffer,
    base_limbs: int,
    exps: Buffer,
    exp_bytes: int,
    modulus: bytes,
    simd: bool,
) -> None: ...
def fixed_base(
    out: Buffer,
    limbs: int,
    table: Buffer,
    table52: Buffer | None,
    window: int,
    positions: int,
    exps: Buffer,
    exp_bytes: int,
    modulus: bytes,
    simd: bool,
) -> None: ...
def prepare_table(table: Buffer, limbs: int, modulus: bytes) -> bytearray: ...
def crt(
    out: Buffer,
    limbs: int,
    xp: Buffer,
    p_limbs: int,
    xq: Buffer,
    q_limbs: int,
    p2: bytes,
    q2: bytes,
    p2_inverse: bytes,
) -> None: ...
def apply_plain(
    out: Buffer, limbs: int, plain: Buffer, plain_limbs: int, r: Buffer | None, n: bytes
) -> None: ...
def invert(out: Buffer, a: Buffer, modulus: bytes, limbs: int) -> None: ...
def decrypt(
    out: Buffer,
    limbs: int,
    c: Buffer,
    c_limbs: int,
    p: bytes,
    q: bytes,
    hp: bytes,
    hq: bytes,
    p_inverse: bytes,
    simd: bool,
) -> None: ...
def multiexp(
    out: Buffer,
    limbs: int,
    bases: Buffer,
    inverses: Buffer | None,
    exps: Buffer,
    modulus: bytes,
    simd: bool,
) -> None: ...
def prod_segments(out: Buffer, a: Buffer, lengths: Buffer, modulus: bytes, limbs: int) -> None: ...
def scan_rows(
    digests: Buffer, rows: Buffer, limbs: int, top: bytes, simd: bool
) -> tuple[int, int]: ...
def product_gcd(rows: Buffer, limbs: int, n: bytes, simd: bool) -> bytes: ...
