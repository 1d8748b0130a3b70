"""cipher.segment_products, the host's per-bin products, old against new in one process:
`rows` ciphertexts (2048-bit key) sorted into `segments` bins, products on a ThreadPoolExecutor
of 2, the two versions alternating; every result checked equal. Prints CPU and wall seconds per
call and `uptime`; results go to docs/benchmarks.md by hand.

    python bench/secureboost/segments.py --before 4205850 --rows 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fedcrypto import generate_keypair
from fedflow.components.hetero_secureboost import cipher

sys.path.insert(0, str(Path(__file__).resolve().parent))

from histograms import cipher_at, uptime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="4205850", help="git revision of the old cipher.py")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--segments", type=int, default=33)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    public, private = generate_keypair(2048)
    rng = np.random.default_rng(0)
    # 4,096 real ciphertexts, repeated: the products' cost does not depend on the values
    plain = np.zeros((4096, public.plain_limbs), dtype=np.uint64)
    plain[:, 0] = rng.integers(1, 1000, 4096)
    data = private.encrypt_residues(plain)[rng.integers(0, 4096, args.rows)]
    segment = np.sort(rng.integers(0, args.segments, args.rows))
    versions = {"old": cipher_at(args.before), "new": cipher}
    print(uptime())
    with ThreadPoolExecutor(2) as executor:
        for round_ in range(args.rounds):
            results = {}
            for name, module in versions.items():
                began, cpu = time.perf_counter(), time.process_time()
                results[name] = module.segment_products(
                    public.nsquare_bytes, data, segment, args.segments, public.limbs, executor
                )
                print(
                    f"round {round_} {name}: {time.process_time() - cpu:.2f} CPU-s, "
                    f"{time.perf_counter() - began:.2f} s"
                )
            assert np.array_equal(results["old"], results["new"])
    print(uptime())


if __name__ == "__main__":
    main()
