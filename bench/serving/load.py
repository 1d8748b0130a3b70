"""An open-loop HTTP/1.1 load generator cheap enough to share two cores with what it measures.

httpx from a pool of threads spent ~2-3 ms of CPU per request on this machine (bench/serving
runs of 2026-12-07), as much as the whole serving path it measured, so at 500 requests/s the
client alone needed most of a core. This one writes each request's bytes on a keep-alive
socket and reads the answer by its Content-Length on one asyncio loop (uvloop when installed):
tens of microseconds per request. What it sends is fixed per URL (a JSON POST); what it
checks is the status line.

Open loop: request i is due at start + i / rate whatever happened before; it takes a free
connection (at most `connections`, opened on demand) and its latency counts from its due time,
so a server (or client) that falls behind shows as latency, not as fewer requests sent
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from typing import Any
from urllib.parse import urlsplit


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.reusable = True

    async def exchange(self, request: bytes) -> int:
        """Send one request; the answer's status (its body read and dropped)."""
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed by the server")
        length = 0
        close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        self.reusable = not close
        return int(status_line.split(b" ", 2)[1])

    def close(self) -> None:
        self.writer.close()


def request_bytes(url: str, headers: dict[str, str], body: dict[str, Any]) -> bytes:
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    lines = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def _open_loop(
    url: str,
    headers: dict[str, str],
    bodies: list[dict[str, Any]],
    rate: float,
    seconds: float,
    connections: int,
    give_up_s: float,
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [request_bytes(url, headers, b) for b in bodies]
    idle: list[_Connection] = []
    free = asyncio.Semaphore(connections)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(i: int) -> None:
        due = start + i / rate
        async with free:
            if loop.time() - due > give_up_s:
                # queued in the client longer than any caller would wait: counted, not sent
                # (else an overloaded run goes on for minutes after its --seconds)
                errors["late"] = errors.get("late", 0) + 1
                return
            connection = idle.pop() if idle else None
            try:
                if connection is not None:
                    try:
                        status = await connection.exchange(requests[i % len(requests)])
                    except ConnectionError:
                        # a kept-alive connection the server closed while idle (uvicorn's
                        # keep-alive timeout): sent again on a new one, as HTTP clients do
                        connection.close()
                        connection = None
                if connection is None:
                    connection = _Connection(*await asyncio.open_connection(host, port))
                    status = await connection.exchange(requests[i % len(requests)])
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                if connection is not None:
                    connection.close()
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1
                return
            if connection.reusable:
                idle.append(connection)
            else:
                connection.close()
        took = loop.time() - due
        if status == 200:
            latencies.append(took)
        else:
            errors[str(status)] = errors.get(str(status), 0) + 1

    tasks = []
    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    for connection in idle:
        connection.close()
    return {"latencies": latencies, "errors": errors, "sent": total, "elapsed": elapsed}


def open_loop(
    url: str,
    headers: dict[str, str],
    bodies: list[dict[str, Any]],
    rate: float,
    seconds: float,
    connections: int = 256,
    give_up_s: float = 5.0,
) -> dict[str, Any]:
    """Send `rate` requests/s for `seconds` (bodies in turn): latencies of the 200 answers
    (seconds, from each request's due time), errors by status or exception ("late": waited
    more than `give_up_s` for a free connection, not sent), elapsed time."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    started = time.perf_counter()
    # The client's own cyclic collections (a full one walks every object of this process)
    # would stall its loop and show as the server's latency: none during the run.
    gc.collect()
    gc.disable()
    try:
        found: dict[str, Any] = runner(
            _open_loop(url, headers, bodies, rate, seconds, connections, give_up_s)
        )
    finally:
        gc.enable()
    found["wall"] = time.perf_counter() - started
    return found
