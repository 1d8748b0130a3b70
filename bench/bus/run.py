"""Bus benchmark: throughput and publish-to-handler latency on RabbitMQ, with and without the
inbox's done-marker transaction (SqlInbox on PostgreSQL), per message and in groups.

Messages are 1 KiB, persistent, mandatory, published with confirms (fedbus amqp adapter) to a
quorum queue. Publishers run in a separate process (`--publishers` threads, each publishing
`--batch` messages per `publish_many` call and waiting for their confirms; the calls of
different threads are pipelined); consumers run in this process, `--consumers` buses with one
subscription (channel and handler thread) each. Latency is measured from just before the
publish to the end of the handler (for the done-marker scenarios: after the COMMIT that holds
the marker), on the system-wide monotonic clock.

Scenarios (`--scenarios`, all by default):
- bus: a handler that only records (the baseline: ratios are against it);
- marker: `deduplicating(handler, inbox)`, one transaction (one commit) per message;
- marker-batched: `subscribe_batched` with `deduplicating_batch`: every delivery already waiting
  on a consumer, up to `--batch-size`, in one transaction (group commit), acked together;
- envelopes-batched: the service path, `EnvelopeConsumer(batch_size=...)` with envelopes
  (decode, spans, log context) and the SqlInbox; not in the default set.

Each scenario runs in these modes:
- burst: all messages as fast as the publishers can go -> throughput (msg/s, end to end);
  latencies here include queueing, since publishers outrun consumers by design;
- paced@R: a fixed offered rate R (`--rates`, default 5,000 and 1,000 msg/s) -> p50/p99 latency
  at that load, from `--paced-publishers` threads staggered in time, each publishing about one
  message per millisecond of load per call (`--paced-batch`). A paced row whose msg/s is below
  R was saturated: its latency is queueing.

`--fanout-idle N` declares N fan-out subscriptions on each phase's topic that nobody consumes
(the broker keeps a copy of every message for each): the cost of fan-out to publishers.

Every row also carries the CPU milliseconds per message by component (bench/bus/cpu.py):
this process (consumers), the publisher process, RabbitMQ, PostgreSQL and everything else on
the machine, so a row that misses the target says where the CPU went.

    .venv/bin/python bench/bus/run.py                         # defaults
    .venv/bin/python bench/bus/run.py --messages 5000 --paced-messages 3000 --scenarios bus
Results: printed table, and bench/bus/results.json (`--out`).
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


def envelope_message(args: argparse.Namespace, index: int, k: int) -> Any:
    """A demo.ping envelope of about `args.size` bytes whose `n` is the send time (ns)."""
    from datetime import UTC, datetime

    from fedbus import Message
    from fedschemas import DemoPing, PartyRef, encode_envelope, new_envelope

    envelope = new_envelope(
        DemoPing(text="x" * max(0, args.size - 400), n=time.monotonic_ns()),
        job_id=f"bench-{args.run_id}",
        component="bench",
        task_id=f"bench-{index}",
        attempt=0,
        source=PartyRef(party_id="9999", role="guest"),
        destination=PartyRef(party_id="10000", role="host"),
        tag="bench",
        iteration=index,
        seq=k,
        created_at=datetime.now(UTC),
    )
    return Message(args.topic, encode_envelope(envelope), envelope.message_id)


def publish_main(args: argparse.Namespace) -> None:
    """Child process: publish `count` messages from `threads` threads, optionally paced."""
    from fedbus import Message, connect
    from fedcommon.logging import configure_logging

    configure_logging("bench-publisher", "WARNING", json=False, stream=sys.stderr)
    bus = connect(args.amqp_url)
    per_thread = [
        args.count // args.threads + (i < args.count % args.threads) for i in range(args.threads)
    ]
    padding = os.urandom(max(0, args.size - STAMP.size))
    interval = args.threads / args.rate if args.rate > 0 else 0.0
    errors: list[str] = []

    batch = max(1, args.batch)
    # Paced threads are staggered evenly over one batch period: started together, they would
    # publish their batches at the same instants and the consumers would see bursts of
    # threads x batch messages (queueing that is the benchmark's, not the bus's).
    period = batch * interval
    t0 = time.monotonic() + 0.05

    def run(index: int, n: int) -> None:
        start = t0 + index * period / args.threads
        for k0 in range(0, n, batch):
            if interval:
                due = start + k0 * interval
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if args.envelopes:
                messages = [envelope_message(args, index, k) for k in range(k0, min(n, k0 + batch))]
            else:
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
        (sent,) = STAMP.unpack_from(body)
        self.record_stamp(sent)

    def record_stamp(self, sent: int) -> None:
        now = time.monotonic_ns()
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


Subscribe = Callable[[Any, str, Recorder], None]
"""Starts one consumer of a topic on a bus, recording each message once it is handled."""


@dataclass(frozen=True)
class Scenario:
    name: str
    subscribe: Subscribe
    envelopes: bool = False
    """The publisher sends demo.ping envelopes instead of raw stamped bodies."""


def run_phase(
    args: argparse.Namespace,
    scenario: str,
    mode: str,
    count: int,
    rate: float,
    scenario_def: Scenario,
) -> Result:
    from fedbus import connect

    topic = f"bench.{uuid.uuid4().hex[:10]}"
    bus = connect(args.amqp_url)
    bus.declare(topic)
    # Fan-out subscriptions on the topic that nobody consumes: each costs the broker one more
    # quorum-queue copy per message; the publishers' confirms cover it.
    fanouts = [f"bench-{topic[6:]}-{i}" for i in range(args.fanout_idle)]
    for name in fanouts:
        bus.declare_fanout(name, topic)
    recorder = Recorder(count)
    consumers = [connect(args.amqp_url) for _ in range(args.consumers)]
    try:
        for c in consumers:
            scenario_def.subscribe(c, topic, recorder)
        cpu_before = CpuSnapshot.take()
        cmd = [
            sys.executable,
            __file__,
            "--publish",
            "--amqp-url",
            args.amqp_url,
            "--topic",
            topic,
            "--count",
            str(count),
            "--threads",
            str(args.publishers if not rate else args.paced_publishers),
            "--size",
            str(args.size),
            "--rate",
            str(rate),
            "--run-id",
            uuid.uuid4().hex[:8],
            "--batch",
            str(args.batch if not rate else paced_batch(args, rate)),
            *(["--envelopes"] if scenario_def.envelopes else []),
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
        for name in fanouts:
            bus.delete_fanout(name)
        bus.delete(topic)
        bus.close()
    lat = sorted(recorder.latencies_ns)
    assert recorder.first_sent is not None
    seconds = (recorder.last_done - recorder.first_sent) / 1e9
    return Result(
        scenario=scenario,
        mode=mode,
        messages=count,
        publishers=args.publishers if not rate else args.paced_publishers,
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


def paced_batch(args: argparse.Namespace, rate: float) -> int:
    """Messages per publish_many call in a paced run: --paced-batch, or (0) about one per
    millisecond of offered load, so no thread sends more than a few messages at once."""
    return args.paced_batch if args.paced_batch > 0 else max(1, round(rate / 1000))


def make_scenarios(args: argparse.Namespace, inbox: Any) -> dict[str, Scenario]:
    """name -> (description, subscribe) for every scenario this benchmark knows."""
    from fedbus.inbox import deduplicating, deduplicating_batch

    def nothing(delivery: Any, tx: Any) -> None:
        """The effect is empty: what is measured is the done-marker transaction itself."""

    def bus_only(bus: Any, topic: str, recorder: Recorder) -> None:
        bus.subscribe(topic, lambda d: recorder.record(d.body), prefetch=args.prefetch)

    def marker(bus: Any, topic: str, recorder: Recorder) -> None:
        dedupe = deduplicating(nothing, inbox)

        def handle(delivery: Any) -> None:
            dedupe(delivery)
            recorder.record(delivery.body)

        bus.subscribe(topic, handle, prefetch=args.prefetch)

    def marker_batched(bus: Any, topic: str, recorder: Recorder) -> None:
        one, group = deduplicating(nothing, inbox), deduplicating_batch(nothing, inbox)

        def handle(delivery: Any) -> None:
            one(delivery)
            recorder.record(delivery.body)

        def handle_group(deliveries: Any) -> Any:
            left = group(deliveries)  # returns after the group's COMMIT
            for delivery in deliveries:
                recorder.record(delivery.body)
            return left

        bus.subscribe_batched(
            topic,
            handle,
            handle_group,
            batch_size=args.batch_size,
            batch_wait=args.batch_wait,
            prefetch=args.prefetch,
        )

    def envelopes_batched(bus: Any, topic: str, recorder: Recorder) -> None:
        from fedbus.runtime import EnvelopeConsumer

        def handler(envelope: Any, payload: Any, tx: Any) -> None:
            tx.require_session()  # the effect would write through it
            # Recorded inside the effect, just before the group's COMMIT.
            recorder.record_stamp(payload.n)

        EnvelopeConsumer(
            bus,
            topic,
            {"demo.ping": handler},
            inbox,
            prefetch=args.prefetch,
            batch_size=args.batch_size,
            batch_wait=args.batch_wait,
        ).start()

    return {
        "bus": Scenario("bus", bus_only),
        "marker": Scenario("bus + done marker (PostgreSQL)", marker),
        "marker-batched": Scenario("bus + done marker, batched (PostgreSQL)", marker_batched),
        "envelopes-batched": Scenario(
            "envelopes + done marker, batched", envelopes_batched, envelopes=True
        ),
    }


def bench_main(args: argparse.Namespace) -> None:
    import sqlalchemy as sa
    from fedbus.sql_inbox import SqlInbox, make_engine
    from fedcommon.logging import configure_logging

    configure_logging("bench", "WARNING", json=False, stream=sys.stderr)
    uptime_before = uptime()
    db_name = f"fedmq_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
    # One pooled connection per consumer thread: none is opened or closed mid-phase (that
    # would cost time and hide a backend's CPU from the accounting).
    engine = make_engine(
        args.pg_url.rsplit("/", 1)[0] + "/" + db_name, pool_size=args.consumers + 2
    )
    inbox = SqlInbox(engine)
    known = make_scenarios(args, inbox)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in known]
    if unknown or not chosen:
        raise SystemExit(f"unknown scenarios {unknown}; known: {', '.join(known)}")
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    results: list[Result] = []
    try:
        for key in chosen:
            scenario = known[key]
            name = scenario.name
            results.append(run_phase(args, name, "burst", args.messages, 0.0, scenario))
            print(f"  {name} burst: {results[-1].throughput:,.0f} msg/s", file=sys.stderr)
            for rate in rates:
                mode = f"paced@{rate:g}"
                results.append(run_phase(args, name, mode, args.paced_messages, rate, scenario))
                print(f"  {name} {mode}: p99 {results[-1].p99_ms} ms", file=sys.stderr)
    finally:
        inbox.close()
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()
    report_results(args, results, uptime_before, uptime())


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average: {os.getloadavg()}"


def report_results(
    args: argparse.Namespace, results: list[Result], uptime_before: str, uptime_after: str
) -> None:
    baseline = {r.mode: r for r in results if r.scenario == "bus"}
    header = (
        f"{'scenario':40} {'mode':11} {'msgs':>6} {'msg/s':>7} {'vs bus':>6} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  CPU ms/msg: cons pub rmq pg other"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for r in results:
        base = baseline.get(r.mode)
        ratio = r.throughput / base.throughput if base is not None else None
        rows.append({**asdict(r), "throughput_vs_bus": round(ratio, 3) if ratio else None})
        c = r.cpu_ms_per_msg
        print(
            f"{r.scenario:40} {r.mode:11} {r.messages:>6} {r.throughput:>7,.0f} "
            f"{(f'{ratio:.2f}' if ratio else '-'):>6} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f}  "
            f"{c['consumer']:.2f} {c['publisher']:.2f} {c['rabbitmq']:.2f} "
            f"{c['postgres']:.2f} {c['other']:.2f}"
        )
    target = {"throughput_msg_s": 5000, "p99_ms": 20}
    report = {
        "benchmark": "bench/bus/run.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "uptime_before": uptime_before,
            "uptime_after": uptime_after,
        },
        "settings": {
            "message_bytes": args.size,
            "publishers": args.publishers,
            "publish_batch": args.batch,
            "paced_publishers": args.paced_publishers,
            "paced_batch": {
                r: paced_batch(args, float(r)) for r in args.rates.split(",") if r.strip()
            },
            "consumers": args.consumers,
            "prefetch": args.prefetch,
            "batch_size": args.batch_size,
            "batch_wait_s": args.batch_wait,
            "fanout_idle": args.fanout_idle,
            "paced_rates": args.rates,
        },
        "target": target,
        "results": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nwritten {args.out}; targets: >= {target['throughput_msg_s']} msg/s, "
        f"p99 <= {target['p99_ms']} ms (paced). A paced row whose msg/s is below its offered "
        "rate was saturated: its latencies are queueing time.\n"
        f"before: {uptime_before}\nafter:  {uptime_after}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--messages", type=int, default=20_000, help="per burst run")
    parser.add_argument("--paced-messages", type=int, default=10_000, help="per paced run")
    parser.add_argument(
        "--rates", default="5000,1000", help="offered msg/s of the paced runs, comma-separated"
    )
    parser.add_argument(
        "--scenarios",
        default="bus,marker,marker-batched",
        help="comma-separated: bus, marker, marker-batched, envelopes-batched",
    )
    parser.add_argument("--publishers", type=int, default=8, help="publisher threads")
    parser.add_argument(
        "--batch",
        type=int,
        default=20,
        help="messages per publish_many call per publisher thread (1: publish, one confirm each)",
    )
    parser.add_argument(
        "--paced-publishers", type=int, default=16, help="publisher threads of the paced runs"
    )
    parser.add_argument(
        "--paced-batch",
        type=int,
        default=0,
        help="messages per publish_many call in the paced runs (0: rate / 1000, at least 1)",
    )
    parser.add_argument("--consumers", type=int, default=2, help="consumer buses")
    parser.add_argument("--prefetch", type=int, default=512)
    parser.add_argument(
        "--batch-size", type=int, default=256, help="group size of the batched scenarios"
    )
    parser.add_argument(
        "--batch-wait", type=float, default=0.0, help="seconds a group waits to fill (batched)"
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument(
        "--fanout-idle",
        type=int,
        default=0,
        help="fan-out subscriptions on each phase's topic that nobody consumes (copies kept)",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    # publisher-process arguments
    parser.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    parser.add_argument("--envelopes", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        publish_main(args)
    else:
        bench_main(args)


if __name__ == "__main__":
    main()
