"""Batch Paillier throughput at 2048-bit keys: GPU kernels next to the CPU paths, same run.

    .venv/bin/python bench/accel/run.py [--bits 2048] [--gpu-batch 65536] [--json out.json]

Rows: encrypt (DJN obfuscator hs^a computed in the same call, a of n/2 bits), encrypt with a
precomputed obfuscator, CRT decrypt, ciphertext add, ciphertext x 32-bit scalar, and
X^T [[d]] (k samples x f features, 16-bit quantized X; reported as terms/s = k f / time).

Columns:
  gmpy2   the CPU baseline: a Python loop over gmpy2 (what fedcrypto's CPU path does)
  numpy   fedaccel's numpy reference (a correctness tool: exact, vectorised, slow)
  gpu     CupyBackend, data resident on the device (timed after synchronisation; decrypt
          includes the download of the CRT halves and the host recombination)
Without a GPU the gpu column says so and only the CPU columns are measured. Not a test:
results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import gmpy2
import numpy as np
from fedaccel import (
    NumpyBackend,
    build_fixed_base_table,
    crt_key,
    gpu_status,
    limbs_for,
    to_limbs,
)

TARGETS = {  # issue #8, one H100, ops/s
    "encrypt_djn": 1_000_000,
    "decrypt": 150_000,
    "add": 100_000_000,
    "scalar_mul32": 2_000_000,
}


def timed(fn: Callable[[], Any], repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def make_key(bits: int, rng: random.Random) -> tuple[int, int]:
    half = bits // 2
    while True:
        p = int(gmpy2.next_prime(rng.getrandbits(half) | (3 << (half - 2))))
        q = int(gmpy2.next_prime(rng.getrandbits(half) | (3 << (half - 2))))
        if p != q and (p * q).bit_length() == bits:
            return p, q


class Workload:
    """Random inputs of one key, as Python ints and in the limb layout."""

    def __init__(self, bits: int, count: int, k: int, f: int, seed: int = 8) -> None:
        rng = random.Random(seed)
        self.p, self.q = make_key(bits, rng)
        self.n = self.p * self.q
        self.nsq = self.n * self.n
        self.exp_bits = bits // 2
        self.hs = pow(rng.randrange(1, self.n), self.n, self.nsq)
        self.count = count
        self.plain = [rng.randrange(self.n) for _ in range(count)]
        self.a = [rng.getrandbits(self.exp_bits) for _ in range(count)]
        self.obf = [pow(self.hs, a, self.nsq) for a in self.a[: min(count, 256)]]
        self.obf = (self.obf * (count // len(self.obf) + 1))[:count]
        self.ct = [(1 + m * self.n) * r % self.nsq for m, r in zip(self.plain, self.obf,
                                                                     strict=True)]
        self.scalars = [rng.getrandbits(32) for _ in range(count)]
        self.k, self.f = k, f
        self.x = np.array([[rng.getrandbits(16) for _ in range(f)] for _ in range(k)], np.uint64)
        self.d = (self.ct * (k // count + 1))[:k]

    def limbs(self, vals: list[int], mod: int) -> Any:
        return to_limbs(vals, limbs_for(mod))


def bench_gmpy2(w: Workload, count: int) -> dict[str, float]:
    n, nsq = gmpy2.mpz(w.n), gmpy2.mpz(w.nsq)
    hs = gmpy2.mpz(w.hs)
    p, q = gmpy2.mpz(w.p), gmpy2.mpz(w.q)
    psq, qsq = p * p, q * q
    hp = gmpy2.invert((gmpy2.powmod(n + 1, p - 1, psq) - 1) // p, p)
    hq = gmpy2.invert((gmpy2.powmod(n + 1, q - 1, qsq) - 1) // q, q)
    pinv = gmpy2.invert(p, q)
    plain = [gmpy2.mpz(v) for v in w.plain[:count]]
    a = [gmpy2.mpz(v) for v in w.a[:count]]
    obf = [gmpy2.mpz(v) for v in w.obf[:count]]
    ct = [gmpy2.mpz(v) for v in w.ct[:count]]
    sc = [gmpy2.mpz(v) for v in w.scalars[:count]]

    def enc_djn() -> None:
        for m, e in zip(plain, a, strict=True):
            (1 + m * n) * gmpy2.powmod(hs, e, nsq) % nsq

    def enc_pre() -> None:
        for m, r in zip(plain, obf, strict=True):
            (1 + m * n) * r % nsq

    def dec() -> None:
        for c in ct:
            mp = (gmpy2.powmod(c, p - 1, psq) - 1) // p * hp % p
            mq = (gmpy2.powmod(c, q - 1, qsq) - 1) // q * hq % q
            mp + ((mq - mp) * pinv % q) * p

    def add() -> None:
        for x, y in zip(ct, reversed(ct), strict=True):
            x * y % nsq

    def smul() -> None:
        for c, s in zip(ct, sc, strict=True):
            gmpy2.powmod(c, s, nsq)

    d = [gmpy2.mpz(v) for v in w.d]
    xs = [[int(v) for v in row] for row in w.x]

    def matvec() -> None:
        for j in range(w.f):
            acc = gmpy2.mpz(1)
            for i in range(w.k):
                acc = acc * gmpy2.powmod(d[i], xs[i][j], nsq) % nsq

    out = {
        "encrypt_djn": count / timed(enc_djn),
        "encrypt_pre": count / timed(enc_pre, 3),
        "decrypt": count / timed(dec),
        "add": count / timed(add, 3),
        "scalar_mul32": count / timed(smul),
        "matvec_terms": w.k * w.f / timed(matvec),
    }
    return out


def bench_backend(be: Any, w: Workload, count: int, table: Any, device: bool) -> dict[str, float]:
    """ops/s of one fedaccel backend on ``count`` elements (device-resident when asked)."""
    n, nsq = w.n, w.nsq
    plain = w.limbs(w.plain[:count], n)
    a = to_limbs(w.a[:count], -(-w.exp_bits // 64))
    obf = w.limbs(w.obf[:count], nsq)
    ct = w.limbs(w.ct[:count], nsq)
    ct2 = w.limbs(list(reversed(w.ct[:count])), nsq)
    sc = np.array(w.scalars[:count], np.uint64)
    d = w.limbs(w.d, nsq)
    key = crt_key(w.p, w.q)
    if not device:
        return {
            "encrypt_djn": count / timed(lambda: be.encrypt_fixed_base(plain, table, a, n)),
            "encrypt_pre": count / timed(lambda: be.encrypt(plain, obf, n)),
            "decrypt": count / timed(lambda: be.decrypt_crt(ct, key)),
            "add": count / timed(lambda: be.add(ct, ct2, n)),
            "scalar_mul32": count / timed(lambda: be.scalar_mul(ct, sc, n)),
            "matvec_terms": w.k * w.f / timed(lambda: be.multiexp(d, w.x, nsq)),
        }
    sync = be.runner.synchronize
    dobf, dct, dct2, dd = (be.upload(x, nsq) for x in (obf, ct, ct2, d))

    def run(fn: Callable[[], Any]) -> Callable[[], None]:
        def go() -> None:
            fn()
            sync()
        return go

    for warm in (lambda: be.encrypt_fixed_base_device(plain[:2], table, a[:2], n),
                 lambda: be.add_device(dct, dct2), lambda: be.multiexp_device(dd, w.x)):
        run(warm)()  # compile modules and upload the table before timing
    return {
        "encrypt_djn": count / timed(run(lambda: be.encrypt_fixed_base_device(plain, table, a,
                                                                              n)), 3),
        "encrypt_pre": count / timed(run(lambda: be.encrypt_device(plain, dobf, n)), 3),
        "decrypt": count / timed(run(lambda: be.decrypt_crt_device(dct, key)), 3),
        "add": count / timed(run(lambda: be.add_device(dct, dct2)), 3),
        "scalar_mul32": count / timed(run(lambda: be.scalar_mul_device(dct, sc)), 3),
        "matvec_terms": w.k * w.f / timed(run(lambda: be.multiexp_device(dd, w.x)), 3),
    }


ROWS = [
    ("encrypt_djn", "encrypt (DJN obfuscator hs^a in the call)"),
    ("encrypt_pre", "encrypt (precomputed obfuscator)"),
    ("decrypt", "decrypt (CRT)"),
    ("add", "ciphertext add"),
    ("scalar_mul32", "ciphertext x 32-bit scalar"),
    ("matvec_terms", "X^T [[d]] (terms/s)"),
]


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--bits", type=int, default=2048, help="key size (n bits)")
    ap.add_argument("--gmpy2-batch", type=int, default=64)
    ap.add_argument("--numpy-batch", type=int, default=8)
    ap.add_argument("--gpu-batch", type=int, default=65536)
    ap.add_argument("--k", type=int, default=64, help="samples of X^T [[d]] on the CPU paths")
    ap.add_argument("--gpu-k", type=int, default=30000, help="samples of X^T [[d]] on the GPU")
    ap.add_argument("--f", type=int, default=4, help="features of X^T [[d]]")
    ap.add_argument("--no-numpy", action="store_true", help="skip the (slow) numpy reference")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)

    ok, why = gpu_status()
    print(f"# fedaccel bench: {args.bits}-bit keys; GPU: {why}")
    t0 = time.perf_counter()
    w_cpu = Workload(args.bits, max(args.gmpy2_batch, args.numpy_batch), args.k, args.f)
    table = build_fixed_base_table(w_cpu.hs, w_cpu.nsq, exp_bits=w_cpu.exp_bits, window=8)
    print(f"# setup {time.perf_counter() - t0:.1f}s; fixed-base table {table.nbytes >> 20} MiB "
          f"(window {table.window}, {table.nwin} windows)")
    results: dict[str, dict[str, float] | None] = {}
    results["gmpy2"] = bench_gmpy2(w_cpu, args.gmpy2_batch)
    results["numpy"] = None if args.no_numpy else bench_backend(
        NumpyBackend(), w_cpu, args.numpy_batch, table, device=False)
    results["gpu"] = None
    if ok:
        from fedaccel.cupy_runtime import cupy_backend

        w_gpu = Workload(args.bits, args.gpu_batch, args.gpu_k, args.f)
        gtable = build_fixed_base_table(w_gpu.hs, w_gpu.nsq, exp_bits=w_gpu.exp_bits, window=8)
        results["gpu"] = bench_backend(cupy_backend(), w_gpu, args.gpu_batch, gtable, True)
    else:
        print("# no GPU on this machine: the gpu column is not measured")

    head = f"{'operation':44} {'gmpy2 ops/s':>14} {'numpy-ref ops/s':>16} {'gpu ops/s':>14} " \
           f"{'gpu/gmpy2':>10} {'target':>12}"
    print(head)
    print("-" * len(head))
    for key, label in ROWS:
        g = results["gmpy2"][key] if results["gmpy2"] else None
        nref = results["numpy"][key] if results["numpy"] else None
        gp = results["gpu"][key] if results["gpu"] else None
        ratio = f"{gp / g:,.1f}x" if gp and g else "-"
        tgt = f"{TARGETS[key]:,}" if key in TARGETS else "-"
        print(f"{label:44} {fmt(g):>14} {fmt(nref):>16} {fmt(gp):>14} {ratio:>10} {tgt:>12}")
    print(f"# batches: gmpy2 {args.gmpy2_batch}, numpy {args.numpy_batch}, gpu {args.gpu_batch}; "
          f"X^T[[d]]: k={args.k} (cpu) / {args.gpu_k} (gpu), f={args.f}, 16-bit X")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"bits": args.bits, "gpu": why, "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
