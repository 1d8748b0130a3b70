"""bench/serving: online hetero_lr prediction on the local two-party stack (issue #15).

Both parties' gateways, schedulers, workers and serving services run as processes on RabbitMQ,
PostgreSQL and Redis (`fedmq local`, tests/serving/stack.py). A one-epoch hetero_lr job on the
breast data is published twice: the two-party model (service `risk`: the guest's part plus the
host's partial score through both gateways) and the guest's part alone (service `floor`, the
floor: the same REST and bus path without the cross-site call), measured in the same run.

Each measurement runs twice, alternating, in the same run: once with the code before this
round's latency work ("before": both parties' gateways and serving services restarted on a
copy of the source tree in which BASELINE_FILES are those of `--baseline`) and once with this
tree ("after"); `--modes before,after,untraced` adds "after" with the guest gateway's trace
file off (no span exported: what tracing costs).
Per mode, first one client sends 200 requests one after the other (the latency of a request
when nothing queues), and the services' own histograms, read before and after, split that
latency per hop ("breakdown": the mean time of each segment of the path; docs/serving.md,
"Latency"). Then per rate (200, 500, 1000 requests/s; one row per request), each mode in
alternating order: an open loop sends at the rate for --seconds and measures each request from
its scheduled send time (so a client that falls behind counts its queueing as latency: no
coordinated omission), giving throughput achieved, p50, p99, errors and the CPU each process
spent per answered request. The guest-only model (service `floor`) runs once per rate, after
the two-party runs, in the mode then running. Then a batch of 10,000 rows through
/predict/batch, three times ("after").

    .venv/bin/python -m bench.serving.run [--seconds 10] [--rates 200,500,1000]
        [--baseline d3f105c] [--modes before,after]

Prints a JSON result and writes bench/serving/results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench.serving import load
from fedmq import local
from tests.local_stack import DATA, GUEST, HOST, two_parties, upload_breast
from tests.serving.stack import SERVING_RPC_ENV, ServingProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BASELINE = "d3f105c"
"""The commit before this round's hop work (issue #15, session 9: fewer thread wake-ups per bus
request/reply, Bus.arequest on the gateway's REST path and both gateways' request/reply,
rpc envelopes built once)."""
BASELINE_FILES = (
    "libs/bus/src/fedbus/amqp_bus.py",
    "libs/bus/src/fedbus/broker_bus.py",
    "libs/bus/src/fedbus/bus.py",
    "libs/bus/src/fedbus/remote.py",
    "services/gateway/src/fedgateway/api/serving.py",
    "services/gateway/src/fedgateway/api/serving_batch.py",
    "services/gateway/src/fedgateway/rpc.py",
    "services/gateway/src/fedgateway/main.py",
)
"""What "before" takes from the baseline commit; everything else is this tree's."""


def source_dirs(root: Path) -> list[Path]:
    """The src folders of fedmq's distributions under `root` (what the venv installs)."""
    found = [root / "src", root / "schemas" / "src"]
    for group in ("libs", "services"):
        found += sorted(p for p in (root / group).glob("*/src") if p.is_dir())
    return found


