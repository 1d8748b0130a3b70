"""Issue #22: what the span export guards and the crypto counters cost, each against the same
path without them, in one run.

1. Shutdown with the collector gone: a provider holding N ended spans for an OTLP endpoint
   nothing listens on is shut down; the exporter as OpenTelemetry wires it by default (batch
   processor, 10 s export timeout, 30 s shutdown join) against fedmq's (2 s export, 2 s
   shutdown bound, failures counted).
2. Span cost with the trace file (JSON lines, `trace_file`) against spans created but not
   exported: µs per span, alternating rounds, medians.
3. The crypto counters on a batch small enough to stay in the caller's thread (fedcrypto's
   `run_here` path): 256 encryptions at 2048 bits with the worker's metered pool against a
   plain ThreadPoolExecutor, alternating rounds, medians.

    python bench/observability/trace_export.py [--spans 1500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fedcommon.tracing import export_failures_counter, make_tracer_provider
from fedcrypto.paillier import generate_keypair
from fedworker.crypto import MeteredThreadPool
from fedworker.metrics import WorkerMetrics
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/traces"  # closed once the socket is


def make_spans(provider: TracerProvider, count: int) -> None:
    tracer = provider.get_tracer("bench")
    for i in range(count):
        with tracer.start_as_current_span(f"span {i}", attributes={"fedmq.job_id": "bench"}):
            pass


def shutdown_seconds(provider: TracerProvider, spans: int) -> float:
    make_spans(provider, spans)
    started = time.monotonic()
    provider.shutdown()
    return time.monotonic() - started


def per_span_us(provider: TracerProvider, spans: int) -> float:
    started = time.perf_counter()
    make_spans(provider, spans)
    return (time.perf_counter() - started) / spans * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    default = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    default.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=closed_url())))
    failures = export_failures_counter()
    guarded = make_tracer_provider(
        "bench", "1", otlp_endpoint=closed_url(), export_failures=failures
    )
    before = shutdown_seconds(default, args.spans)
    after = shutdown_seconds(guarded, args.spans)
    print(f"shutdown, collector gone, {args.spans} spans queued:")
    print(f"  OpenTelemetry defaults  {before:6.1f} s")
    print(
        f"  fedmq                   {after:6.1f} s  ({before / after:.1f}x shorter; "
        f"{failures.labels('otlp')._value.get():.0f} failed exports counted)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        plain_us, file_us = [], []
        for r in range(args.rounds):
            plain = make_tracer_provider("bench", "1")
            to_file = make_tracer_provider("bench", "1", trace_file=Path(tmp) / f"r{r}.jsonl")
            plain_us.append(per_span_us(plain, 3000))
            file_us.append(per_span_us(to_file, 3000))
            plain.shutdown()
            to_file.shutdown()
    p, f = statistics.median(plain_us), statistics.median(file_us)
    print(
        f"span, created only {p:6.1f} us; with trace file {f:6.1f} us (+{f - p:.1f} us, "
        f"{(f - p) / p:+.0%})"
    )

    pk, _ = generate_keypair(2048)
    values = np.linspace(-1.0, 1.0, 256)
    plain_pool = ThreadPoolExecutor(2)
    metered = MeteredThreadPool(WorkerMetrics(process=False), max_workers=2)
    plain_s, metered_s = [], []
    try:
        for _ in range(args.rounds):
            for pool, out in ((plain_pool, plain_s), (metered, metered_s)):
                started = time.perf_counter()
                pk.encrypt(values, executor=pool)
                out.append(time.perf_counter() - started)
    finally:
        plain_pool.shutdown()
        metered.shutdown()
    a, b = statistics.median(plain_s) * 1e3, statistics.median(metered_s) * 1e3
    print(f"256 encryptions inline: plain pool {a:.1f} ms, metered {b:.1f} ms ({(b - a) / a:+.1%})")


if __name__ == "__main__":
    main()
