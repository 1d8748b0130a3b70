"""A TCP fault proxy for tests: put it in front of a server (the site link of a party's gateway)
and make the path between two processes slow, flaky or cut, without touching either process.

    proxy = FaultProxy(target_port=host_link_port)   # listens on proxy.port
    proxy.latency_s = 0.05         # each chunk waits 50 ms before it is passed on
    proxy.reset_every(3.0)         # every 3 s, every open connection is reset (TCP RST)
    proxy.flip_next_byte()         # one byte of the next chunk is XORed with 0xFF
    proxy.partition()              # nothing passes; new connections hang (a cut cable)
    proxy.heal()                   # connections that lived through the cut are reset, new pass

A partition drops bytes rather than holding them, so a connection that lived through one
cannot carry on (its stream has a hole); `heal` resets those, as the TCP stack of a real
machine would have given up on them by then. Counters (`connections`, `resets`, `flips`,
`bytes_passed`) let a test assert that the fault really happened.

Each connection has two pump threads (one per direction) that poll their socket with a short
select timeout, so a reset asked from another thread is done by the pump that owns the socket.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field


def _readable(sock: socket.socket, timeout_s: float) -> bool:
    """Whether `sock` has data (or EOF) within `timeout_s`. poll, not select: select refuses
    descriptors above 1024, and a long test session's process holds more than that."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(timeout_s * 1000))


@dataclass
class _Connection:
    client: socket.socket
    upstream: socket.socket | None
    born_in_partition: bool
    doomed: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self, *, reset: bool) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            if reset:  # SO_LINGER 0: close() sends RST instead of FIN
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.close()


class FaultProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`, with faults on demand."""

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.latency_s = 0.0
        self.connections = 0
        self.resets = 0
        self.flips = 0
        self.bytes_passed = 0
        self._partitioned = False
        self._flip_pending = False
        self._reset_interval: float | None = None
        self._lock = threading.Lock()
        self._open: list[_Connection] = []
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._threads = [
            threading.Thread(target=self._accept_loop, name="fault-proxy-accept", daemon=True),
            threading.Thread(target=self._reset_loop, name="fault-proxy-reset", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # --- faults ---------------------------------------------------------------------------

    def partition(self) -> None:
        """Cut the path: from now on nothing passes either way, and new connections hang."""
        with self._lock:
            self._partitioned = True

    def heal(self) -> None:
        """End the cut: connections that lived through it are reset; new ones pass again."""
        with self._lock:
            self._partitioned = False
            victims = list(self._open)
        for conn in victims:
            conn.doomed.set()

    @property
    def partitioned(self) -> bool:
        return self._partitioned

    def reset_every(self, interval_s: float | None) -> None:
        """Reset every open connection each `interval_s` seconds (None: stop)."""
        self._reset_interval = interval_s

    def reset_all(self) -> int:
        """Reset every open connection now; how many."""
        with self._lock:
            victims = [c for c in self._open if not c.closed.is_set()]
        for conn in victims:
            conn.doomed.set()
        return len(victims)

    def flip_next_byte(self) -> None:
        """XOR one byte (the middle one) of the next chunk that passes, either way, with 0xFF."""
        with self._lock:
            self._flip_pending = True

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            victims = list(self._open)
        for conn in victims:
            conn.doomed.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                in_partition = self._partitioned
            upstream = None
            if not in_partition:
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
            conn = _Connection(client, upstream, in_partition)
            with self._lock:
                self._open.append(conn)
            if upstream is None:  # accepted in a cut: hold it, pass nothing, until healed
                threading.Thread(target=self._hang, args=(conn,), daemon=True).start()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(conn, src, dst), daemon=True).start()

    def _hang(self, conn: _Connection) -> None:
        while not (conn.doomed.is_set() or self._stop.is_set()):
            readable = _readable(conn.client, 0.1)
            if readable:
                try:
                    if not conn.client.recv(65536):
                        break
                except OSError:
                    break
        self._finish(conn, reset=True)

    def _pump(self, conn: _Connection, src: socket.socket, dst: socket.socket) -> None:
        reset = False
        while not self._stop.is_set() and not conn.closed.is_set():
            if conn.doomed.is_set():
                reset = True
                break
            try:
                readable = _readable(src, 0.1)
            except (OSError, ValueError):
                break
            if not readable:
                continue
            try:
                chunk = src.recv(65536)
            except OSError:
                reset = True
                break
            if not chunk:
                break
            with self._lock:
                if self._partitioned:
                    continue  # dropped on the floor
                if self._flip_pending:
                    self._flip_pending = False
                    self.flips += 1
                    middle = len(chunk) // 2
                    chunk = chunk[:middle] + bytes([chunk[middle] ^ 0xFF]) + chunk[middle + 1 :]
            if self.latency_s:
                time.sleep(self.latency_s)
            try:
                dst.sendall(chunk)
            except OSError:
                reset = True
                break
            with self._lock:
                self.bytes_passed += len(chunk)
        self._finish(conn, reset=reset or self._stop.is_set())

    def _finish(self, conn: _Connection, *, reset: bool) -> None:
        with self._lock:
            if conn.closed.is_set():
                return
            if reset:
                self.resets += 1
            if conn in self._open:
                self._open.remove(conn)
        conn.close(reset=reset)

    def _reset_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.1):
            interval = self._reset_interval
            if interval is None:
                last = time.monotonic()
                continue
            if time.monotonic() - last >= interval:
                last = time.monotonic()
                self.reset_all()
