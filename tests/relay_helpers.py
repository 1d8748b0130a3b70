"""The relay between parties, as tests set it up: one helper per way of running the gateways.

- `InProcessGateways`: the gateways of several parties in this process, each on its own
  memory:// broker, all peers of each other over the real TLS link on loopback. Fast; for what
  the gateways do to a message (signing, routing, spans, metrics, refusals).
- `gateway_federation`: what the local launcher sets up for a federation on the real servers
  (a RabbitMQ vhost, a PostgreSQL database, keys and certificates and the gateway settings per
  party), optionally with the gateways started as processes; all of it removed on exit.
- `collect`: a consumer at the receiving side that records what the relay delivered.

A test that needs its own relay by hand (the scheduler tests' `Relay`) or the standalone one
(fedflow.local_relay.LocalRelay) does not go through the gateways and is not here.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedbus import Delivery, connect
from fedgateway import pki
from fedgateway.main import Gateway
from fedgateway.settings import GatewaySettings

from fedmq import local
from fedmq.local import free_port

BIND_TRIES = 3
"""InProcessGateways.start's tries when a picked port is taken before its gateway binds it."""


class InProcessGateways:
    """Gateways of `parties` in one process, each on broker memory://<name>-<party>.

    `settings` are added to every gateway's settings (e.g. ping_interval_s); `gateway_options`
    go to each Gateway (e.g. tracer). `start` starts them in the order of `parties`.
    """

    def __init__(
        self,
        root: Path,
        parties: Sequence[str],
        name: str,
        *,
        gateway_options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        pki.init_ca(root / "ca", "t")
        self.root = root
        self.name = name
        self.parties = list(parties)
        self.identities = {p: pki.ensure_party(root / "ca", p, root / p) for p in parties}
        self.gateways: dict[str, Gateway] = {}
        self._gateway_options = gateway_options or {}
        self._settings = settings

    def bus_url(self, party: str) -> str:
        return f"memory://{self.name}-{party}"

    def settings(self, party: str, **overrides: Any) -> GatewaySettings:
        data = {
            "party_id": party,
            "bus_url": self.bus_url(party),
            "database_url": f"sqlite:///{self.root / f'gw-{party}.db'}",
            "identity_dir": str(self.root / party),
            "listen_host": "127.0.0.1",
            "listen_port": 0,
            "http_port": 0,
            "identity_check_interval_s": 0,
            **self._settings,
            **overrides,
        }
        return GatewaySettings(**data)

    def start(self) -> None:
        # The ports are picked before the gateways bind them (each must know its peers'
        # addresses), so another process on the machine can take one in between: try again
        # with new ports, a few times, when a bind finds its port taken.
        for attempt in range(BIND_TRIES):
            try:
                self._start_on_free_ports()
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt == BIND_TRIES - 1:
                    raise
                self.stop()
                self.gateways.clear()

    def _start_on_free_ports(self) -> None:
        ports = {p: free_port() for p in self.parties}
        for p in self.parties:
            peers = {q: {"address": f"127.0.0.1:{ports[q]}"} for q in self.parties if q != p}
            gateway = Gateway(
                self.settings(p, peers=peers, listen_port=ports[p]), **self._gateway_options
            )
            self.gateways[p] = gateway  # before start: stop() also stops a half-started set
            gateway.start()

    def stop(self) -> None:
        for gateway in self.gateways.values():
            gateway.stop()

    def __enter__(self) -> InProcessGateways:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def collect(bus_url: str, topic: str) -> tuple[list[Delivery], threading.Event]:
    """Record every delivery on `topic` at `bus_url`; the event is set at the first."""
    got: list[Delivery] = []
    arrived = threading.Event()
    bus = connect(bus_url)
    bus.declare(topic)

    def handle(delivery: Delivery) -> None:
        got.append(delivery)
        arrived.set()

    bus.subscribe(topic, handle)
    return got, arrived


@contextmanager
def gateway_federation(
    parties: Sequence[str],
    *,
    amqp_url: str,
    redis_url: str,
    pg_admin_url: str,
    label: str,
    start: bool = False,
    healthy_timeout: float = 90,
    stop_timeout: float = 10,
    services: Sequence[str] = local.SERVICES,
) -> Iterator[local.LocalState]:
    """The parties' vhosts, databases, PKI and gateway settings, as `fedmq local` plans them;
    with `start`, their gateways running (the last party's first) and healthy.

    `services`: those that get their own broker user (the others would connect as the
    party's shared user). Through the management API a user costs a few ms; where the launcher
    falls back to rabbitmqctl (fedmq.rabbit_admin) it costs several calls (an Erlang VM each,
    about a second of CPU) at set-up and clean-up, so tests that run only gateways make only
    theirs.

    On exit every gateway is stopped, and the vhosts, databases and files are removed.
    """
    # Not pytest's tmp_path_factory: pytest prunes old numbered temp dirs of *other*
    # concurrent runs, which would delete the identity directories under running gateways.
    root = Path(tempfile.mkdtemp(prefix=f"fedmq-{label}-"))
    state = local.plan(
        list(parties),
        root,
        prefix=f"fedmq{label[:1]}{uuid.uuid4().hex[:8]}",
        federation="test",
        amqp_url=amqp_url.rsplit("/", 1)[0],
        redis_url=redis_url.rsplit("/", 1)[0],
        pg_admin_url=pg_admin_url,
    )
    for p in state.parties.values():
        p.broker_passwords = {
            service: password
            for service, password in p.broker_passwords.items()
            if service in services
        }
    local.prepare(state)
    try:
        if start:
            for party in reversed(parties):
                local.start_service(state, party, "gateway")
            for party in reversed(parties):
                local.wait_healthy(state, party, timeout=healthy_timeout)
        yield state
    finally:
        for party in state.parties:
            local.stop_service(state, party, "gateway", timeout=stop_timeout)
        for p in state.parties.values():
            local.delete_vhost(p.vhost, admin=local.broker_admin(p.bus_url))
            local.drop_database(pg_admin_url, p.database)
        shutil.rmtree(root, ignore_errors=True)
