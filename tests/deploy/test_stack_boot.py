"""The party's services boot from exactly what docker-compose.yml hands them (no engine here).

A site made with `fedmq site init` (certificate from a test CA, one peer added), its identity
copied by the `identity` one-shot's code, and each fedmq service started as a process with the
environment compose resolves from the site's .env and the compose service's own command, in
production mode. Only what a container network changes is rewritten: server addresses (the
real servers on loopback: a fresh vhost, database and Redis db), the mount points (temporary
folders) and the ports (free ones, loopback). Then the compose health checks are run as
written, and a table is uploaded through the REST API with the .env's token: it must land in
the folder compose mounts as the `tables` volume, where the workers read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fedgateway import pki

from fedmq import local
from fedmq.sdk import ApiError, Client
from fedmq.site_cli import add_peer, init_site, install_cert, read_env, sync_identity
from tests.deploy.helpers import FEDMQ_SERVICES, load_compose

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

PARTY = "10000"
WORKDIR = "/var/lib/fedmq"
"""The image's WORKDIR: the services' cwd, under which the `tables` volume is mounted."""


@dataclass
class Booted:
    env: dict[str, str]
    compose: dict[str, Any]
    ports: dict[str, int]
    workdir: Path
    logs: Path


def _rewrite(
    name: str,
    environment: dict[str, Any],
    *,
    site_env: dict[str, str],
    bus_url: str,
    database_url: str,
    redis_url: str,
    identity: Path,
    peers: Path,
    ports: dict[str, int],
    workdir: Path,
) -> dict[str, str]:
    up = f"FEDMQ_{name.upper()}_"
    env = {key: str(value) for key, value in environment.items()}
    # The connection URLs compose builds from .env, checked, then pointed at loopback servers
    # Each service connects as its own broker user (docs/security.md).
    password = site_env[f"RABBITMQ_{name.upper()}_PASSWORD"]
    assert env[up + "BUS_URL"] == f"amqp://fedmq-{name}:{password}@rabbitmq:5672/fedmq"
    env[up + "BUS_URL"] = bus_url
    assert env[up + "DATABASE_URL"] == (
        f"postgresql+psycopg://fedmq:{site_env['POSTGRES_PASSWORD']}@postgres:5432/fedmq"
    )
    env[up + "DATABASE_URL"] = database_url
    if up + "REDIS_URL" in env:
        assert env[up + "REDIS_URL"] == f"redis://:{site_env['REDIS_PASSWORD']}@redis:6379/0"
        env[up + "REDIS_URL"] = redis_url
    env[up + "HTTP_HOST"] = "127.0.0.1"
    env[up + "HTTP_PORT"] = str(ports[name])
    if name == "gateway":
        assert env[up + "IDENTITY_DIR"] == f"{WORKDIR}/identity"
        env[up + "IDENTITY_DIR"] = str(identity)
        env[up + "LISTEN_HOST"] = "127.0.0.1"
        env[up + "LISTEN_PORT"] = str(ports["link"])
        env[up + "PEERS"] = env[up + "PEERS"].replace("/etc/fedmq/peers", str(peers))
    if name == "serving":
        # The workers' tables, in the `tables` volume (mounted on <WORKDIR>/.fedmq)
        assert env[up + "TABLES_DIR"] == f"{WORKDIR}/.fedmq/worker-{PARTY}-tables"
        env[up + "TABLES_DIR"] = env[up + "TABLES_DIR"].replace(WORKDIR, str(workdir))
    return env


def _health(compose: dict[str, Any], name: str, port: int) -> subprocess.CompletedProcess[str]:
    """The compose health check of `name`, as written, against the process's port."""
    test = compose["services"][name]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    args = [
        sys.executable,
        *(
            a.replace(f"http://127.0.0.1:{_COMPOSE_PORTS[name]}/", f"http://127.0.0.1:{port}/")
            for a in test[2:]
        ),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=10)


_COMPOSE_PORTS = {
    "gateway": 8081,
    "scheduler": 8082,
    "worker": 8083,
    "audit": 8084,
    "serving": 8085,
}


