"""KernelBackend: the Backend interface on the CUDA kernels of kernels/fa_paillier.cu.

The wrappers here are shared by two runners:

* fedaccel.cupy_runtime.CupyRunner launches the kernels on a GPU (cupy.RawModule), with the
  data in cupy arrays (``DeviceCiphertexts``) that stay on the device between chained
  operations;
* fedaccel.host_runtime.HostRunner compiles the same .cu file with the host C++ compiler and
  runs each emulated thread on the CPU, with numpy arrays. It exists so that the kernels and
  these wrappers are exercised without a GPU; it proves nothing about GPU-only behaviour
  (occupancy, register spills, timing).

Kernel arguments are checked against KERNEL_SIGNATURES before every launch; a test checks that
table against the extern "C" declarations in the .cu source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from fedaccel.backend import (
    MULTIEXP_CHUNK,
    Backend,
    Capabilities,
    Exponents,
    check_pack_args,
    exponents,
    fixed_base_square,
    kernel_modulus,
    message_operand,
    multiexp_exponents,
    operand,
    packed_words,
)
from fedaccel.crt import CrtKey
from fedaccel.limbs import (
    Limbs,
    Words,
    from_limbs,
    int_to_words,
    limbs_for,
    to_limbs,
    words_for,
    words_to_limbs,
)
from fedaccel.montgomery import Modulus, kernel_words
from fedaccel.tables import FixedBaseTable

FA_IN_MONT = 1
FA_OUT_MONT = 2

# Argument kinds of each kernel, in order: "p" device pointer (u32*), "i32" int,
# "i64" long long, "u32" unsigned int. Mirrors the extern "C" signatures in fa_paillier.cu.
_MOD = ("p", "u32")
KERNEL_SIGNATURES: dict[str, tuple[str, ...]] = {
    "fa_to_mont": ("p", "p", "i64", *_MOD),
    "fa_from_mont": ("p", "p", "i64", *_MOD),
    "fa_mont_mul": ("p", "p", "p", "i64", "i64", *_MOD),
    "fa_mulmod": ("p", "p", "p", "i64", "i64", *_MOD),
    "fa_powmod": ("p", "p", "p", "i32", "i64", "i64", *_MOD, "i32"),
    "fa_fixed_base_pow": ("p", "p", "i32", "i32", "p", "i32", "i64", "i64", *_MOD, "i32"),
    "fa_encrypt": ("p", "p", "p", "i32", "p", "i32", "i64", *_MOD),
    "fa_encrypt_fixed_base": (
        "p", "p", "p", "i32", "p", "i32", "i32", "p", "i32", "i64", "i64", *_MOD,
    ),
    "fa_multiexp_partial": ("p", "p", "p", "i64", "i32", "i32", "i32", "i64", *_MOD),
    "fa_prod_reduce": ("p", "p", "i32", "i64", *_MOD),
    "fa_decrypt_half": (
        "p", "p", "i32", "i64", "p", "u32", "p", "i32", "p", "u32", "p", "p",
    ),
    "fa_pack": ("p", "p", "i32", "i32", "i64"),
    "fa_unpack": ("p", "p", "i32", "i32", "i64"),
}

_SCALAR_TYPES: dict[str, type[np.generic]] = {"i32": np.int32, "i64": np.int64, "u32": np.uint32}


class KernelRunner(Protocol):
    """Where the kernels run: compiles per limb count, moves arrays, launches."""

    name: str
    is_gpu: bool
    xp: Any
    """Array module of the device arrays (cupy, or numpy for the host emulation)."""

    def to_device(self, host: NDArray[Any]) -> Any: ...

    def to_host(self, dev: Any) -> NDArray[Any]: ...

    def launch(self, words: int, kernel: str, rows: int, args: Sequence[object]) -> None: ...


@dataclass(frozen=True)
class DeviceCiphertexts:
    """A batch of residues mod ``modulus`` resident where the kernels run.

    ``data`` is a C-contiguous (count, words) uint32 device array of canonical residues
    (ordinary form, not Montgomery form), words = the kernel limb count for the modulus.
    """

    data: Any
    modulus: int
    words: int

    @property
    def count(self) -> int:
        return int(self.data.shape[0])


class KernelBackend(Backend):
    """Backend on the CUDA kernels; numpy in/out methods plus device-resident ``*_device``
    methods for chaining."""

    def __init__(self, runner: KernelRunner) -> None:
        self.runner = runner
        self.capabilities = Capabilities(name=runner.name, is_gpu=runner.is_gpu)
        self._blocks: dict[tuple[int, int], Any] = {}
        self._tables: dict[FixedBaseTable, Any] = {}

    # --- plumbing ---------------------------------------------------------------------------

    def _launch(self, words: int, kernel: str, rows: int, *args: object) -> None:
        sig = KERNEL_SIGNATURES[kernel]
        if len(args) != len(sig):
            raise TypeError(f"{kernel}: {len(args)} arguments, signature has {len(sig)}")
        for i, (kind, a) in enumerate(zip(sig, args, strict=True)):
            if kind == "p":
                if isinstance(a, np.generic | int):
                    raise TypeError(f"{kernel} argument {i}: expected an array")
            elif type(a) is not _SCALAR_TYPES[kind]:
                raise TypeError(f"{kernel} argument {i}: expected {kind}, got {type(a)}")
        if rows > 0:
            self.runner.launch(words, kernel, rows, args)

    def _block(self, md: Modulus) -> Any:
        key = (md.value, md.words)
        blk = self._blocks.get(key)
        if blk is None:
            blk = self.runner.to_device(np.ascontiguousarray(md.block()))
            self._blocks[key] = blk
        return blk

    def _dev_words(self, value: int, width: int) -> Any:
        return self.runner.to_device(int_to_words(value, width))

    def _table(self, table: FixedBaseTable) -> Any:
        """The table's device copy, uploaded once and kept (keyed by base, modulus, window)."""
        dev = self._tables.get(table)
        if dev is None:
            dev = self.runner.to_device(np.ascontiguousarray(table.data))
            self._tables[table] = dev
        return dev

    def _empty(self, rows: int, width: int) -> Any:
        return self.runner.xp.empty((rows, width), dtype=self.runner.xp.uint32)

    def _exps(self, e: Words, shared: bool) -> tuple[Any, np.int32, np.int64]:
        return (
            self.runner.to_device(np.ascontiguousarray(e)),
            np.int32(e.shape[1]),
            np.int64(0 if shared else e.shape[1]),
        )

    def _wrap(self, data: Any, md: Modulus) -> DeviceCiphertexts:
        return DeviceCiphertexts(data=data, modulus=md.value, words=md.words)

    def upload(self, data: Limbs, mod: int) -> DeviceCiphertexts:
        """Shared-layout residues (< mod, checked) -> device handle."""
        md = kernel_modulus(mod)
        w = operand(data, md, "data")
        return self._wrap(self.runner.to_device(w), md)

    def download(self, d: DeviceCiphertexts) -> Limbs:
        """Device handle -> shared layout, limbs_for(modulus) limbs."""
        return words_to_limbs(self.runner.to_host(d.data), limbs_for(d.modulus))

    # --- device-resident operations ---------------------------------------------------------

    def to_mont_device(self, a: DeviceCiphertexts) -> Any:
        md = kernel_modulus(a.modulus)
        out = self._empty(a.count, md.words)
        self._launch(md.words, "fa_to_mont", a.count, out, a.data, np.int64(a.count),
                     self._block(md), np.uint32(md.minv))
        return out

    def from_mont_device(self, x: Any, md: Modulus) -> DeviceCiphertexts:
        rows = int(x.shape[0])
        out = self._empty(rows, md.words)
        self._launch(md.words, "fa_from_mont", rows, out, x, np.int64(rows), self._block(md),
                     np.uint32(md.minv))
        return self._wrap(out, md)

    def mulmod_device(self, a: DeviceCiphertexts, b: DeviceCiphertexts) -> DeviceCiphertexts:
        if a.modulus != b.modulus or b.count not in (a.count, 1):
            raise ValueError("operands must share the modulus and the row count (or b has one)")
        md = kernel_modulus(a.modulus)
        out = self._empty(a.count, md.words)
        b_stride = 0 if b.count == 1 else md.words
        self._launch(md.words, "fa_mulmod", a.count, out, a.data, b.data, np.int64(b_stride),
                     np.int64(a.count), self._block(md), np.uint32(md.minv))
        return self._wrap(out, md)

    def add_device(self, a: DeviceCiphertexts, b: DeviceCiphertexts) -> DeviceCiphertexts:
        """Homomorphic addition of device-resident ciphertexts (a.modulus = n^2)."""
        return self.mulmod_device(a, b)

    def powmod_device(self, base: DeviceCiphertexts, exps: Exponents) -> DeviceCiphertexts:
        md = kernel_modulus(base.modulus)
        e, shared = exponents(exps, base.count)
        ed, ewords, estride = self._exps(e, shared)
        out = self._empty(base.count, md.words)
        self._launch(md.words, "fa_powmod", base.count, out, base.data, ed, ewords, estride,
                     np.int64(base.count), self._block(md), np.uint32(md.minv), np.int32(0))
        return self._wrap(out, md)

    def scalar_mul_device(self, c: DeviceCiphertexts, k: Exponents) -> DeviceCiphertexts:
        """Homomorphic multiplication by plaintext scalars (c.modulus = n^2)."""
        return self.powmod_device(c, k)

    def fixed_base_pow_device(self, table: FixedBaseTable, exps: Exponents,
                              count: int) -> DeviceCiphertexts:
        md = kernel_modulus(table.modulus)
        if table.words != md.words:
            raise ValueError("table built for another limb count than the kernels use")
        e, shared = exponents(exps, count, max_bits=table.exp_bits)
        ed, ewords, estride = self._exps(e, shared)
        out = self._empty(count, md.words)
        self._launch(md.words, "fa_fixed_base_pow", count, out, self._table(table),
                     np.int32(table.window), np.int32(table.nwin), ed, ewords, estride,
                     np.int64(count), self._block(md), np.uint32(md.minv), np.int32(0))
        return self._wrap(out, md)

    def multiexp_device(self, bases: DeviceCiphertexts,
                        exps: NDArray[np.uint64]) -> DeviceCiphertexts:
        """out[j] = prod_i bases[i]^exps[i, j]; exps (k, f) < 2^64 on the host."""
        md = kernel_modulus(bases.modulus)
        k = bases.count
        e, nwin = multiexp_exponents(exps, k)
        f = int(e.shape[1])
        chunk = MULTIEXP_CHUNK
        nchunks = -(-k // chunk)
        blk, minv = self._block(md), np.uint32(md.minv)
        xm = self.to_mont_device(bases)
        threads = f * nchunks
        part = self._empty(threads, md.words)
        self._launch(md.words, "fa_multiexp_partial", threads, part, xm,
                     self.runner.to_device(e.view("<u4")), np.int64(k), np.int32(f),
                     np.int32(chunk), np.int32(nwin), np.int64(threads), blk, minv)
        width = nchunks
        while width > 1:
            half = (width + 1) // 2
            nxt = self._empty(f * half, md.words)
            self._launch(md.words, "fa_prod_reduce", f * half, nxt, part, np.int32(width),
                         np.int64(f * half), blk, minv)
            part, width = nxt, half
        return self.from_mont_device(part, md)

    def encrypt_device(self, m: Limbs, obf: DeviceCiphertexts, n: int) -> DeviceCiphertexts:
        nsq = n * n
        md = kernel_modulus(nsq)
        if obf.modulus != nsq:
            raise ValueError("obfuscators are not residues mod n^2 of this key")
        msg = message_operand(m, n, md)
        if obf.count != msg.shape[0]:
            raise ValueError("one obfuscator per plaintext")
        out = self._empty(msg.shape[0], md.words)
        self._launch(md.words, "fa_encrypt", msg.shape[0], out, self.runner.to_device(msg),
                     self._dev_words(n, md.words), np.int32(words_for(n)), obf.data,
                     np.int32(0), np.int64(msg.shape[0]), self._block(md), np.uint32(md.minv))
        return self._wrap(out, md)

    def encrypt_fixed_base_device(self, m: Limbs, table: FixedBaseTable, exps: Exponents,
                                  n: int) -> DeviceCiphertexts:
        md = kernel_modulus(fixed_base_square(table, n))
        msg = message_operand(m, n, md)
        rows = msg.shape[0]
        e, shared = exponents(exps, rows, max_bits=table.exp_bits)
        ed, ewords, estride = self._exps(e, shared)
        out = self._empty(rows, md.words)
        self._launch(md.words, "fa_encrypt_fixed_base", rows, out, self.runner.to_device(msg),
                     self._dev_words(n, md.words), np.int32(words_for(n)), self._table(table),
                     np.int32(table.window), np.int32(table.nwin), ed, ewords, estride,
                     np.int64(rows), self._block(md), np.uint32(md.minv))
        return self._wrap(out, md)

    def decrypt_crt_device(self, c: DeviceCiphertexts, key: CrtKey) -> Limbs:
        """CRT halves on the device, recombination on the host; plaintexts (count, limbs)."""
        if c.modulus != key.n * key.n:
            raise ValueError("ciphertexts are not mod n^2 of this key")
        lp = key.words
        data = c.data
        cwords = c.words
        if cwords > 2 * lp:  # high words are zero since c < n^2 < 2^(64 lp)
            data = self.runner.xp.ascontiguousarray(data[:, : 2 * lp])
            cwords = 2 * lp
        halves = []
        for h in key.halves:
            hw = h.prime_mod.words
            e, _ = exponents(h.exponent, 1)
            out = self._empty(c.count, hw)
            self._launch(lp, "fa_decrypt_half", c.count, out, data, np.int32(cwords),
                         np.int64(c.count), self._block(h.square), np.uint32(h.square.minv),
                         self.runner.to_device(e), np.int32(e.shape[1]),
                         self._block(h.prime_mod), np.uint32(h.prime_mod.minv),
                         self._dev_words(h.pinv, hw), self._dev_words(h.hmont, hw))
            halves.append(from_limbs(self.runner.to_host(out)))
        return to_limbs(key.combine(halves[0], halves[1]), limbs_for(key.n))

    # --- Backend (numpy in, numpy out) ------------------------------------------------------

    def mulmod(self, a: Limbs, b: Limbs, mod: int) -> Limbs:
        da = self.upload(a, mod)
        db = self.upload(b, mod)
        if db.count not in (da.count, 1):
            raise ValueError(f"b: {db.count} rows, expected {da.count} (or 1 to broadcast)")
        return self.download(self.mulmod_device(da, db))

    def powmod(self, base: Limbs, exps: Exponents, mod: int) -> Limbs:
        return self.download(self.powmod_device(self.upload(base, mod), exps))

    def fixed_base_pow(self, table: FixedBaseTable, exps: Exponents, count: int) -> Limbs:
        return self.download(self.fixed_base_pow_device(table, exps, count))

    def multiexp(self, bases: Limbs, exps: NDArray[np.uint64], mod: int) -> Limbs:
        return self.download(self.multiexp_device(self.upload(bases, mod), exps))

    def encrypt(self, m: Limbs, obf: Limbs, n: int) -> Limbs:
        return self.download(self.encrypt_device(m, self.upload(obf, n * n), n))

    def encrypt_fixed_base(self, m: Limbs, table: FixedBaseTable, exps: Exponents,
                           n: int) -> Limbs:
        return self.download(self.encrypt_fixed_base_device(m, table, exps, n))

    def decrypt_crt(self, c: Limbs, key: CrtKey) -> Limbs:
        return self.decrypt_crt_device(self.upload(c, key.n * key.n), key)

    def pack(self, slots: NDArray[np.uint64], slot_bits: int, limbs: int) -> Limbs:
        s = check_pack_args(slots, slot_bits, limbs)
        width = 2 * limbs
        kw = _pack_words(width)
        rows = s.shape[0]
        out = self._empty(rows, kw)
        self._launch(kw, "fa_pack", rows, out, self.runner.to_device(s.view("<u4")),
                     np.int32(s.shape[1]), np.int32(slot_bits), np.int64(rows))
        return words_to_limbs(self.runner.to_host(out)[:, :width], limbs)

    def unpack(self, packed: Limbs, slot_bits: int, slots: int) -> NDArray[np.uint64]:
        w = packed_words(packed, slot_bits)
        kw = _pack_words(w.shape[1])
        padded = np.zeros((w.shape[0], kw), dtype=np.uint32)
        padded[:, : w.shape[1]] = w
        rows = w.shape[0]
        out = self._empty(rows, 2 * slots)
        self._launch(kw, "fa_unpack", rows, out, self.runner.to_device(padded),
                     np.int32(slots), np.int32(slot_bits), np.int64(rows))
        return np.ascontiguousarray(self.runner.to_host(out)).view("<u8").reshape(rows, slots)


def _pack_words(width: int) -> int:
    return kernel_words(width)
