"""Bus benchmark: throughput and publish-to-handler latency on RabbitMQ, with and without the
inbox's done-marker transaction (SqlInbox on PostgreSQL).

Messages are 1 KiB, persistent, published with confirms (fedbus amqp adapter). Publishers run
in a separate process (several threads, each `publish` waits for its own confirm, confirms of
different threads are pipelined); consumers run in this process, one subscription (channel and
handler thread) each. Latency is measured from just before `publish` to the end of the handler
(for the inbox scenario: after the marker's COMMIT), on the system-wide monotonic clock.

Each scenario runs twice:
- burst: all messages as fast as the publishers can go -> throughput (msg/s, end to end);
  latencies here include queueing, since publishers outrun consumers by design;
- paced: a fixed offered rate (default 5,000 msg/s) -> p50/p99 latency at that load.

The baseline is the "bus" scenario of the same run; the table gives each scenario's ratio to it.

    .venv/bin/python bench/bus/run.py                      # 20,000 messages, defaults
    .venv/bin/python bench/bus/run.py --messages 5000 --paced-messages 5000
Results: printed table, and bench/bus/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_AMQP = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
DEFAULT_PG = os.environ.get(
    "FEDMQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
STAMP = struct.Struct(">Q")

sys.path.insert(0, str(HERE))
from cpu import CpuSnapshot, cpu_split  # noqa: E402  (bench/bus/cpu.py, next to this script)

# -- publisher process -----------------------------------------------------------------------


def publish_main(args: argparse.Namespace) -> None:
    """Child process: publish `count` messages from `threads` threads, optionally paced."""
    from fedbus import Message, connect
    from fedcommon.logging import configure_logging

    configure_logging("bench-publisher", "WARNING", json=False, stream=sys.stderr)
    bus = connect(args.amqp_url)
    per_thread = [args.count // args.threads + (i < args.count % args.threads)
                  for i in range(args.threads)]
    padding = os.urandom(max(0, args.size - STAMP.size))
    interval = args.threads / args.rate if args.rate > 0 else 0.0
    errors: list[str] = []

    batch = max(1, args.batch)

    def run(index: int, n: int) -> None:
        start = time.monotonic()
        for k0 in range(0, n, batch):
            if interval:
                due = start + k0 * interval
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            messages = [
                Message(
                    args.topic,
                    STAMP.pack(time.monotonic_ns()) + padding,
                    f"{args.run_id}-{index}-{k}",
                )
                for k in range(k0, min(n, k0 + batch))
            ]
            try:
                if len(messages) == 1:
                    bus.publish(messages[0])
                else:
                    bus.publish_many(messages)  # confirms awaited together
            except Exception as exc:  # reported to the parent, which fails the run
                errors.append(repr(exc))
                return

    threads = [threading.Thread(target=run, args=(i, n)) for i, n in enumerate(per_thread)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    bus.close()
    print(json.dumps({"published": args.count, "seconds": elapsed, "errors": errors[:5]}))


# -- consumer side ---------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    mode: str
    messages: int
    publishers: int
    consumers: int
    offered_rate: float | None
    seconds: float
    throughput: float
    publish_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms_per_msg: dict[str, float]


class Recorder:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.latencies_ns: list[int] = []
        self.first_sent: int | None = None
        self.last_done = 0
        self.lock = threading.Lock()
        self.done = threading.Event()

    def record(self, body: bytes) -> None:
        now = time.monotonic_ns()
        (sent,) = STAMP.unpack_from(body)
        with self.lock:
            self.latencies_ns.append(now - sent)
            self.first_sent = sent if self.first_sent is None else min(self.first_sent, sent)
            self.last_done = max(self.last_done, now)
            if len(self.latencies_ns) >= self.expected:
                self.done.set()


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index] / 1e6


def run_phase(
    args: argparse.Namespace,
    scenario: str,
    mode: str,
    count: int,
    rate: float,
    make_handler: Callable[[Recorder], Callable[[Any], None]],
) -> Result:
    from fedbus import connect

    topic = f"bench.{uuid.uuid4().hex[:10]}"
    bus = connect(args.amqp_url)
    bus.declare(topic)
    recorder = Recorder(count)
    handler = make_handler(recorder)
    consumers = [connect(args.amqp_url) for _ in range(args.consumers)]
    try:
        for c in consumers:
            c.subscribe(topic, handler, prefetch=args.prefetch)
        cpu_before = CpuSnapshot.take()
        cmd = [
            sys.executable, __file__, "--publish",
            "--amqp-url", args.amqp_url, "--topic", topic, "--count", str(count),
            "--threads", str(args.publishers), "--size", str(args.size),
            "--rate", str(rate), "--run-id", uuid.uuid4().hex[:8], "--batch", str(args.batch),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        if out.returncode != 0:
            raise RuntimeError(f"publisher failed: {out.stderr[-2000:]}")
        pub = json.loads(out.stdout.strip().splitlines()[-1])
        if pub["errors"]:
            raise RuntimeError(f"publish errors: {pub['errors']}")
        if not recorder.done.wait(args.timeout):
            raise RuntimeError(f"only {len(recorder.latencies_ns)} of {count} messages handled")
        cpu = cpu_split(cpu_before, CpuSnapshot.take(), count)
    finally:
        for c in consumers:
            c.close()
        bus.delete(topic)
        bus.close()
    lat = sorted(recorder.latencies_ns)
    assert recorder.first_sent is not None
    seconds = (recorder.last_done - recorder.first_sent) / 1e9
    return Result(
        scenario=scenario,
        mode=mode,
        messages=count,
        publishers=args.publishers,
        consumers=args.consumers,
        offered_rate=rate or None,
        seconds=round(seconds, 3),
        throughput=round(count / seconds, 1),
        publish_rate=round(count / pub["seconds"], 1),
        p50_ms=round(percentile(lat, 0.50), 2),
        p99_ms=round(percentile(lat, 0.99), 2),
        max_ms=round(lat[-1] / 1e6, 2),
        cpu_ms_per_msg=cpu,
    )


def bench_main(args: argparse.Namespace) -> None:
    import sqlalchemy as sa
    from fedbus.inbox import deduplicating
    from fedbus.sql_inbox import SqlInbox
    from fedcommon.logging import configure_logging

    configure_logging("bench", "WARNING", json=False, stream=sys.stderr)

    def plain(recorder: Recorder) -> Callable[[Any], None]:
        return lambda delivery: recorder.record(delivery.body)

    db_name = f"fedmq_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
    inbox = SqlInbox(args.pg_url.rsplit("/", 1)[0] + "/" + db_name)

    def with_inbox(recorder: Recorder) -> Callable[[Any], None]:
        # The effect is empty: what is measured is the done-marker transaction itself.
        dedupe = deduplicating(lambda delivery, tx: None, inbox)

        def handle(delivery: Any) -> None:
            dedupe(delivery)
            recorder.record(delivery.body)

        return handle

    scenarios = [("bus", plain), ("bus + done marker (PostgreSQL)", with_inbox)]
    results: list[Result] = []
    try:
        for name, make in scenarios:
            results.append(run_phase(args, name, "burst", args.messages, 0.0, make))
            print(f"  {name} burst: {results[-1].throughput:,.0f} msg/s, CPU ms/msg "
                  f"{results[-1].cpu_ms_per_msg}", file=sys.stderr)
            results.append(run_phase(args, name, "paced", args.paced_messages, args.rate, make))
            print(f"  {name} paced: p99 {results[-1].p99_ms} ms, CPU ms/msg "
                  f"{results[-1].cpu_ms_per_msg}", file=sys.stderr)
    finally:
        inbox.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()

    baseline = {r.mode: r for r in results if r.scenario == "bus"}
    header = (
        f"{'scenario':32} {'mode':6} {'msgs':>7} {'offered':>8} {'msg/s':>9} {'vs bus':>7} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for r in results:
        ratio = r.throughput / baseline[r.mode].throughput
        rows.append({**asdict(r), "throughput_vs_bus": round(ratio, 3)})
        print(
            f"{r.scenario:32} {r.mode:6} {r.messages:>7} "
            f"{(f'{r.offered_rate:,.0f}' if r.offered_rate else 'max'):>8} "
            f"{r.throughput:>9,.0f} {ratio:>7.2f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f}"
        )
    target = {"throughput_msg_s": 5000, "p99_ms": 20}
    report = {
        "benchmark": "bench/bus/run.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "settings": {
            "message_bytes": args.size,
            "publishers": args.publishers,
            "consumers": args.consumers,
            "prefetch": args.prefetch,
            "publish_batch": args.batch,
            "paced_rate": args.rate,
        },
        "target": target,
        "results": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {args.out}; targets: >= {target['throughput_msg_s']} msg/s, "
          f"p99 <= {target['p99_ms']} ms (paced). A paced row whose msg/s is below its offered "
          "rate was saturated: its latencies are queueing time.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--paced-messages", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=5_000.0, help="paced offered msg/s")
    parser.add_argument("--publishers", type=int, default=16)
    parser.add_argument("--consumers", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument(
        "--batch", type=int, default=1,
        help="messages per publish_many call per publisher thread (1: publish, one confirm each)",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    # publisher-process arguments
    parser.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        publish_main(args)
    else:
        bench_main(args)


if __name__ == "__main__":
    main()