def baseline_path(
    ref: str, into: Path, git_dir: str | None = None, files: tuple[str, ...] = BASELINE_FILES
) -> str:
    """A PYTHONPATH that runs this tree's code but BASELINE_FILES at `ref`."""
    tree = into / "tree"
    for src in source_dirs(ROOT):
        shutil.copytree(
            src, tree / src.relative_to(ROOT), ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in files:
        git = ["git", f"--git-dir={git_dir}"] if git_dir else ["git"]
        old = subprocess.run(
            [*git, "show", f"{ref}:{name}"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        (tree / name).write_bytes(old)
    return os.pathsep.join(str(p) for p in source_dirs(tree))


IN_FLIGHT_LINE = "IN_FLIGHT_PER_SERVICE = 2\n"
"""fedgateway.api.serving's messages in flight per service: "one-in-flight" runs it at 1."""


def one_in_flight_path(into: Path) -> str:
    """A PYTHONPATH that runs this tree with one prediction message in flight per service at
    hop 1 instead of two (a copy of the tree with that constant changed)."""
    tree = into / "one-in-flight"
    for src in source_dirs(ROOT):
        shutil.copytree(
            src, tree / src.relative_to(ROOT), ignore=shutil.ignore_patterns("__pycache__")
        )
    route = tree / "services/gateway/src/fedgateway/api/serving.py"
    text = route.read_text()
    if IN_FLIGHT_LINE not in text:
        raise SystemExit(f"{route}: no line {IN_FLIGHT_LINE!r} to change")
    route.write_text(text.replace(IN_FLIGHT_LINE, "IN_FLIGHT_PER_SERVICE = 1\n"))
    return os.pathsep.join(str(p) for p in source_dirs(tree))


PIPELINE = f"""
name: serving-bench
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: hetero_lr_0
    type: hetero_lr
    inputs: {{data: psi_0.data}}
    params:
      common: {{epochs: 1, batch_size: 128, learning_rate: 0.5, seed: 1}}
"""


def guest_rows() -> list[dict[str, Any]]:
    with open(DATA / "breast_hetero_guest.csv") as f:
        return [
            {"id": r["id"], "features": {k: float(v) for k, v in r.items() if k not in ("id", "y")}}
            for r in csv.DictReader(f)
        ]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) * 1000 if values else float("nan")


def open_loop(
    url: str,
    headers: dict[str, str],
    rows: list[dict[str, Any]],
    rate: float,
    seconds: float,
    connections: int,
) -> dict[str, Any]:
    """Send `rate` requests/s for `seconds`, each at its scheduled instant (bench.serving.load:
    asyncio, raw keep-alive HTTP/1.1, at most `connections` at once); latency counts from the
    scheduled instant."""
    found = load.open_loop(url, headers, rows, rate, seconds, connections)
    latencies = found["latencies"]
    return {
        "rate": rate,
        "sent": found["sent"],
        "ok": len(latencies),
        "achieved_per_s": round(len(latencies) / found["elapsed"], 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "errors": found["errors"],
    }


PREDICT_ROUTE = "/api/v1/serving/{service_id}/predict"
TIMERS: dict[str, tuple[str, str, dict[str, str]]] = {
    # name: (where, histogram, labels)
    "gateway_http": ("guest_gateway", "fedmq_http_request_seconds", {"route": PREDICT_ROUTE}),
    "guest_serving": ("guest_serving", "fedmq_serving_request_seconds", {"service": "risk"}),
    "host_call": ("guest_serving", "fedmq_serving_host_call_seconds", {"party": HOST}),
    "gateway_rpc": ("guest_gateway", "fedmq_gateway_rpc_seconds", {"peer": HOST}),
    "host_gateway": ("host_gateway", "fedmq_gateway_rpc_serve_seconds", {"peer": GUEST}),
    "host_serving": ("host_serving", "fedmq_serving_partial_seconds", {"caller_party": GUEST}),
}
"""The histograms that time nested parts of one two-party request, outermost first."""


def timers(texts: dict[str, str]) -> dict[str, tuple[float, float]]:
    """(sum, count) of each of TIMERS in the services' /metrics texts."""
    found: dict[str, tuple[float, float]] = {}
    for name, (where, metric, labels) in TIMERS.items():
        total = count = 0.0
        for family in text_string_to_metric_families(texts[where]):
            for sample in family.samples:
                if not all(sample.labels.get(k) == v for k, v in labels.items()):
                    continue
                if sample.name == f"{metric}_sum":
                    total += sample.value
                elif sample.name == f"{metric}_count":
                    count += sample.value
        found[name] = (total, count)
    return found


def breakdown(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], client_ms: float
) -> dict[str, float]:
    """Mean ms of each segment of a two-party request between two readings of TIMERS."""
    mean = {}
    for name in TIMERS:
        total = after[name][0] - before[name][0]
        count = after[name][1] - before[name][1]
        mean[name] = total / count * 1000 if count else float("nan")
    segments = {
        "client and HTTP before/after the gateway's app": client_ms - mean["gateway_http"],
        "gateway REST app + hop 1 (svc.serving.rpc)": mean["gateway_http"] - mean["guest_serving"],
        "guest serving's own work": mean["guest_serving"] - mean["host_call"],
        "hop 2 (svc.gateway.rpc) + rpc envelope": mean["host_call"] - mean["gateway_rpc"],
        "guest gateway sign/verify + link both ways": mean["gateway_rpc"] - mean["host_gateway"],
        "host gateway verify/sign + hop 3 (svc.serving)": mean["host_gateway"]
        - mean["host_serving"],
        "host serving's partial (Redis MGET, dot product)": mean["host_serving"],
    }
    return {k: round(v, 3) for k, v in segments.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def closed_loop(
    url: str, headers: dict[str, str], rows: list[dict[str, Any]], n: int
) -> dict[str, Any]:
    """One client, one request at a time: the latency of a request when nothing queues."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    with httpx.Client(headers=headers, timeout=10) as client:
        for i in range(n):
            started = time.perf_counter()
            code = str(client.post(url, json=rows[i % len(rows)]).status_code)
            if code == "200":
                latencies.append(time.perf_counter() - started)
            else:
                errors[code] = errors.get(code, 0) + 1
    return {
        "requests": n,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "mean_ms": round(float(np.mean(latencies)) * 1000, 3) if latencies else float("nan"),
        "per_s": round(len(latencies) / sum(latencies), 1) if latencies else 0.0,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", default="200,500,1000")
    parser.add_argument("--workers", type=int, default=256, help="connections at most")
    parser.add_argument("--baseline", default=BASELINE, help="the commit 'before' runs")
    parser.add_argument(
        "--modes",
        default="before,after",
        help="of before, after, untraced (after, no spans), one-in-flight (after, one message "
        "in flight per service at hop 1)",
    )
    parser.add_argument("--git-dir", default=None, help="where --baseline is (default: here)")
    parser.add_argument(
        "--baseline-files",
        default=",".join(BASELINE_FILES),
        help="comma-separated: the files 'before' takes from --baseline (default BASELINE_FILES)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="a folder: py-spy records each process's stacks during every mode's one-client run "
        "(<mode>-<process>.txt, folded, with --idle off); --rates '' runs only those",
    )
    parser.add_argument(
        "--cpu-profile",
        default=None,
        help="a folder: each mode's one-client run restarts both gateways and serving services "
        "with FEDMQ_PROFILE_OUT there (a CPU-clock cProfile of every thread, fedcommon.profiling), "
        "and stops them after it, which writes <service>-<party>-<pid>.prof",
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="one client's requests, one after the other"
    )
    parser.add_argument("--out", default=str(HERE / "results.json"), help="the JSON result")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="seconds a service may take to answer /healthz after its start (the launcher's 30 "
        "is too short for a gateway on a machine at load 20+: its imports alone took 22 s)",
    )
    args = parser.parse_args()
    if args.start_timeout > 30.0:
        wait_healthy = local.wait_healthy

        def patient(state: Any, party: str, timeout: float = 30.0, **kw: Any) -> None:
            wait_healthy(state, party, max(timeout, args.start_timeout), **kw)

        local.wait_healthy = patient  # type: ignore[assignment]
    rates = [float(r) for r in args.rates.split(",") if r]
    modes = args.modes.split(",")
    amqp = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    redis_url = os.environ.get("FEDMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    pg = os.environ.get(
        "FEDMQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    token = "bench-serving"
    result: dict[str, Any] = {
        "load_before": os.getloadavg(),
        "baseline": args.baseline,
        "baseline_files": BASELINE_FILES,
    }
    scratch = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    paths = {"after": os.environ.get("PYTHONPATH")}
    paths["untraced"] = paths["after"]
    if "one-in-flight" in modes:
        paths["one-in-flight"] = one_in_flight_path(scratch)
    if "before" in modes:
        files = tuple(f for f in args.baseline_files.split(",") if f)
        paths["before"] = baseline_path(args.baseline, scratch, args.git_dir, files)
        result["baseline_files"] = files
    with two_parties(
        amqp_url=amqp,
        redis_url=redis_url,
        pg_admin_url=pg,
        token=token,
        label="servingbench",
        env=SERVING_RPC_ENV,
    ) as stack:
        guest = ServingProcess(stack.state, GUEST, stack.root, rate_limit_rows_per_s="1000000")
        host = ServingProcess(stack.state, HOST, stack.root, accept_models_from='["*"]')
        guest.start(timeout=max(60.0, args.start_timeout))
        host.start(timeout=max(60.0, args.start_timeout))
        try:
            upload_breast(stack)
            stack.host.grant("breast_hetero_host", GUEST, ["psi", "hetero_lr"])
            job = stack.guest.submit(PIPELINE, job_id="serving-bench")
            assert stack.guest.wait(job.job_id, timeout=600).state == "success"
            api = f"{stack.guest.base_url}/api/v1/serving"
            headers = {"Authorization": f"Bearer {token}"}
            host_api = f"{stack.host.base_url}/api/v1/serving"
            httpx.post(
                f"{host_api}/features",
                headers=headers,
                json={"table": "breast_hetero_host"},
                timeout=60,
            ).raise_for_status()
            for name, guest_only in (("credit", False), ("credit_floor", True)):
                httpx.post(
                    f"{api}/models",
                    headers=headers,
                    timeout=60,
                    json={
                        "job_id": job.job_id,
                        "name": name,
                        "guest_only": guest_only,
                    },
                ).raise_for_status()
            for service, name in (("risk", "credit"), ("floor", "credit_floor")):
                httpx.post(
                    f"{api}/services",
                    headers=headers,
                    timeout=60,
                    json={
                        "service_id": service,
                        "name": name,
                        "version": 1,
                    },
                ).raise_for_status()
            rows = guest_rows()

            def readings() -> dict[str, tuple[float, float]]:
                return timers(
                    {
                        "guest_gateway": httpx.get(f"{stack.guest.base_url}/metrics").text,
                        "host_gateway": httpx.get(f"{stack.host.base_url}/metrics").text,
                        "guest_serving": guest.metrics(),
                        "host_serving": host.metrics(),
                    }
                )

            def pids() -> dict[str, int]:
                found = {"bench client": os.getpid()}
                for party, side in ((GUEST, "guest"), (HOST, "host")):
                    gateway = local.read_pid(stack.state, party, "gateway")
                    if gateway is not None:
                        found[f"{side} gateway"] = gateway
                for side, process in (("guest", guest), ("host", host)):
                    if process.proc is not None:
                        found[f"{side} serving"] = process.proc.pid
                return found

            def cpu() -> dict[str, float]:
                return {name: cpu_seconds(pid) for name, pid in pids().items()}

            def per_request(before: dict[str, float], n: int) -> dict[str, float]:
                used = {k: (v - before[k]) * 1000 / max(n, 1) for k, v in cpu().items()}
                rounded = {k: round(v, 2) for k, v in used.items()}
                return {**rounded, "all": round(sum(used.values()), 2)}

            def warm(service: str) -> None:
                """Until the service answers (a restarted gateway's link comes back), then
                a second of light traffic (connections, caches)."""
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        code = httpx.post(
                            f"{api}/{service}/predict", headers=headers, json=rows[0], timeout=5
                        ).status_code
                    except httpx.HTTPError:
                        code = 0
                    if code == 200:
                        break
                    time.sleep(0.5)
                open_loop(f"{api}/{service}/predict", headers, rows, 50, 1, args.workers)

            running = {"mode": "after"}

            def switch(mode: str, *, again: bool = False) -> None:
                """Both parties' gateways and serving services on `mode`'s code (`again`:
                restarted even if they run it already)."""
                if running["mode"] == mode and not again:
                    return
                for process in (guest, host):
                    process.stop()
                for party in (GUEST, HOST):
                    local.stop_service(stack.state, party, "gateway")
                path = paths[mode]
                for env in (os.environ, guest.env, host.env):
                    if path is None:
                        env.pop("PYTHONPATH", None)
                    else:
                        env["PYTHONPATH"] = path
                for party in (GUEST, HOST):
                    # "untraced": the guest's gateway without its trace file (the launcher's
                    # default), so no span is exported: what tracing costs per request
                    untraced = mode == "untraced" and party == GUEST
                    os.environ["FEDMQ_GATEWAY_TRACE_FILE"] = (
                        "" if untraced else str(local.trace_file(stack.state, party, "gateway"))
                    )
                    local.start_service(stack.state, party, "gateway")
                for party in (GUEST, HOST):
                    local.wait_healthy(stack.state, party, 60)
                for process in (guest, host):
                    process.start(timeout=max(60.0, args.start_timeout))
                running["mode"] = mode
                warm("risk")

            warm("risk")
            warm("floor")
            sequential: dict[str, Any] = {}

            def idle_cpu(seconds: float = 3.0) -> dict[str, float]:
                """CPU ms per second each process spends with no request (link pings, timers,
                background refreshes): what a slow one-client run would count per request."""
                cpu_before = cpu()
                time.sleep(seconds)
                return {k: (v - cpu_before[k]) * 1000 / seconds for k, v in cpu().items()}

            def one_client(mode: str, service: str) -> None:
                if args.cpu_profile and service == "risk":
                    # Profiled from a restart to a stop: start-up and warm-up are in the
                    # profile too, the requests' calls dominate it with --requests 2000+.
                    os.environ["FEDMQ_PROFILE_OUT"] = str(Path(args.cpu_profile) / mode)
                    guest.env["FEDMQ_PROFILE_OUT"] = host.env["FEDMQ_PROFILE_OUT"] = os.environ[
                        "FEDMQ_PROFILE_OUT"
                    ]
                    try:
                        switch(mode, again=True)
                    finally:
                        for env in (os.environ, guest.env, host.env):
                            env.pop("FEDMQ_PROFILE_OUT", None)
                idle = idle_cpu()
                before = readings()
                cpu_before = cpu()
                spies = profile(mode) if args.profile and service == "risk" else []
                count = 1000 if spies else args.requests
                started = time.perf_counter()
                found = closed_loop(f"{api}/{service}/predict", headers, rows, count)
                took = time.perf_counter() - started
                for spy in spies:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
                found["load"] = os.getloadavg()[0]
                found["cpu_ms_per_request"] = per_request(cpu_before, count)
                # The same less what each process spends idle over as long (its pings, timers).
                busy = {
                    k: v - idle.get(k, 0.0) * took / count
                    for k, v in found["cpu_ms_per_request"].items()
                    if k != "all"
                }
                found["idle_cpu_ms_per_s"] = {k: round(v, 2) for k, v in idle.items()}
                found["cpu_ms_per_request_less_idle"] = {
                    **{k: round(v, 2) for k, v in busy.items()},
                    "all": round(sum(busy.values()), 2),
                }
                if service == "risk":
                    found["breakdown_ms"] = breakdown(before, readings(), found["mean_ms"])
                sequential[f"{service} {mode}"] = found
                print(service, mode, "one client", json.dumps(found), flush=True)
                if args.cpu_profile and service == "risk":
                    switch(mode, again=True)  # the profiled processes stop: profiles written

            def profile(mode: str) -> list[subprocess.Popen[bytes]]:
                """py-spy on every process of the path but the bench client, until SIGINT."""
                folder = Path(args.profile)
                folder.mkdir(parents=True, exist_ok=True)
                return [
                    subprocess.Popen(
                        [
                            str(Path(sys.executable).with_name("py-spy")),
                            "record",
                            "--pid",
                            str(pid),
                            "--rate",
                            "200",
                            "--nonblocking",  # never stops the process: no added latency
                            "--format",
                            "raw",
                            "--output",
                            str(folder / f"{mode}-{name.replace(' ', '-')}.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for name, pid in pids().items()
                    if name != "bench client"
                ]

            runs = []
            seen: set[str] = set()
            if not rates:  # one client per mode only
                for mode in modes:
                    switch(mode)
                    one_client(mode, "risk")
            for i, rate in enumerate(rates):
                for mode in modes if i % 2 == 0 else modes[::-1]:
                    switch(mode)
                    if mode not in seen:
                        seen.add(mode)
                        one_client(mode, "risk")
                    cpu_before = cpu()
                    run = open_loop(
                        f"{api}/risk/predict", headers, rows, rate, args.seconds, args.workers
                    )
                    run["cpu_ms_per_answer"] = per_request(cpu_before, run["ok"])
                    run["service"] = "risk"
                    run["mode"] = mode
                    run["load"] = os.getloadavg()[0]
                    print(json.dumps(run), flush=True)
                    runs.append(run)
                cpu_before = cpu()
                run = open_loop(
                    f"{api}/floor/predict", headers, rows, rate, args.seconds, args.workers
                )
                run["cpu_ms_per_answer"] = per_request(cpu_before, run["ok"])
                run["service"] = "floor"
                run["mode"] = running["mode"]
                run["load"] = os.getloadavg()[0]
                print(json.dumps(run), flush=True)
                runs.append(run)
            result["one_client"] = sequential
            result["single_row"] = runs
            switch("after")
            one_client("after", "floor")
            batch = [rows[i % len(rows)] for i in range(10_000)]
            for service in ("floor", "risk"):
                times: list[float | str] = []
                for _ in range(3):
                    started = time.perf_counter()
                    response = httpx.post(
                        f"{api}/{service}/predict/batch",
                        headers=headers,
                        json={"rows": batch, "timeout_s": 20},
                        timeout=120,
                    )
                    took = round(time.perf_counter() - started, 3)
                    times.append(took if response.status_code == 200 else response.text[:200])
                result[f"batch_10k_{service}_s"] = times
                print(service, "batch 10k", times, flush=True)
        finally:
            guest.stop()
            host.stop()
            os.environ.pop("FEDMQ_GATEWAY_TRACE_FILE", None)
            if paths["after"] is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = paths["after"]
            shutil.rmtree(scratch, ignore_errors=True)
    result["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
