"""What observability costs on the message path and the HTTP path (issue #7).

Every service now counts its messages (fedbus BusMetrics) and its HTTP requests
(fedcommon.http middleware: metrics and a SERVER span per request). This measures what that
adds, against the same code with it off, in the same run:

- envelopes: `EnvelopePublisher.send` -> memory bus -> `EnvelopeConsumer` (decode, span, log
  context, InMemoryInbox done marker, handler), N envelopes per round, metrics=None vs
  BusMetrics. The memory bus makes this the worst case: on RabbitMQ the same message costs
  the broker and the client several hundred microseconds more (bench/bus), the metrics the same.
- http: GET of a trivial route through the ASGI app (httpx ASGITransport, no sockets), plain
  FastAPI vs FastAPI + HttpObservabilityMiddleware.
- spans: the same envelope round with spans exported to an in-memory exporter vs not exported
  (the default without a collector), to show what a collector's exporter adds in-process.

Rounds alternate off/on so drift on a shared machine hits both; the table shows the median
per-message (per-request) time of each and the difference.

    .venv/bin/python bench/observability/run.py [--messages 3000] [--requests 2000] [--rounds 7]
Results: printed table, and bench/observability/results.json (`--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def envelope_round(messages: int, *, metrics: bool, exporter: Any = None) -> float:
    """Seconds per envelope, publish to handled, for one round on a fresh memory bus."""
    from fedbus import connect
    from fedbus.in_memory_inbox import InMemoryInbox
    from fedbus.metrics import BusMetrics
    from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher
    from fedcommon.tracing import make_tracer_provider
    from fedschemas import DemoPing, PartyRef, new_envelope
    from prometheus_client import CollectorRegistry

    guest = PartyRef(party_id="9999", role="guest")
    host = PartyRef(party_id="10000", role="host")
    bus = connect(f"memory://bench-{uuid.uuid4().hex[:8]}")
    topic = "svc.worker"
    bus.declare(topic)
    bus_metrics = BusMetrics(CollectorRegistry()) if metrics else None
    provider = make_tracer_provider("bench", "9999", exporter)
    tracer = provider.get_tracer("bench")
    done = threading.Event()
    count = 0

    def handler(envelope: Any, payload: Any, tx: Any) -> None:
        nonlocal count
        count += 1
        if count == messages:
            done.set()

    consumer = EnvelopeConsumer(
        bus, topic, {"demo.ping": handler}, InMemoryInbox(), metrics=bus_metrics, tracer=tracer
    )
    publisher = EnvelopePublisher(bus, guest, metrics=bus_metrics, tracer=tracer)
    now = datetime.now(UTC)
    envelopes = [
        new_envelope(
            DemoPing(text="x" * 900, n=i),
            job_id="bench",
            component="demo",
            task_id="bench-task",
            attempt=0,
            source=guest,
            destination=host,
            tag="demo.ping",
            iteration=-1,
            seq=i,
            created_at=now,
        )
        for i in range(messages)
    ]
    consumer.start()
    started = time.perf_counter()
    for envelope in envelopes:
        publisher.send(topic, envelope)
    if not done.wait(120):
        raise RuntimeError(f"only {count} of {messages} envelopes handled")
    elapsed = time.perf_counter() - started
    consumer.stop()
    bus.close()
    provider.shutdown()
    return elapsed / messages


def http_round(requests: int, *, middleware: bool) -> float:
    """Seconds per GET through the ASGI app, in process."""
    import httpx
    from fastapi import FastAPI
    from fedcommon.http import HttpMetrics, HttpObservabilityMiddleware
    from prometheus_client import CollectorRegistry

    app = FastAPI()

    @app.get("/api/v1/jobs/{job_id}")
    def job(job_id: str) -> dict[str, str]:
        return {"job_id": job_id, "state": "running"}

    if middleware:
        app.add_middleware(HttpObservabilityMiddleware, metrics=HttpMetrics(CollectorRegistry()))

    async def go() -> float:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for i in range(50):  # warm-up: routing caches, pydantic models
                await client.get(f"/api/v1/jobs/warm-{i}")
            started = time.perf_counter()
            for i in range(requests):
                response = await client.get(f"/api/v1/jobs/job-{i}")
                response.raise_for_status()
            return (time.perf_counter() - started) / requests

    return asyncio.run(go())


def alternate(rounds: int, off: Any, on: Any) -> tuple[list[float], list[float]]:
    offs: list[float] = []
    ons: list[float] = []
    for _ in range(rounds):
        offs.append(off())
        ons.append(on())
    return offs, ons


def row(
    name: str, off_label: str, on_label: str, offs: list[float], ons: list[float]
) -> dict[str, Any]:
    off_us = statistics.median(offs) * 1e6
    on_us = statistics.median(ons) * 1e6
    return {
        "case": name,
        "baseline": off_label,
        "with": on_label,
        "baseline_us": round(off_us, 1),
        "with_us": round(on_us, 1),
        "added_us": round(on_us - off_us, 1),
        "added_pct": round(100 * (on_us - off_us) / off_us, 1),
        "rounds": len(offs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="envelopes per round")
    parser.add_argument("--requests", type=int, default=2000, help="HTTP requests per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    from fedcommon.logging import configure_logging
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # As the services run: INFO and above (the per-message debug line is filtered out).
    configure_logging("bench", level="INFO", json=True)
    load_before = os.getloadavg()
    rows = []
    offs, ons = alternate(
        args.rounds,
        lambda: envelope_round(args.messages, metrics=False),
        lambda: envelope_round(args.messages, metrics=True),
    )
    rows.append(row("envelope, memory bus", "no metrics", "BusMetrics", offs, ons))
    offs, ons = alternate(
        args.rounds,
        lambda: envelope_round(args.messages, metrics=True),
        lambda: envelope_round(args.messages, metrics=True, exporter=InMemorySpanExporter()),
    )
    rows.append(row("envelope, memory bus", "spans not exported", "spans exported", offs, ons))
    offs, ons = alternate(
        args.rounds,
        lambda: http_round(args.requests, middleware=False),
        lambda: http_round(args.requests, middleware=True),
    )
    rows.append(row("HTTP GET, in-process ASGI", "plain FastAPI", "+ middleware", offs, ons))
    load_after = os.getloadavg()

    print(f"{'case':28} {'baseline':20} {'with':20} {'base µs':>9} {'with µs':>9} {'added':>14}")
    for r in rows:
        added = f"{r['added_us']:+.1f} ({r['added_pct']:+.1f}%)"
        print(
            f"{r['case']:28} {r['baseline']:20} {r['with']:20} "
            f"{r['baseline_us']:9.1f} {r['with_us']:9.1f} {added:>14}"
        )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    result = {
        "rows": rows,
        "messages": args.messages,
        "requests": args.requests,
        "load_before": load_before,
        "load_after": load_after,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
