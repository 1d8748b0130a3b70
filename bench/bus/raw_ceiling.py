"""RabbitMQ's own ceiling on this machine: the bus benchmark's traffic with a raw client.

The same topology fedbus declares (quorum queue, delivery limit, dead-letter exchange) and the
same guarantees (1 KiB persistent messages, mandatory, publisher confirms, manual acks), but
driven by plain aiormq with no fedbus layer: one publisher process keeping `--window` publishes
in flight, one consumer (this process) with `--prefetch` and one basic.ack(multiple) every
`--ack-every` deliveries. Whatever this reaches is an upper bound for fedbus on the same box,
and its CPU split shows what RabbitMQ itself needs per message.

    .venv/bin/python bench/bus/raw_ceiling.py --messages 20000
Results: printed, and bench/bus/raw_ceiling.json (`--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu import CpuSnapshot, cpu_split  # noqa: E402  (bench/bus/cpu.py, next to this script)

DEFAULT_AMQP = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


async def _publish(url: str, topic: str, count: int, size: int, window: int) -> float:
    import aiormq
    from aiormq.abc import ConfirmationFrameType

    connection = await aiormq.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    body = os.urandom(size)
    slots = asyncio.Semaphore(window)
    failures: list[ConfirmationFrameType | BaseException] = []

    async def one(i: int) -> None:
        try:
            confirm = await channel.basic_publish(
                body,
                exchange="fedmq",
                routing_key=topic,
                mandatory=True,
                properties=aiormq.spec.Basic.Properties(delivery_mode=2, message_id=f"raw-{i}"),
            )
            if not isinstance(confirm, aiormq.spec.Basic.Ack):
                failures.append(confirm)
        except BaseException as exc:
            failures.append(exc)
        finally:
            slots.release()

    started = time.monotonic()
    tasks = []
    for i in range(count):
        await slots.acquire()
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    await connection.close()
    if failures:
        raise RuntimeError(f"{len(failures)} publishes failed, first: {failures[0]!r}")
    return elapsed


def _publisher_main(url: str, topic: str, count: int, size: int, window: int) -> None:
    elapsed = asyncio.run(_publish(url, topic, count, size, window))
    print(json.dumps({"publish_seconds": elapsed}), flush=True)


async def _consume(url: str, topic: str, count: int, prefetch: int, ack_every: int) -> None:
    import aiormq
    from aiormq.abc import DeliveredMessage

    connection = await aiormq.connect(url)
    channel = await connection.channel()
    await channel.basic_qos(prefetch_count=prefetch)
    done = asyncio.Event()
    seen = 0

    async def on_message(message: DeliveredMessage) -> None:
        nonlocal seen
        seen += 1
        if seen % ack_every == 0 or seen >= count:
            await channel.basic_ack(message.delivery_tag or 0, multiple=True)
        if seen >= count:
            done.set()

    await channel.basic_consume(topic, on_message)
    await done.wait()
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--window", type=int, default=1000, help="publishes in flight")
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--ack-every", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "raw_ceiling.json")
    args = parser.parse_args()

    from fedbus import connect

    topic = f"bench.raw.{uuid.uuid4().hex[:10]}"
    admin = connect(args.amqp_url)  # the exact topology fedbus uses
    admin.declare(topic)
    try:
        before = CpuSnapshot.take()
        started = time.monotonic()
        publisher = multiprocessing.get_context("spawn").Process(
            target=_publisher_main,
            args=(args.amqp_url, topic, args.messages, args.size, args.window),
        )
        publisher.start()
        asyncio.run(_consume(args.amqp_url, topic, args.messages, args.prefetch, args.ack_every))
        elapsed = time.monotonic() - started
        publisher.join(60)
        after = CpuSnapshot.take()
    finally:
        admin.delete(topic)
        admin.close()
    report = {
        "benchmark": "bench/bus/raw_ceiling.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "message_bytes": args.size,
            "window": args.window,
            "prefetch": args.prefetch,
            "ack_every": args.ack_every,
        },
        "messages": args.messages,
        "seconds": round(elapsed, 3),
        "throughput": round(args.messages / elapsed, 1),
        "load_avg": os.getloadavg(),
        "cpu_ms_per_msg": cpu_split(before, after, args.messages),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
