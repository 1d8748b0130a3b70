"""The fault proxy carries bytes when the test process already holds over 1024 descriptors, as
the whole suite's process does by the time the fault tests run (select() refuses those)."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading

import pytest

from tests.fault_proxy import FaultProxy


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, contextlib.suppress(OSError):  # the proxy resets it when it closes
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_the_proxy_passes_bytes_with_descriptors_above_1024_in_use() -> None:
    # Prepare: over 1024 descriptors held, so the proxy's sockets get numbers above it
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the descriptor limit ({hard}) is too low to hold 1,100 more")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    held = [os.pipe() for _ in range(550)]
    server, _serving = _echo_server()
    try:
        # Execute
        with (
            FaultProxy(target_port=server.getsockname()[1]) as proxy,
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client,
        ):
            assert client.fileno() > 1024
            client.sendall(b"hello through the proxy")
            echoed = client.recv(100)
            resets = proxy.resets

        # Assert
        assert echoed == b"hello through the proxy"
        assert resets == 0
    finally:
        server.close()
        for r, w in held:
            os.close(r)
            os.close(w)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
