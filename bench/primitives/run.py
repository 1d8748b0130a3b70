"""Benchmark: ECDH-PSI throughput and secure-aggregation time (fedcrypto.psi, fedcrypto.secagg).

PSI: both parties of the four-message protocol run in this process, sharing one
ProcessPoolExecutor (the X25519 work is spread over all cores); ids/s = ids per side
divided by the wall time of the whole protocol (both parties' work, every step).
Baseline in the same run: the same protocol with no executor (one core) on a
smaller set, and the raw X25519 rate of one core.

Secure aggregation: 10 clients x 100,000 weights by default, all rounds, client and
server compute in one process (no transport); one client drops after sending its
masked input. Baseline: the plain float sum of the same vectors.

    python bench/primitives/run.py                 # 1,000,000 ids per side
    python bench/primitives/run.py --ids 100000    # quick check
Writes bench/primitives/results.json (or --json PATH).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from fedcrypto.psi import PsiParty, hash_to_point
from fedcrypto.secagg import SecAggClient, SecAggConfig, SecAggServer


def psi_run(n: int, executor: Executor | None, workers: int = 1) -> dict[str, Any]:
    """Full protocol, n ids per side, half of them shared."""
    # Several chunks per worker keep both cores busy to the end of each step.
    chunk = max(1_000, n // (8 * workers))
    ids_a = [f"customer-{i:09d}" for i in range(n)]
    ids_b = [f"customer-{i:09d}" for i in range(n // 2, n // 2 + n)]
    a = PsiParty(executor=executor, chunk_size=chunk)
    b = PsiParty(executor=executor, chunk_size=chunk)
    steps: dict[str, float] = {}

    t0 = time.perf_counter()
    msg1 = a.blind(ids_a)
    steps["blind_a"] = time.perf_counter() - t0
    t = time.perf_counter()
    msg2 = b.blind(ids_b)
    steps["blind_b"] = time.perf_counter() - t
    t = time.perf_counter()
    msg3 = a.reblind(msg2)
    steps["reblind_a"] = time.perf_counter() - t
    t = time.perf_counter()
    msg4 = b.reblind(msg1)
    steps["reblind_b"] = time.perf_counter() - t
    t = time.perf_counter()
    result_a = a.intersect(msg4, msg3)
    result_b = b.intersect(msg3, msg4)
    steps["intersect_both"] = time.perf_counter() - t
    total = time.perf_counter() - t0

    expected = n - n // 2
    if len(result_a) != expected or len(result_b) != expected:
        raise SystemExit(f"PSI wrong: {len(result_a)}, {len(result_b)} != {expected}")
    return {
        "ids_per_side": n,
        "intersection": expected,
        "seconds": total,
        "ids_per_s": n / total,
        "steps_s": steps,
    }


def cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (the pool's workers, once shut down)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def x25519_rate(count: int = 20_000) -> float:
    key = X25519PrivateKey.generate()
    points = [hash_to_point(i) for i in range(count)]
    t = time.perf_counter()
    for p in points:
        key.exchange(X25519PublicKey.from_public_bytes(p))
    return count / (time.perf_counter() - t)


def secagg_run(clients: int, weights: int, drop_after_input: int) -> dict[str, Any]:
    config = SecAggConfig(session=b"bench", num_clients=clients, vector_length=weights)
    rng = np.random.default_rng(0)
    inputs = {u: rng.uniform(-1, 1, weights) for u in range(1, clients + 1)}
    client_s = server_s = 0.0

    def timed(fn: Any, *args: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args)
        return out, time.perf_counter() - t

    t0 = time.perf_counter()
    parties = {u: SecAggClient(u, config) for u in inputs}
    server = SecAggServer(config)
    for c in parties.values():
        msg, dt = timed(c.advertise_keys)
        client_s += dt
        _, dt = timed(server.receive_keys, msg)
        server_s += dt
    directory, dt = timed(server.key_directory)
    server_s += dt
    for c in parties.values():
        msg, dt = timed(c.share_keys, directory)
        client_s += dt
        _, dt = timed(server.receive_shares, msg)
        server_s += dt
    inboxes, dt = timed(server.route_shares)
    server_s += dt
    for u, c in parties.items():
        msg, dt = timed(c.masked_input, inboxes[u], inputs[u])
        client_s += dt
        _, dt = timed(server.receive_masked_input, msg)
        server_s += dt
    request, dt = timed(server.unmask_request)
    server_s += dt
    responders = list(parties)[drop_after_input:]
    for u in responders:
        msg, dt = timed(parties[u].unmask, request)
        client_s += dt
        _, dt = timed(server.receive_unmasking, msg)
        server_s += dt
    result, dt = timed(server.result)
    server_s += dt
    total = time.perf_counter() - t0

    t = time.perf_counter()
    plain = np.sum(list(inputs.values()), axis=0)
    plain_s = time.perf_counter() - t
    error = float(np.max(np.abs(result.sum - plain)))
    if error > result.max_abs_error + 1e-12:
        raise SystemExit(f"secagg wrong: error {error} > bound {result.max_abs_error}")
    return {
        "clients": clients,
        "weights": weights,
        "dropped_after_masked_input": drop_after_input,
        "threshold": config.t,
        "modulus_bits": config.modulus_bits,
        "seconds_total": total,
        "seconds_client_compute_all_clients": client_s,
        "seconds_server_compute": server_s,
        "max_abs_error": error,
        "error_bound": result.max_abs_error,
        "baseline_plain_sum_s": plain_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000, help="PSI ids per side")
    parser.add_argument("--baseline-ids", type=int, default=50_000, help="PSI single-core size")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--weights", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="secure aggregation runs")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()

    raw_rate = x25519_rate()
    cpu0 = cpu_seconds()
    baseline = psi_run(min(args.baseline_ids, args.ids), executor=None)
    baseline["cpu_seconds"] = cpu_seconds() - cpu0
    baseline["ids_per_cpu_s"] = baseline["ids_per_side"] / baseline["cpu_seconds"]
    ctx = multiprocessing.get_context("spawn")
    cpu0 = cpu_seconds()
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        list(pool.map(abs, range(args.workers)))  # start the workers outside the timing
        psi = psi_run(args.ids, executor=pool, workers=args.workers)
    # CPU time is less sensitive than wall time to other jobs on a shared machine;
    # it includes the workers' start-up (about a second).
    psi["cpu_seconds"] = cpu_seconds() - cpu0
    psi["ids_per_cpu_s"] = psi["ids_per_side"] / psi["cpu_seconds"]

    drop = args.clients // 3
    runs = [secagg_run(args.clients, args.weights, drop) for _ in range(args.repeats)]
    secagg = min(runs, key=lambda r: r["seconds_total"])

    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "x25519_ops_per_s_one_core": raw_rate,
        "psi": {**psi, "workers": args.workers},
        "psi_baseline_one_core": baseline,
        "psi_speedup_vs_one_core": psi["ids_per_s"] / baseline["ids_per_s"],
        "secagg_best_of": args.repeats,
        "secagg": secagg,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'measure':<52} {'value':>14}")
    print("-" * 67)
    print(f"{'X25519 exchanges/s, one core':<52} {raw_rate:>14,.0f}")
    label = f"PSI ids/s, {baseline['ids_per_side']:,} ids/side, one core (baseline)"
    print(f"{label:<52} {baseline['ids_per_s']:>14,.0f}")
    label = f"PSI ids/s, {args.ids:,} ids/side, {args.workers} workers"
    print(f"{label:<52} {psi['ids_per_s']:>14,.0f}")
    print(f"{'PSI wall time, s':<52} {psi['seconds']:>14.1f}")
    per_cpu = baseline["ids_per_cpu_s"]
    print(f"{'PSI ids per CPU-second, one core (baseline)':<52} {per_cpu:>14,.0f}")
    print(f"{'PSI ids per CPU-second, with workers':<52} {psi['ids_per_cpu_s']:>14,.0f}")
    print(f"{'PSI speedup vs one core':<52} {results['psi_speedup_vs_one_core']:>14.2f}x")
    label = f"SecAgg {args.clients} clients x {args.weights:,} weights, s (best of {args.repeats})"
    print(f"{label:<52} {secagg['seconds_total']:>14.3f}")
    client_s = secagg["seconds_client_compute_all_clients"]
    print(f"{'  client compute, all clients, s':<52} {client_s:>14.3f}")
    print(f"{'  server compute, s':<52} {secagg['seconds_server_compute']:>14.3f}")
    print(f"{'  baseline: plain float sum, s':<52} {secagg['baseline_plain_sum_s']:>14.4f}")
    error, bound = secagg["max_abs_error"], secagg["error_bound"]
    print(f"{'  max abs error (bound)':<52} {error:>8.2e} ({bound:.1e})")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
