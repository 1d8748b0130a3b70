"""`fedmq local up` on free ports survives a port taken between its pick and the service's bind:
the service that could not bind starts again on fresh ports (a gateway's peers learn its new
link address), and free ports come from below the ephemeral range, where no outgoing
connection's local port lands."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedmq import local

GUEST, HOST = "9999", "10000"


@pytest.fixture
def taken_ports() -> Iterator[list[int]]:
    """Two ports another process holds (listening), from the range free_port picks from."""
    socks = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", local.free_port()))
        sock.listen()
        socks.append(sock)
    try:
        yield [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
        return json.loads(resp.read())


def _peers_connected(state: local.LocalState, timeout: float = 30.0) -> dict[str, bool]:
    deadline = time.monotonic() + timeout
    while True:
        connected = {
            party: all(peer["connected"] for peer in _health(p.http_port)["peers"].values())
            for party, p in state.parties.items()
        }
        if all(connected.values()) or time.monotonic() > deadline:
            return connected
        time.sleep(0.3)


def test_free_ports_are_below_the_ephemeral_range_unbound_and_not_excluded() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    with socket.socket() as held:
        held.bind(("127.0.0.1", local.free_port()))
        held_port = held.getsockname()[1]
        picked: set[int] = set()
        for _ in range(200):
            picked.add(local.free_port(exclude=picked | {held_port}))

    assert len(picked) == 200  # never one excluded, never one picked before
    assert held_port not in picked
    assert max(picked) < low and min(picked) >= local.LOWEST_FREE_PORT
    assert not picked & local.RESERVED_PORTS


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_up_moves_services_whose_picked_ports_were_taken_before_they_bound(
    amqp_url, redis_url, pg_admin_url, taken_ports
):
    # Prepare: a plan on free ports, then the race lost twice: the guest gateway's link port
    # and the host scheduler's HTTP port are taken by another process before `up` starts them
    root = Path(tempfile.mkdtemp(prefix="fedmq-local-ports-"))
    state = local.plan(
        [GUEST, HOST],
        root,
        prefix=f"fedmqp{uuid.uuid4().hex[:8]}",
        federation="ports",
        amqp_url=amqp_url.rsplit("/", 1)[0],
        redis_url=redis_url.rsplit("/", 1)[0],
        pg_admin_url=pg_admin_url,
    )
    state.parties[GUEST].link_port, state.parties[HOST].scheduler_http_port = taken_ports
    root.mkdir(parents=True, exist_ok=True)
    state.save()
    try:
        # Execute
        running = local.up([GUEST, HOST], root, services=("gateway", "scheduler"))

        # Assert: every service runs and answers, none on a taken port; the host's gateway
        # was told the guest's new link address, and the two gateways are linked
        guest, host = running.parties[GUEST], running.parties[HOST]
        assert guest.link_port not in taken_ports and host.scheduler_http_port not in taken_ports
        assert local.LocalState.load(root).parties[GUEST].link_port == guest.link_port
        host_settings = json.loads((running.party_dir(HOST) / "gateway.json").read_text())
        assert host_settings["peers"][GUEST]["address"] == f"127.0.0.1:{guest.link_port}"
        assert _health(host.scheduler_http_port)["status"] == "ok"
        assert _peers_connected(running) == {GUEST: True, HOST: True}
        rows = local.status(root)
        assert all(r["running"] for r in rows if r["service"] in ("gateway", "scheduler"))
    finally:
        if (root / local.STATE_FILE).exists():
            local.down(root, purge=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_up_on_ports_an_operator_chose_names_the_taken_port(
    amqp_url, redis_url, pg_admin_url, taken_ports
):
    # Prepare: a base port (the operator's choice) whose scheduler port is held
    root = Path(tempfile.mkdtemp(prefix="fedmq-local-ports-"))
    taken = taken_ports[0]
    state = local.plan(
        [GUEST],
        root,
        prefix=f"fedmqp{uuid.uuid4().hex[:8]}",
        federation="ports",
        amqp_url=amqp_url.rsplit("/", 1)[0],
        redis_url=redis_url.rsplit("/", 1)[0],
        pg_admin_url=pg_admin_url,
        base_port=taken - 30,  # the first party's scheduler: base_port + 30
    )
    root.mkdir(parents=True, exist_ok=True)
    state.save()
    try:
        # Execute
        with pytest.raises(local.LauncherError) as raised:
            local.up([GUEST], root, services=("scheduler",))

        # Assert: no silent move; the error says which port was taken
        assert f"a port of scheduler was taken: {taken}" in str(raised.value)
        assert local.LocalState.load(root).parties[GUEST].scheduler_http_port == taken
    finally:
        if (root / local.STATE_FILE).exists():
            local.down(root, purge=True)
        shutil.rmtree(root, ignore_errors=True)
