"""bench/serving/hops.py: what one bus request/reply hop of online serving costs (issue #15).

A request of the two-party serving path takes three bus request/reply hops (REST API ->
serving, serving -> gateway, gateway -> the host's serving). This measures one such hop on its
own, on the local RabbitMQ, with the two queue kinds side by side in the same run:

- `quorum`: the durable quorum queue every topic had before (each publish is a Raft round
  and an fsync before the confirm);
- `transient`: the non-durable classic queue fedbus now gives the topics in
  fedschemas.topics.TRANSIENT.

An echo responder (its own connection, 16 subscriptions of prefetch 2, as the serving service
runs them) answers each request; the requester sends from one thread one after the other
(latency when nothing queues), then from 32 threads at once for --seconds (throughput, and
latency under that load). Rounds alternate the two kinds (ABBA), so load drifts hit both.

    .venv/bin/python -m bench.serving.hops [--rounds 2] [--seconds 3] [--kinds quorum,transient]

Also per run: the requester process's CPU per call (requester and responder share the process,
so this is one whole hop), and one client on an asyncio loop with `Bus.arequest`
("one_client_async_*"; where the fedbus on the path has no arequest, e.g. an older tree put
first on PYTHONPATH to compare code, the same through a thread: `asyncio.to_thread`).

Prints JSON and writes bench/serving/hops.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fedbus import Delivery, connect
from fedbus.amqp_bus import AmqpBus

HERE = Path(__file__).resolve().parent
BODY = json.dumps({"op": "partial", "name": "credit", "version": 1, "ids": ["133"]}).encode()


def ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(values), q)) * 1000, 3) if values else float("nan")


async def one_client_async(bus: Any, topic: str, count: int) -> tuple[list[float], float]:
    """One request after the other from an asyncio loop: latencies, CPU ms per call."""
    arequest = getattr(bus, "arequest", None)
    one: list[float] = []
    cpu_started = sum(os.times()[:2])
    for _ in range(count):
        started = time.perf_counter()
        if arequest is not None:
            await arequest(topic, BODY, timeout=5)
        else:
            await asyncio.to_thread(bus.request, topic, BODY, timeout=5)
        one.append(time.perf_counter() - started)
    return one, (sum(os.times()[:2]) - cpu_started) * 1000 / count


def measure(url: str, kind: str, sequential: int, seconds: float, threads: int) -> dict[str, Any]:
    topic = f"bench.hop.{kind}.{uuid.uuid4().hex[:8]}"
    transient = [topic] if kind == "transient" else []
    responder = connect(url, transient_topics=transient)
    requester = connect(url, transient_topics=transient)
    assert isinstance(responder, AmqpBus)
    try:

        def echo(delivery: Delivery) -> None:
            responder.reply(delivery, delivery.body)

        responder.declare(topic)
        subs = [responder.subscribe(topic, echo, prefetch=2) for _ in range(16)]
        for _ in range(20):  # warm: the reply channel, the queue
            requester.request(topic, BODY, timeout=5)
        one: list[float] = []
        cpu_started = sum(os.times()[:2])
        for _ in range(sequential):
            started = time.perf_counter()
            requester.request(topic, BODY, timeout=5)
            one.append(time.perf_counter() - started)
        # Requester and responder both run in this process: CPU of one whole hop.
        cpu_ms = (sum(os.times()[:2]) - cpu_started) * 1000 / sequential
        one_async, async_cpu_ms = asyncio.run(one_client_async(requester, topic, sequential))
        many: list[float] = []
        lock = threading.Lock()
        stop_at = time.perf_counter() + seconds

        def client() -> None:
            mine: list[float] = []
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                requester.request(topic, BODY, timeout=5)
                mine.append(time.perf_counter() - started)
            with lock:
                many.extend(mine)

        began = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            for _ in range(threads):
                pool.submit(client)
        elapsed = time.perf_counter() - began
        for sub in subs:
            sub.cancel()
        return {
            "kind": kind,
            "one_client_p50_ms": ms(one, 50),
            "one_client_p99_ms": ms(one, 99),
            "one_client_cpu_ms_per_call": round(cpu_ms, 3),
            "one_client_async_p50_ms": ms(one_async, 50),
            "one_client_async_p99_ms": ms(one_async, 99),
            "one_client_async_cpu_ms_per_call": round(async_cpu_ms, 3),
            f"{threads}_clients_per_s": round(len(many) / elapsed, 1),
            f"{threads}_clients_p50_ms": ms(many, 50),
            f"{threads}_clients_p99_ms": ms(many, 99),
            "load": round(os.getloadavg()[0], 1),
        }
    finally:
        responder.delete(topic)
        requester.close()
        responder.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--kinds", default="quorum,transient")
    args = parser.parse_args()
    url = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    runs = []
    order = args.kinds.split(",")
    for i in range(args.rounds):
        for kind in order if i % 2 == 0 else order[::-1]:
            run = measure(url, kind, args.sequential, args.seconds, args.threads)
            print(json.dumps(run), flush=True)
            runs.append(run)
    result = {"runs": runs, "load_after": os.getloadavg()}
    (HERE / "hops.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
