"""Cross-site request/reply benchmark: round trip of a 1 KiB call party to party.

Path measured ("gateways"): a caller at party 9999 calls `RemoteCaller.call` (fedbus.remote):
Bus.request on 9999's broker (svc.gateway.rpc) -> 9999's gateway signs, REQUEST frame over
mutual TLS -> 10000's gateway verifies, Bus.request on 10000's broker (svc.bench.echo) -> the
responder (`serve_remote_requests`) echoes 1 KiB -> 10000's gateway signs, REPLY frame ->
9999's gateway verifies -> Bus.reply to the caller. Latency: call -> reply in the caller.

Baseline ("direct", same run): the same 1 KiB request/reply on party 10000's broker alone
(Bus.request to the responder's topic, raw bytes, no envelope): one local broker round trip.
The gateway path holds two of those plus the link, four signature operations and four
envelope decodes.

Loads: "closed" (one caller, the next call after the reply: latency without queueing) and
"open R/s" (calls started on a fixed schedule at R per second from a pool of threads,
whatever the replies do; latency counts from the scheduled start, so a stall shows up in the
percentiles instead of silently lowering the rate).

Modes: `rabbitmq` (default): two parties on the local RabbitMQ via the launcher (a vhost per
party, gateways as separate processes); `memory`: both gateways in this process on memory://.

    .venv/bin/python bench/gateway/rpc.py              # closed 2000; open 50/s, 1000/s x 5 s
    .venv/bin/python bench/gateway/rpc.py --rates 500 --seconds 10 --mode memory
Results: printed table, and bench/gateway/rpc_results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedbus import Bus, Delivery, connect
from fedbus.remote import RemoteCaller, RemoteCallError, serve_remote_requests
from two_gateways import local_servers, memory_gateways

HERE = Path(__file__).resolve().parent
CALLER, RESPONDER = "9999", "10000"
SERVICE = "svc.bench.echo"
DIRECT_TOPIC = "svc.bench.direct"
SIZE = 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid() -> int | None:
    """RabbitMQ's Erlang VM on this machine, if it is local (for its CPU per call)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    return None


@dataclass
class Result:
    mode: str
    path: str
    load: str
    calls: int
    errors: int
    achieved_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms_per_call: dict[str, float]
    """CPU (user + system) per completed call, by process: the bench (callers and responder),
    the gateways, the broker (all of the broker's work, other users' included)."""


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _result(
    mode: str,
    path: str,
    load: str,
    lat: list[float],
    errors: int,
    wall: float,
    cpu: dict[str, float],
) -> Result:
    lat = sorted(lat)
    ms = [x * 1e3 for x in lat]
    return Result(
        mode=mode,
        path=path,
        load=load,
        calls=len(lat) + errors,
        errors=errors,
        achieved_per_s=round(len(lat) / wall, 1) if wall > 0 else 0.0,
        p50_ms=round(_percentile(ms, 0.50), 2),
        p90_ms=round(_percentile(ms, 0.90), 2),
        p99_ms=round(_percentile(ms, 0.99), 2),
        max_ms=round(ms[-1], 2) if ms else float("nan"),
        cpu_ms_per_call={k: round(v * 1e3 / max(len(lat), 1), 3) for k, v in cpu.items()},
    )


def closed_loop(call: Callable[[], None], n: int) -> tuple[list[float], int, float]:
    lat: list[float] = []
    errors = 0
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        try:
            call()
            lat.append(time.perf_counter() - t)
        except (RemoteCallError, TimeoutError):
            errors += 1
    return lat, errors, time.perf_counter() - start


def open_loop(
    call: Callable[[], None], rate: float, seconds: float, threads: int
) -> tuple[list[float], int, float]:
    """Calls scheduled at `rate`/s; each latency counts from its scheduled start."""
    n = int(rate * seconds)
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.perf_counter() + 0.05

    def one(i: int) -> None:
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        try:
            call()
            elapsed = time.perf_counter() - due
            with lock:
                lat.append(elapsed)
        except (RemoteCallError, TimeoutError):
            with lock:
                errors[0] += 1

    with ThreadPoolExecutor(threads) as pool:
        # Submitted in order; a thread picks the next call as soon as it is free, and sleeps
        # until that call's scheduled time.
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - start
    return lat, errors[0], wall


