"""bench/serving: online hetero_lr prediction on the local two-party stack (issue #15).

Both parties' gateways, schedulers, workers and serving services run as processes on RabbitMQ,
PostgreSQL and Redis (`fedmq local`, tests/serving/stack.py). A one-epoch hetero_lr job on the
breast data is published twice: the two-party model (service `risk`: the guest's part plus the
host's partial score through both gateways) and the guest's part alone (service `floor`, the
floor: the same REST and bus path without the cross-site call), measured in the same run.

First one client sends 200 requests one after the other (the latency of a request when nothing
queues). Then per rate (200, 500, 1000 requests/s; one row per request) and service: an open
loop sends at the rate for --seconds and measures each request from its scheduled send time
(so a client that falls behind counts its queueing as latency: no coordinated omission),
giving throughput achieved, p50, p99 and errors. Then a batch of 10,000 rows through
/predict/batch, three times.

    .venv/bin/python -m bench.serving.run [--seconds 10] [--rates 200,500,1000]

Prints a JSON result and writes bench/serving/results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.local_stack import DATA, GUEST, HOST, two_parties, upload_breast
from tests.serving.stack import SERVING_RPC_ENV, ServingProcess

HERE = Path(__file__).resolve().parent
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
    workers: int,
) -> dict[str, Any]:
    """Send `rate` requests/s for `seconds`, each at its scheduled instant (a pool of clients);
    latency counts from the scheduled instant."""
    total = int(rate * seconds)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(headers=headers, timeout=10)
        return local.client  # type: ignore[no-any-return]

    start = time.perf_counter() + 0.2

    def send(i: int) -> None:
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        try:
            response = client().post(url, json=rows[i % len(rows)])
            code = str(response.status_code)
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        took = time.perf_counter() - due
        with lock:
            if code == "200":
                latencies.append(took)
            else:
                errors[code] = errors.get(code, 0) + 1

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(send, range(total)))
    elapsed = time.perf_counter() - start
    return {
        "rate": rate,
        "sent": total,
        "ok": len(latencies),
        "achieved_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "errors": errors,
    }


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
        "per_s": round(len(latencies) / sum(latencies), 1) if latencies else 0.0,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", default="200,500,1000")
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    amqp = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    redis_url = os.environ.get("FEDMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    pg = os.environ.get(
        "FEDMQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    token = "bench-serving"
    result: dict[str, Any] = {"load_before": os.getloadavg()}
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
        guest.start()
        host.start()
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
            # warm-up: connections, caches
            for service in ("risk", "floor"):
                open_loop(f"{api}/{service}/predict", headers, rows, 50, 2, args.workers)
            sequential = {}
            for service in ("floor", "risk"):
                sequential[service] = closed_loop(f"{api}/{service}/predict", headers, rows, 200)
                sequential[service]["load"] = os.getloadavg()[0]
                print(service, "one client", json.dumps(sequential[service]), flush=True)
            result["one_client"] = sequential
            runs = []
            for rate in rates:
                for service in ("floor", "risk"):
                    run = open_loop(
                        f"{api}/{service}/predict", headers, rows, rate, args.seconds, args.workers
                    )
                    run["service"] = service
                    run["load"] = os.getloadavg()[0]
                    print(json.dumps(run), flush=True)
                    runs.append(run)
            result["single_row"] = runs
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
            result["guest_serving_metrics"] = [
                line
                for line in guest.metrics().splitlines()
                if line.startswith("fedmq_serving_request_seconds_sum")
                or line.startswith("fedmq_serving_request_seconds_count")
                or line.startswith("fedmq_serving_host_call_seconds_sum")
                or line.startswith("fedmq_serving_host_call_seconds_count")
            ]
        finally:
            guest.stop()
            host.stop()
    result["load_after"] = os.getloadavg()
    (HERE / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
