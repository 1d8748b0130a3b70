"""Crypto job pool benchmark: one large crypto job on 1 replica vs 2 replicas, same run.

    python bench/cryptopool/run.py                 # 20,000 values, X 20,000 x 10, 2048-bit
    python bench/cryptopool/run.py --n 4000        # quick run

The job is what a hetero LR iteration's heavy part looks like: encrypt n gradient-like floats
(DJN obfuscators), then X.T @ [[d]] for X of n x cols. The replicas are separate
`python -m fedworker` processes (FEDMQ_WORKER_CRYPTO_ONLY) on RabbitMQ; the caller is this
process with a `fedflow.cryptopool.BusExecutor`. Three replica processes are started: one
serves topic A, two serve topic B; rounds alternate A (1 replica) and B (2 replicas) so that
load from other processes on a shared machine hits both alike, and each side reports its best
round. Before timing, one small job per topic warms the replicas (they rebuild the DJN table
from its recipe once: reported as table_warmup_s). The serial path (no executor, this process)
is timed once as a reference. The machine's load average (`uptime`) is printed and recorded
before and after. Results go to bench/cryptopool/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fedbus import Bus, connect
from fedcrypto.paillier import EncryptedVector, PublicKey, generate_keypair, native_available
from fedflow.cryptopool import BusExecutor

HERE = Path(__file__).resolve().parent
DEFAULT_AMQP = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PARTY = "9999"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


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
    log = (log_dir / f"replica-{topic}-{uuid.uuid4().hex[:6]}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "fedworker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def crypto_job(
    pk: PublicKey, values: np.ndarray, x: np.ndarray, executor: BusExecutor | None
) -> tuple[float, float, EncryptedVector]:
    t0 = time.perf_counter()
    enc = pk.encrypt(values, executor=executor)
    t1 = time.perf_counter()
    grad = enc.matmul(x, executor=executor)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, grad


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="values encrypted; rows of X")
    ap.add_argument("--cols", type=int, default=10, help="columns of X")
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2, help="best-of rounds, 1 and 2 interleaved")
    ap.add_argument("--amqp-url", default=DEFAULT_AMQP)
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args()

    load_before = uptime()
    print(f"uptime before: {load_before}")
    rng = np.random.default_rng(5)
    values = rng.normal(scale=0.5, size=args.n)
    x = rng.normal(size=(args.n, args.cols))
    pk, sk = generate_keypair(args.key_bits)
    pk.precompute()

    run_id = uuid.uuid4().hex[:8]
    topics = {1: f"svc.crypto.bench{run_id}.one", 2: f"svc.crypto.bench{run_id}.two"}
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"fedmq-bench-cryptopool-{run_id}"
    log_dir.mkdir(parents=True, exist_ok=True)
    bus: Bus = connect(args.amqp_url)
    procs = [start_replica(args.amqp_url, topics[1], log_dir)]
    procs += [start_replica(args.amqp_url, topics[2], log_dir) for _ in range(2)]
    pools = {
        k: BusExecutor(bus, PARTY, topic=t, replicas=k, timeout_s=900) for k, t in topics.items()
    }
    rows: dict[str, Any] = {}
    try:
        warm = {}
        for k, pool in pools.items():
            # Small job: replicas start consuming, import, and rebuild the DJN table once.
            warm[k], _ = timed(
                lambda pool=pool, k=k: pk.encrypt(np.ones(2048 * k), executor=pool, chunk_size=1024)
            )
        print(f"warm-up (replica start + table rebuild): {warm}")

        serial_enc, serial_mm, serial_grad = crypto_job(pk, values, x, None)
        print(
            f"serial (this process, no executor): encrypt {serial_enc:.2f} s, "
            f"X.T@[[d]] {serial_mm:.2f} s"
        )

        expected = x.T @ values
        if not np.allclose(sk.decrypt(serial_grad), expected, atol=1e-4):
            raise SystemExit("serial X.T@[[d]] does not decrypt to X.T @ d")
        best: dict[int, tuple[float, float]] = {}
        answered: dict[int, dict[str, int]] = {}
        for r in range(args.rounds):
            for k in (1, 2):
                pool = pools[k]
                pool.answered_by.clear()
                enc_s, mm_s, grad = crypto_job(pk, values, x, pool)
                # Fresh randomness per encryption: compare plaintexts, not ciphertexts.
                if not np.allclose(sk.decrypt(grad), expected, atol=1e-4):
                    raise SystemExit(f"{k} replica(s): X.T@[[d]] does not decrypt to X.T @ d")
                print(
                    f"round {r}: {k} replica(s): encrypt {enc_s:.2f} s, X.T@[[d]] {mm_s:.2f} s, "
                    f"total {enc_s + mm_s:.2f} s, chunks per replica {dict(pool.answered_by)}"
                )
                if k not in best or enc_s + mm_s < sum(best[k]):
                    best[k] = (enc_s, mm_s)
                    answered[k] = dict(pool.answered_by)
        for k in (1, 2):
            enc_s, mm_s = best[k]
            rows[f"replicas_{k}"] = {
                "encrypt_s": round(enc_s, 3),
                "matmul_s": round(mm_s, 3),
                "total_s": round(enc_s + mm_s, 3),
                "encrypt_per_s": round(args.n / enc_s, 1),
                "chunks_answered_per_replica": sorted(answered[k].values()),
            }
        speedup = sum(best[1]) / sum(best[2])
        print(
            f"best of {args.rounds}: 1 replica {sum(best[1]):.2f} s, 2 replicas "
            f"{sum(best[2]):.2f} s, speed-up {speedup:.2f}x"
        )
    finally:
        for pool in pools.values():
            pool.shutdown(wait=False)
        for t in topics.values():
            bus.delete(t)
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        bus.close()
    load_after = uptime()
    print(f"uptime after: {load_after}")
    result = {
        "benchmark": "cryptopool",
        "job": f"encrypt {args.n} floats (DJN) then X.T @ [[d]] with X {args.n} x {args.cols}",
        "key_bits": args.key_bits,
        "broker": "RabbitMQ (local)",
        "replicas": "separate `python -m fedworker` processes, FEDMQ_WORKER_CRYPTO_ONLY",
        "rounds": args.rounds,
        "native_extension": native_available(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "serial_in_process": {
            "encrypt_s": round(serial_enc, 3),
            "matmul_s": round(serial_mm, 3),
            "total_s": round(serial_enc + serial_mm, 3),
        },
        "table_warmup_s": {str(k): round(v, 3) for k, v in warm.items()},
        **rows,
        "speedup_2_vs_1": round(speedup, 3),
        "uptime_before": load_before,
        "uptime_after": load_after,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
