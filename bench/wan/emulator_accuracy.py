"""The WAN emulator's own accuracy (docs/wan.md): the round trip, loss and bandwidth it really
produces against what it was told.

For each (round trip, loss) setting: 200 TCP-free round trips measured with UDP echo (a 64-byte
datagram a -> b and back, one at a time; min / median / p99 against the set RTT), the one-way
loss of 20,000 UDP datagrams a -> b (at most about 10,000/s, far below the cap) against the set
loss, and at 0 ms / 0% the most one plain TCP stream (CUBIC and BBR) carries through it in
10 s against the tbf cap.

    .venv/bin/python bench/wan/emulator_accuracy.py
Results: printed, and bench/wan/emulator_accuracy.json. Needs root, gcc, iproute2, iptables.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fedgateway.transport import SO_RCVBUFFORCE  # noqa: E402

from bench.wan.run import plain_tcp  # noqa: E402
from tests.wan.emulator import (  # noqa: E402
    ADDRESS_B,
    WanEmulator,
    in_netns,
    missing_requirements,
)

SETTINGS = ((0, 0.0), (20, 0.01), (80, 1.0), (320, 4.0))


def udp_in(ns: str, port: int = 0) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # a starved reader must not turn a full socket buffer into "loss"
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        sock.bind(("0.0.0.0", port))
        return sock

    return in_netns(ns, make)


def echo(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(2048)
        except TimeoutError:
            continue
        if data.startswith(b"E"):
            sock.sendto(data, addr)


def measure(wan: WanEmulator) -> dict[str, Any]:
    server = udp_in(wan.ns_b)
    port = server.getsockname()[1]
    stop = threading.Event()
    echo_thread = threading.Thread(target=echo, args=(server, stop), daemon=True)
    echo_thread.start()
    client = udp_in(wan.ns_a)
    client.settimeout(2.0)
    rtts: list[float] = []
    for i in range(200):
        payload = b"E" + i.to_bytes(4, "big") + b"x" * 59
        sent = time.perf_counter()
        client.sendto(payload, (ADDRESS_B, port))
        try:
            while True:
                data, _ = client.recvfrom(2048)
                if data == payload:
                    rtts.append((time.perf_counter() - sent) * 1000)
                    break
        except TimeoutError:
            continue
    stop.set()
    echo_thread.join()
    # one-way loss: count at b what a sent
    received = [0]

    def count() -> None:
        server.settimeout(1.0)
        while True:
            try:
                data, _ = server.recvfrom(2048)
            except TimeoutError:
                return
            if data.startswith(b"L"):
                received[0] += 1

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    datagrams = 20_000
    for i in range(datagrams):
        client.sendto(b"L" + i.to_bytes(4, "big") + b"y" * 59, (ADDRESS_B, port))
        if i % 100 == 99:
            time.sleep(0.01)
    counter.join(timeout=30)
    client.close()
    server.close()
    rtts.sort()
    return {
        "rtt_ms_min": round(rtts[0], 2) if rtts else None,
        "rtt_ms_median": round(statistics.median(rtts), 2) if rtts else None,
        "rtt_ms_p99": round(rtts[int(len(rtts) * 0.99) - 1], 2) if rtts else None,
        "echo_lost": 200 - len(rtts),
        "oneway_loss_pct": round(100 * (1 - received[0] / datagrams), 3),
    }


def main() -> None:
    why = missing_requirements()
    if why is not None:
        sys.exit(why)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the emulator is taken down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cpus, {platform.release()}",
        "load_before": os.getloadavg(),
        "settings": [],
    }
    wan = WanEmulator("fwa")
    wan.up()
    try:
        for rtt, loss in SETTINGS:
            wan.set(rtt_ms=rtt, loss_pct=loss)
            row = {"set_rtt_ms": rtt, "set_loss_pct": loss, **measure(wan)}
            results["settings"].append(row)
            print(json.dumps(row), flush=True)
        wan.set(rtt_ms=0, loss_pct=0, rate_mbit=1000)
        for cc in ("cubic", "bbr"):
            results[f"max_{cc}_mbps_cap_1000"] = round(plain_tcp(wan, 10, cc), 1)
        wan.set(rtt_ms=0, loss_pct=0, rate_mbit=100)
        results["max_cubic_mbps_cap_100"] = round(plain_tcp(wan, 10, "cubic"), 1)
        print({k: v for k, v in results.items() if k.startswith("max_")})
    finally:
        wan.down()
    results["load_after"] = os.getloadavg()
    out = Path(__file__).with_name("emulator_accuracy.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
