"""Gateway benchmark: party-to-party throughput and latency through both gateways.

Path measured ("gateways"): a producer publishes envelopes into party 9999's broker (topic
out.10000); 9999's gateway consumes, signs (Ed25519 over canonical bytes), sends over mutual
TLS; 10000's gateway verifies, publishes into its broker, waits for the confirm, ACKs; 9999's
gateway acks the source. A consumer at 10000 (svc.worker) records arrival times. Latency is
publish -> handler, on the wall clock (all processes on this machine).

Baseline ("direct", same run): the same messages published straight into party 10000's broker
(svc.worker) and consumed there — the broker work without the site link. The table gives the
gateway path's ratio to it.

Loads: "burst" (all messages at once: throughput; its latencies include queueing) and "paced"
(a fixed offered rate far below capacity: the latency of one message through the path).

Modes: `rabbitmq` (default): two parties on the local RabbitMQ via the launcher (vhosts per
party, gateways as separate processes); `memory`: both gateways in this process on memory://
buses (link, TLS and crypto cost without a broker).

    .venv/bin/python bench/gateway/run.py                    # 3,000 x 1 KiB, 100 x 1 MiB
    .venv/bin/python bench/gateway/run.py --small 1000 --large 40 --mode memory
Results: printed table, and bench/gateway/results.json.
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
from dataclasses import asdict, dataclass
from pathlib import Path

from fedbus import Bus, Delivery, Message, connect
from fedschemas import FederationData, PartyRef, encode_envelope, new_envelope
from two_gateways import local_servers, memory_gateways

HERE = Path(__file__).resolve().parent
SENT = "x-bench-sent"
SRC = PartyRef(party_id="9999", role="guest")
DST = PartyRef(party_id="10000", role="host")


@dataclass
class Result:
    mode: str
    path: str
    load: str
    """burst: all messages at once (throughput; latency includes queueing); paced: a fixed
    offered rate well below capacity (latency of one message through the path)."""
    size_bytes: int
    messages: int
    seconds: float
    msg_per_s: float
    mb_per_s: float
    p50_ms: float
    p99_ms: float


def _messages(n: int, size: int, topic: str, run: str) -> list[Message]:
    blob = os.urandom(size)
    now = dt.datetime.now(dt.UTC)
    out = []
    for i in range(n):
        env = new_envelope(
            FederationData(kind="ciphertext_vector", blob=blob, blob_format="bench.v1", meta={}),
            job_id=run,
            component="bench",
            task_id="t",
            attempt=0,
            source=SRC,
            destination=DST,
            tag="bench",
            iteration=-1,
            seq=i,
            created_at=now,
        )
        out.append(Message(topic=topic, body=encode_envelope(env), message_id=env.message_id))
    return out


class Sink:
    def __init__(self, bus: Bus, topic: str, expected: int) -> None:
        self.latencies: list[float] = []
        self.last = 0.0
        self.done = threading.Event()
        self._expected = expected
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._subs = [bus.subscribe(topic, self._handle, prefetch=64) for _ in range(2)]

    def _handle(self, d: Delivery) -> None:
        now = time.time()
        with self._lock:
            if d.message_id in self._seen:
                return
            self._seen.add(d.message_id)
            self.latencies.append(now - float(d.headers[SENT]))
            self.last = now
            if len(self._seen) >= self._expected:
                self.done.set()

    def cancel(self) -> None:
        for s in self._subs:
            s.cancel()


def _measure(
    mode: str,
    path: str,
    pub: Bus,
    sub: Bus,
    topic_in: str,
    topic_out: str,
    n: int,
    size: int,
    rate: float | None = None,
) -> Result:
    messages = _messages(n, size, topic_in, f"bench-{uuid.uuid4().hex[:8]}")
    sink = Sink(sub, topic_out, n)
    batch = 1 if rate else (64 if size <= 64 << 10 else 4)
    start = time.time()
    for i in range(0, n, batch):
        if rate:
            time.sleep(max(0.0, start + i / rate - time.time()))
        chunk = messages[i : i + batch]
        stamp = str(time.time())
        pub.publish_many(
            [Message(m.topic, m.body, m.message_id, headers={SENT: stamp}) for m in chunk]
        )
    ok = sink.done.wait(600)
    sink.cancel()
    if not ok:
        raise RuntimeError(f"{path} {size} B: only {len(sink.latencies)} of {n} arrived")
    seconds = sink.last - start
    lat = sorted(sink.latencies)
    return Result(
        mode=mode,
        path=path,
        load=f"paced {rate:g}/s" if rate else "burst",
        size_bytes=size,
        messages=n,
        seconds=round(seconds, 3),
        msg_per_s=round(n / seconds, 1),
        mb_per_s=round(n * size / seconds / 1e6, 1),
        p50_ms=round(statistics.median(lat) * 1000, 2),
        p99_ms=round(lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000, 2),
    )


Scenario = tuple[int, int, float | None]  # messages, size, offered rate (None: burst)


def run_rabbitmq(sizes: list[Scenario]) -> list[Result]:
    from fedmq import local

    root = Path(tempfile.mkdtemp(prefix="fedmq-bench-gw-"))
    results = []
    try:
        state = local.up(
            ["9999", "10000"],
            root,
            services=("gateway",),
            prefix=f"fedmqb{uuid.uuid4().hex[:6]}",
            federation="bench",
            **local_servers(),
        )
        a = connect(state.parties["9999"].bus_url)
        b = connect(state.parties["10000"].bus_url)
        for bus, topic in ((a, "out.10000"), (b, "svc.worker")):
            bus.declare(topic)
        for n, size, rate in sizes:
            results.append(
                _measure("rabbitmq", "direct", b, b, "svc.worker", "svc.worker", n, size, rate)
            )
            results.append(
                _measure("rabbitmq", "gateways", a, b, "out.10000", "svc.worker", n, size, rate)
            )
        a.close()
        b.close()
    finally:
        if (root / local.STATE_FILE).exists():
            local.down(root, purge=True)
        shutil.rmtree(root, ignore_errors=True)
    return results


def run_memory(sizes: list[Scenario]) -> list[Result]:
    with memory_gateways("fedmq-bench-gw-mem-", "9999", "10000") as (a, b):
        b.declare("bench.direct")
        results = []
        for n, size, rate in sizes:
            results.append(
                _measure("memory", "direct", b, b, "bench.direct", "bench.direct", n, size, rate)
            )
            results.append(
                _measure("memory", "gateways", a, b, "out.10000", "svc.worker", n, size, rate)
            )
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=3000, help="number of 1 KiB messages")
    parser.add_argument("--large", type=int, default=100, help="number of 1 MiB messages")
    parser.add_argument("--mode", choices=["rabbitmq", "memory", "both"], default="both")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    sizes: list[Scenario] = [
        (args.small, 1024, None),
        (args.large, 1 << 20, None),
        (max(50, args.small // 10), 1024, 50.0),
        (max(10, args.large // 4), 1 << 20, 5.0),
    ]
    results: list[Result] = []
    if args.mode in ("memory", "both"):
        results += run_memory(sizes)
    if args.mode in ("rabbitmq", "both"):
        results += run_rabbitmq(sizes)
    baseline = {(r.mode, r.load, r.size_bytes): r for r in results if r.path == "direct"}
    print(
        f"{'mode':<9}{'path':<10}{'load':<14}{'size':>8}{'msgs':>7}{'msg/s':>9}{'MB/s':>8}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'vs direct':>11}"
    )
    for r in results:
        base = baseline[(r.mode, r.load, r.size_bytes)]
        ratio = r.msg_per_s / base.msg_per_s if base.msg_per_s else 0.0
        print(
            f"{r.mode:<9}{r.path:<10}{r.load:<14}{r.size_bytes:>8}{r.messages:>7}"
            f"{r.msg_per_s:>9.0f}{r.mb_per_s:>8.1f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}"
            f"{ratio:>10.2f}x"
        )
    args.out.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "targets": {"1KiB_msg_per_s": 2000, "1MiB_MB_per_s": 200},
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
