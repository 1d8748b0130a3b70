"""A TCP relay that can blackhole the path it carries: the site-link liveness tests and
bench/gateway/liveness.py put it between a gateway and its peer's link port."""

from __future__ import annotations

import contextlib
import select
import socket
import threading


def _readable(sock: socket.socket, timeout_s: float) -> bool:
    """Whether `sock` has data (or EOF) within `timeout_s`. poll, not select: select refuses
    descriptors above 1024, and a long test session's process holds more than that."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(timeout_s * 1000))


class Blackhole:
    """A TCP relay from 127.0.0.1:`port` to `target_port`. `cut()` blackholes the path: open
    connections stay open at both ends but nothing passes either way (neither TCP stack notices
    anything), and new connections are refused. `mend()` closes what lived through the cut and
    passes new connections again."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._lock = threading.Lock()
        self._cut = False
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by cut() or close()
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            while True:
                ready = _readable(src, 0.1)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if not self._cut:  # cut: swallowed, as a dead path would
                    dst.sendall(data)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for a, _ in self._pairs if a.fileno() != -1)

    def _stop_listening(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # shutdown wakes the thread blocked in accept
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None

    def cut(self) -> None:
        self._cut = True
        self._stop_listening()

    def mend(self) -> None:
        with self._lock:
            stale, self._pairs = self._pairs, []
        for a, b in stale:
            a.close()
            b.close()
        self._cut = False
        self._listen()

    def close(self) -> None:
        self._stop_listening()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            a.close()
            b.close()
