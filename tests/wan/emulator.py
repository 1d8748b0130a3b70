"""The WAN emulator (infra/wan/wan.sh, docs/wan.md) from Python: up, set, down, and threads
that make sockets inside its two network namespaces.

Needs root (network namespaces, TUN, tc, iptables) and gcc; nothing outside the namespaces
is touched, so the services on loopback keep working.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fedgateway.transport import enter_netns

T = TypeVar("T")

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "wan" / "wan.sh"
ADDRESS_A = "10.213.0.1"
ADDRESS_B = "10.213.0.2"


def missing_requirements() -> str | None:
    """Why the emulator cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "the WAN emulator needs root (network namespaces, TUN, tc, iptables)"
    for tool in ("ip", "tc", "iptables", "gcc"):
        if shutil.which(tool) is None:
            return f"the WAN emulator needs {tool} (apt-get install iproute2 iptables gcc)"
    if not Path("/dev/net/tun").exists():
        return "the WAN emulator needs /dev/net/tun"
    return None


class WanEmulator:
    """Namespaces `<prefix>-a` (ADDRESS_A) and `<prefix>-b` (ADDRESS_B) joined by the emulated
    path: `rtt_ms` round trip, `loss_pct` random loss in each direction, `rate_mbit` cap."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ns_a = f"{prefix}-a"
        self.ns_b = f"{prefix}-b"

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [str(SCRIPT), *args, "--prefix", self.prefix],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"wan.sh {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def _params(self, rtt_ms: float, loss_pct: float, rate_mbit: int) -> list[str]:
        return [
            "--rtt-ms",
            f"{rtt_ms:g}",
            "--loss-pct",
            f"{loss_pct:g}",
            "--rate-mbit",
            str(rate_mbit),
        ]

    def up(self, rtt_ms: float = 0, loss_pct: float = 0, rate_mbit: int = 1000) -> None:
        self._run("down")  # a namespace left by a killed run
        self._run("up", *self._params(rtt_ms, loss_pct, rate_mbit))

    def set(self, rtt_ms: float = 0, loss_pct: float = 0, rate_mbit: int = 1000) -> None:
        self._run("set", *self._params(rtt_ms, loss_pct, rate_mbit))

    def down(self) -> None:
        self._run("down")

    def __enter__(self) -> WanEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Call `fn` on a thread inside network namespace `name` (sockets it makes live there and
    may be used from any thread afterwards)."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            enter_netns(name)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def listen_in(name: str, host: str = "0.0.0.0", port: int = 0) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
        return sock

    return in_netns(name, make)


def socket_in(name: str) -> socket.socket:
    return in_netns(name, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