@pytest.fixture
def booted(tmp_path: Path, amqp_url: str, redis_url: str, pg_url: str) -> Iterator[Booted]:
    # A site as an operator makes it, with a peer certified by the same CA
    site = tmp_path / "site"
    init_site(site, PARTY, "acme", "bank.example:7443")
    pki.init_ca(tmp_path / "ca", "acme")
    ca = pki.CertificateAuthority.load(tmp_path / "ca")
    own = tmp_path / "own.cert.pem"
    own.write_bytes(pki.sign_csr(ca, (site / "identity" / "party.csr.pem").read_bytes()))
    install_cert(site, own, tmp_path / "ca" / "ca.cert.pem")
    peer = tmp_path / "9999.cert.pem"
    peer.write_bytes(pki.sign_csr(ca, pki.make_party("9999", tmp_path / "p9999").read_bytes()))
    add_peer(site, "9999", f"127.0.0.1:{local.free_port()}", peer)
    # What the `identity` one-shot does, into the gateway's "volume"
    volume = tmp_path / "volumes" / "identity"
    sync_identity(site / "identity", volume, os.getuid(), os.getgid())

    site_env = read_env(site / ".env")
    compose = load_compose(site_env)
    vhost = f"fedmq-boot-{uuid.uuid4().hex[:8]}"
    local.ensure_vhost(vhost)
    ports = {name: local.free_port() for name in (*FEDMQ_SERVICES, "link")}
    workdir = tmp_path / "workdir"
    logs = tmp_path / "logs"
    workdir.mkdir()
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in FEDMQ_SERVICES:
            service = compose["services"][name]
            env = _rewrite(
                name,
                service["environment"],
                site_env=site_env,
                bus_url=f"{amqp_url.rsplit('/', 1)[0]}/{vhost}",
                database_url=pg_url,
                redis_url=redis_url,
                identity=volume,
                peers=site / "peers",
                ports=ports,
                workdir=workdir,
            )
            command = service["command"]
            assert command[0] == "python"
            base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
            with open(logs / f"{name}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, *command[1:]],
                        cwd=workdir,
                        env={**base, **env},
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield Booted(site_env, compose, ports, workdir, logs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        local.delete_vhost(vhost)


def _wait_healthy(booted: Booted, name: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        done = _health(booted.compose, name, booted.ports[name])
        if done.returncode == 0:
            return
        last = done.stderr.strip().splitlines()[-1:] and done.stderr.strip().splitlines()[-1]
        time.sleep(0.5)
    log = (booted.logs / f"{name}.log").read_text(errors="replace")[-3000:]
    pytest.fail(f"{name} not healthy after {timeout} s ({last}); its log ends:\n{log}")


def test_the_services_boot_in_production_from_the_compose_environment(booted: Booted) -> None:
    # Execute: the compose health checks, as written
    for name in FEDMQ_SERVICES:
        _wait_healthy(booted, name)

    # Assert: the gateway is this party, with the peer add-peer wrote
    gateway = f"http://127.0.0.1:{booted.ports['gateway']}"
    with Client(gateway, booted.env["FEDMQ_API_TOKEN"]) as api:
        health = httpx.get(f"{gateway}/healthz").json()
        assert health["party_id"] == PARTY
        assert set(health["peers"]) == {"9999"}

        # ...the REST API takes the .env's token, and an upload lands in the tables volume
        table = api.upload_table("boot", b"id,x\n1,0.5\n2,1.5\n")
        assert table.rows == 2
        assert [t.name for t in api.tables()] == ["boot"]
    tables_volume = booted.workdir / ".fedmq"  # compose: tables:/var/lib/fedmq/.fedmq
    assert list((tables_volume / f"worker-{PARTY}-tables").iterdir())

    # ...and refuses any other token
    with Client(gateway, "x" * 43) as intruder, pytest.raises(ApiError) as refused:
        intruder.tables()
    assert refused.value.status == 401
    # The logs are JSON lines (what a log shipper reading the containers' stdout expects)
    for name in FEDMQ_SERVICES:
        first = (booted.logs / f"{name}.log").read_text().splitlines()[0]
        assert json.loads(first)["service"]