def measure(
    mode: str,
    caller_bus: Bus,
    responder_bus: Bus,
    closed: int,
    rates: list[float],
    seconds: float,
    pids: dict[str, int],
) -> list[Result]:
    body = os.urandom(SIZE)
    responder_bus.declare(DIRECT_TOPIC)

    def echo_raw(d: Delivery) -> None:
        responder_bus.reply(d, d.body)

    subs = [responder_bus.subscribe(DIRECT_TOPIC, echo_raw, prefetch=64) for _ in range(4)]
    subs += [
        serve_remote_requests(responder_bus, RESPONDER, SERVICE, lambda c: c.body, prefetch=64)
        for _ in range(4)
    ]
    caller = RemoteCaller(caller_bus, CALLER)

    def direct() -> None:
        responder_bus.request(DIRECT_TOPIC, body, timeout=2.0)

    def remote() -> None:
        if caller.call(RESPONDER, SERVICE, body, 2.0) != body:
            raise RemoteCallError("wrong reply")

    results = []
    for fn in (direct, remote):  # warm up connections, channels and caches
        for _ in range(50):
            fn()
    pids = {"bench": os.getpid(), **pids}

    def cpu_now() -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in pids.items()}

    for path, fn in (("direct", direct), ("gateways", remote)):
        loads: list[tuple[str, Callable[[], tuple[list[float], int, float]]]] = [
            ("closed", lambda fn=fn: closed_loop(fn, closed))
        ]
        for rate in rates:
            # Enough threads for 50 ms of calls in flight at the offered rate.
            threads = max(16, int(rate * 0.05))
            loads.append(
                (
                    f"open {rate:g}/s",
                    lambda fn=fn, rate=rate, threads=threads: open_loop(fn, rate, seconds, threads),
                )
            )
        for load, run in loads:
            before = cpu_now()
            lat, errors, wall = run()
            cpu = {k: v - before[k] for k, v in cpu_now().items()}
            results.append(_result(mode, path, load, lat, errors, wall, cpu))
            print_row(results[-1])
    for sub in subs:
        sub.cancel()
    return results


def run_rabbitmq(closed: int, rates: list[float], seconds: float) -> list[Result]:
    from fedmq import local

    root = Path(tempfile.mkdtemp(prefix="fedmq-bench-rpc-"))
    state = local.plan(
        [CALLER, RESPONDER],
        root,
        prefix=f"fedmqb{uuid.uuid4().hex[:6]}",
        federation="bench",
        **local_servers(),
    )
    try:
        local.prepare(state)
        local.update_gateway_settings(state, RESPONDER, rpc_services={SERVICE: [CALLER]})
        for party in (RESPONDER, CALLER):
            local.start_service(state, party, "gateway")
            local.wait_healthy(state, party, timeout=45)
        a = connect(state.parties[CALLER].bus_url)
        b = connect(state.parties[RESPONDER].bus_url)
        try:
            pids = {
                f"gateway {p}": local.read_pid(state, p, "gateway") or 0
                for p in (CALLER, RESPONDER)
            }
            broker = broker_pid()
            if broker is not None:
                pids["broker"] = broker
            return measure("rabbitmq", a, b, closed, rates, seconds, pids)
        finally:
            a.close()
            b.close()
    finally:
        if (root / local.STATE_FILE).exists():
            local.down(root, purge=True)
        shutil.rmtree(root, ignore_errors=True)


def run_memory(closed: int, rates: list[float], seconds: float) -> list[Result]:
    with memory_gateways(
        "fedmq-bench-rpc-mem-", CALLER, RESPONDER, rpc_services={SERVICE: [CALLER]}
    ) as (a, b):
        return measure("memory", a, b, closed, rates, seconds, {})


def print_row(r: Result) -> None:
    print(
        f"| {r.mode} | {r.path} | {r.load} | {r.calls} | {r.errors} | {r.achieved_per_s:.0f} | "
        f"{r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.2f} | "
        + ", ".join(f"{k} {v:.2f}" for k, v in r.cpu_ms_per_call.items())
        + " |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("rabbitmq", "memory"), default="rabbitmq")
    parser.add_argument("--closed", type=int, default=2000, help="calls in the closed loop")
    parser.add_argument(
        "--rates",
        default="50,1000",
        help="open-loop offered rates, calls per second, comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="open-loop duration")
    parser.add_argument("--out", type=Path, default=HERE / "rpc_results.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(
        "| mode | path | load | calls | errors | calls/s | p50 ms | p90 ms | p99 ms | max ms "
        "| CPU ms per call |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    run = run_rabbitmq if args.mode == "rabbitmq" else run_memory
    rates = [float(r) for r in args.rates.split(",") if r]
    results = run(args.closed, rates, args.seconds)
    load_after = os.getloadavg()
    direct = {r.load: r for r in results if r.path == "direct"}
    for r in results:
        if r.path == "gateways" and r.load in direct:
            base = direct[r.load]
            print(
                f"{r.load}: gateways p50 {r.p50_ms / base.p50_ms:.1f}x, "
                f"p99 {r.p99_ms / base.p99_ms:.1f}x the direct round trip"
            )
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"({os.cpu_count()} cores)"
    )
    report: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "size_bytes": SIZE,
        "results": [asdict(r) for r in results],
        "median_p99_ms": statistics.median(r.p99_ms for r in results),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
