"""The receiving audit's per-ciphertext checks (data.ciphertext_*), old code against new, one run.

    .venv/bin/python bench/audit/check.py [--baseline REV] [--messages 20] [--rows 2000]
        [--keys 1] [--rounds 3]

`check_ciphertexts` of fedaudit.rules.ciphertexts as it is at git revision REV (default
724f544: every ciphertext converted to gmpy2, hashed by hashlib one call per row, a gmpy2
product per key) and as it is in this checkout, three ways: with the C extension's scan_rows
and product_gcd (fedcrypto.audit_scan; AVX-512 lanes where the CPU has IFMA), with the
extension kept to one row at a time (what CPUs without IFMA run), and with the extension
switched off (its gmpy2/hashlib fallback). Each round runs the four alternately on the same
`messages` payloads of `rows` uniform residues mod n^2 (2048-bit keys; what fresh encryptions
look like), each on a fresh job view, then (not timed) a message with one ciphertext of each
bad kind, and checks that every message got the same findings from all four. Reported: CPU
seconds per round (process time, so the machine's other load moves it less than wall time),
ciphertexts/s and the median ratio against the baseline. Not a test: results go to
docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SOURCE = "services/audit/src/fedaudit/rules/ciphertexts.py"


def load_revision(rev: str) -> ModuleType:
    """fedaudit.rules.ciphertexts as committed at `rev`, imported under another name."""
    text = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:{SOURCE}"], check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-check-")) / "ciphertexts_baseline.py"
    path.write_bytes(text)
    spec = importlib.util.spec_from_file_location("fedaudit.rules.ciphertexts_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def payloads(messages: int, rows: int, keys: int) -> tuple[list[int], list[Any]]:
    """The keys' moduli and `messages` payloads of uniform residues mod the first key's n^2."""
    import numpy as np
    from fedcrypto.paillier.keys import generate_keypair
    from fedcrypto.paillier.limbs import from_mpz, limbs_for

    moduli = [int(generate_keypair(2048)[0].n) for _ in range(keys)]
    top = max(n * n for n in moduli)
    draw = random.Random(0)
    limbs = limbs_for(top)
    out = [
        SimpleNamespace(array=from_mpz([draw.randrange(1, top) for _ in range(rows)], limbs))
        for _ in range(messages)
    ]
    assert all(isinstance(p.array, np.ndarray) for p in out)
    return moduli, out


def run_once(
    check: Any, moduli: list[int], messages: list[Any], untimed: list[Any]
) -> tuple[float, list[Any]]:
    """CPU seconds to check every message on a fresh job view, and the findings of those and
    then of the `untimed` ones (same view)."""
    from fedaudit.rules.state import AuditPolicy, ComponentView, JobView, Observation

    policy = AuditPolicy(party_id="10000")
    view = JobView(job_id="bench")
    cv = ComponentView(name="hetero_lr_0", type="hetero_lr", protocol=None)
    cv.moduli = {f"party{i}": n for i, n in enumerate(moduli)}
    rule = SimpleNamespace(decrypt=None)
    observations = [
        Observation(
            {
                "tag": "residuals",
                "iteration": i,
                "message_id": f"m{i}",
                "source_party": "9999",
                "destination_party": "10000",
            },
            payload,
        )
        for i, payload in enumerate(messages + untimed)
    ]
    found: list[Any] = []
    started = time.process_time()
    for obs in observations[: len(messages)]:
        found.append(check(obs, rule, view, cv, policy))
    took = time.process_time() - started
    for obs in observations[len(messages) :]:
        found.append(check(obs, rule, view, cv, policy))
    return took, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="724f544")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from fedaudit.rules import ciphertexts
    from fedcrypto import audit_scan

    baseline = load_revision(args.baseline)
    moduli, messages = payloads(args.messages, args.rows, args.keys)
    # A message with one of each bad kind, a repeat of the first message's row 7 included (not
    # timed), so that the variants also have findings to agree on
    bad = messages[0].array.copy()
    n = moduli[0]
    for row, value in enumerate([1, 0, n * n, 3 * n, n * n + 7]):
        bad[row] = [int(value >> (64 * j)) & (2**64 - 1) for j in range(bad.shape[1])]
    bad[6] = messages[0].array[7]

    native = (audit_scan._native_scan, audit_scan._native_product_gcd)

    def fallback(*a: Any) -> Any:
        audit_scan._native_scan, audit_scan._native_product_gcd = None, None
        try:
            return ciphertexts.check_ciphertexts(*a)
        finally:
            audit_scan._native_scan, audit_scan._native_product_gcd = native

    def scalar(*a: Any) -> Any:
        simd, audit_scan.native_simd = audit_scan.native_simd, False
        try:
            return ciphertexts.check_ciphertexts(*a)
        finally:
            audit_scan.native_simd = simd

    variants = {
        f"baseline {args.baseline}": baseline.check_ciphertexts,
        "new, C extension": ciphertexts.check_ciphertexts,
        "new, C extension without SIMD": scalar,
        "new, gmpy2 fallback": fallback,
    }
    if not audit_scan.native_scan_available():
        raise SystemExit("the C extension's scan_rows/product_gcd are not built")
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        results = {}
        for name, check in variants.items():
            seconds, results[name] = run_once(check, moduli, messages, [SimpleNamespace(array=bad)])
            cpu[name].append(round(seconds, 4))
        first, *others = results.values()
        assert all(r == first for r in others), "the variants disagree"
        load.append(os.getloadavg()[0])
    count = args.messages * args.rows
    base = cpu[f"baseline {args.baseline}"]
    report = {
        "messages": args.messages,
        "rows": args.rows,
        "keys": args.keys,
        "load_1min": [round(x, 1) for x in load],
        "findings_of_the_bad_message": [f.rule for f in first[-1]],
        "variants": {
            name: {
                "cpu_s": runs,
                "ciphertexts_per_s_median": round(count / statistics.median(runs)),
                "median_speedup": round(
                    statistics.median(b / r for b, r in zip(base, runs, strict=True)), 2
                ),
            }
            for name, runs in cpu.items()
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
