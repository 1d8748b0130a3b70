"""A host's encrypted histograms for one tree, on threads and on the crypto job pool, before and
after this session's batching (several features' rows in one segment space), same run.

    python bench/secureboost/histograms.py                 # default_credit's host, depth 3
    python bench/secureboost/histograms.py --rounds 1 --key-bits 1024

What one tree costs the host in hetero_secureboost (default_credit: 30,000 rows, the host's 10
features, 32 bins, 2048-bit key): at each of `depth` levels, cipher.encrypted_histograms over
the nodes it builds (all at the root, the smaller child of each pair below) with the
most-frequent-bin trick, then cipher.compress (Horner packing and re-randomisation). The rows
reach the nodes as in a real tree: each level splits every node at the median of one of the
guest's features. The gh ciphertexts are encryptions of random packed (g, h, 1) plaintexts
(their products cost the same whatever they hold).

Variants, rounds interleaved so that the machine's load hits them alike:
- threads/before: the code before batching (`--before`, a git revision: its cipher.py is
  loaded from git), on a ThreadPoolExecutor of `--threads`;
- threads/after: this tree's cipher.py, same threads;
- pool/before, pool/after: the same on fedflow.cryptopool.BusExecutor with `--replicas`
  `python -m fedworker` crypto-only replica processes on RabbitMQ (what a worker with
  FEDMQ_WORKER_CRYPTO_REPLICAS gives a component as ctx.executor).
Every variant's cells are checked bit for bit against threads/after's, so `--before` must send
the same cells: a revision with cipher.cell_kinds (empty cells not sent) against this tree, or
two revisions before it (a marker cell per left-out bin). Reported: seconds per
tree (histograms, compression), the best and every round, `uptime` before and after.
Results: bench/secureboost/histograms_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
import uuid
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fedbus import connect
from fedcrypto import generate_keypair
from fedflow.components.hetero_secureboost import cipher
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.cryptopool import BusExecutor
from fedflow.tables import read_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT / "examples" / "data"
CIPHER = "libs/flow/src/fedflow/components/hetero_secureboost/cipher.py"
DEFAULT_AMQP = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PARTY = "10000"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def cipher_at(revision: str) -> types.ModuleType:
    """cipher.py as it was at `revision` (a module of its own, this tree's imports)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{CIPHER}"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    module = types.ModuleType(f"cipher_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:{CIPHER}", "exec"), module.__dict__)
    return module


def levels(guest_x: np.ndarray, depth: int) -> list[tuple[np.ndarray, int]]:
    """(positions, open nodes) per level: level d splits every node at the median of the
    guest's feature d (rows with a missing value go right)."""
    rows = guest_x.shape[0]
    positions = np.zeros(rows, dtype=np.int32)
    out = []
    for d in range(depth):
        nodes = 1 << d
        out.append((positions.copy(), nodes))
        column = guest_x[:, d % guest_x.shape[1]]
        nxt = np.empty_like(positions)
        for node in range(nodes):
            at = positions == node
            left = column[at] < np.nanmedian(column[at])
            nxt[np.flatnonzero(at)] = np.where(left, 2 * node, 2 * node + 1)
        positions = nxt
    return out


def one_tree(
    module: types.ModuleType,
    key: Any,
    gh: np.ndarray,
    bins: np.ndarray,
    tree: list[tuple[np.ndarray, int]],
    max_bin: int,
    executor: Executor,
) -> tuple[float, float, list[np.ndarray]]:
    layout = module.CellLayout(gh.shape[0], key.n_length)
    planned = hasattr(module, "cell_kinds")  # since #14's empty cells; before: a marker cell
    marker = None if planned else layout.marker_ciphertext(key)
    hist_s = compress_s = 0.0
    cells_out = []
    for depth, (positions, nodes) in enumerate(tree):
        direct = sbmath.direct_nodes(positions, nodes, depth)
        began = time.perf_counter()
        if planned:
            kinds = module.cell_kinds(bins, positions, direct, max_bin)
            cells = module.encrypted_histograms(
                key, gh, bins, positions, direct, max_bin, executor, kinds
            )
        else:
            cells = module.encrypted_histograms(
                key, gh, bins, positions, direct, max_bin, executor, marker=marker
            )
        hist_s += time.perf_counter() - began
        began = time.perf_counter()
        module.compress(key, cells, layout, executor)
        compress_s += time.perf_counter() - began
        cells_out.append(cells)
    return hist_s, compress_s, cells_out


def start_replica(amqp_url: str, topic: str, log_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDMQ_WORKER_")}
    env.update(
        {
            "FEDMQ_WORKER_CRYPTO_ONLY": "true",
            "FEDMQ_WORKER_BUS_URL": amqp_url,
            "FEDMQ_WORKER_PARTY_ID": PARTY,
            "FEDMQ_WORKER_CRYPTO_TOPIC": topic,
            "FEDMQ_WORKER_LOG_LEVEL": "WARNING",
        }
    )
    log = (log_dir / f"replica-{uuid.uuid4().hex[:6]}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "fedworker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--bins", type=int, default=32)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", default="a858e8e", help="git revision of the old cipher.py")
    parser.add_argument("--no-pool", action="store_true", help="threads only (no RabbitMQ)")
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP)
    parser.add_argument("--out", type=Path, default=HERE / "histograms_results.json")
    args = parser.parse_args()
    load_before = uptime()
    print(f"uptime before: {load_before}", flush=True)

    guest = read_table(DATA / "default_credit_hetero_guest.csv")
    host = read_table(DATA / "default_credit_hetero_host.csv", label_column=None)
    host = host.align_to(guest.ids)
    x = np.asarray(host.features, dtype=np.float64)
    bins = sbmath.bin_features(x, sbmath.fit_cuts(x, args.bins), args.bins)
    tree = levels(np.asarray(guest.features, dtype=np.float64), args.depth)
    rows = x.shape[0]
    key, private_key = generate_keypair(args.key_bits, insecure_allow_short=args.key_bits < 2048)
    rng = np.random.default_rng(1)
    layout = cipher.CellLayout(rows, key.n_length)
    q = (rng.integers(0, 1 << 31, rows), rng.integers(0, 1 << 30, rows), np.ones(rows, int))
    plain = layout.row_plaintexts(q, key.plain_limbs)
    gh = private_key.encrypt_residues(plain, obfuscate=False)  # products cost the same

    modules = {"before": cipher_at(args.before), "after": cipher}
    threads = ThreadPoolExecutor(args.threads)
    executors: dict[str, Executor] = {"threads": threads}
    procs: list[subprocess.Popen[bytes]] = []
    bus = None
    topic = f"svc.crypto.benchsb{uuid.uuid4().hex[:8]}"
    if not args.no_pool:
        log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"fedmq-bench-sbhist-{topic[-8:]}"
        log_dir.mkdir(parents=True, exist_ok=True)
        bus = connect(args.amqp_url)
        procs = [start_replica(args.amqp_url, topic, log_dir) for _ in range(args.replicas)]
        executors["pool"] = BusExecutor(
            bus, PARTY, topic=topic, replicas=args.replicas, timeout_s=1800
        )
    runs: dict[str, list[dict[str, float]]] = {}
    try:
        if "pool" in executors:  # replicas start and import before the first timed round
            began = time.perf_counter()
            one_tree(
                cipher,
                key,
                gh[:2048],
                bins[:2048],
                levels(x[:2048], 1),
                args.bins,
                executors["pool"],
            )
            print(f"pool warm-up {time.perf_counter() - began:.1f} s", flush=True)
        expected: list[np.ndarray] | None = None
        for r in range(args.rounds):
            for where, executor in executors.items():
                for code in ("before", "after"):
                    name = f"{where}/{code}"
                    hist_s, compress_s, cells = one_tree(
                        modules[code], key, gh, bins, tree, args.bins, executor
                    )
                    if expected is None:
                        expected = cells
                    if any(not np.array_equal(a, b) for a, b in zip(cells, expected, strict=True)):
                        raise SystemExit(f"{name}: cells differ from the first variant's")
                    row = {
                        "histogram_s": round(hist_s, 2),
                        "compress_s": round(compress_s, 2),
                        "load": round(os.getloadavg()[0], 1),
                    }
                    runs.setdefault(name, []).append(row)
                    print(f"round {r}: {name}: {row}", flush=True)
    finally:
        if "pool" in executors:
            executors["pool"].shutdown(wait=False)
        threads.shutdown()
        if bus is not None:
            bus.delete(topic)
            bus.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    best = {name: min(r["histogram_s"] for r in rs) for name, rs in runs.items()}
    report = {
        "rows": rows,
        "host_features": int(x.shape[1]),
        "depth": args.depth,
        "bins": args.bins,
        "key_bits": args.key_bits,
        "threads": args.threads,
        "replicas": 0 if args.no_pool else args.replicas,
        "before": args.before,
        "uptime_before": load_before,
        "uptime_after": uptime(),
        "best_histogram_seconds_per_tree": best,
        "runs": runs,
    }
    print(json.dumps(report, indent=2))
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
