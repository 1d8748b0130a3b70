"""`fedmq local ...`: several parties' services as processes on one machine (development, tests).

    fedmq local up --parties 9999,10000 [--dir .fedmq/local] [--services gateway,worker]
                   [--without serving]
    fedmq local status [--dir ...]
    fedmq local restart SERVICE --party P [--dir ...]
    fedmq local down [--dir ...] [--purge]

Per party it uses the local servers, isolated by name:
- RabbitMQ: a vhost `<prefix>-<party>` (full permissions there for the guest user; made
  through the management HTTP API on the AMQP URL's host (port FEDMQ_RABBIT_ADMIN_PORT, 15672)
  when it serves that broker, else with rabbitmqctl, which needs to be on PATH and the right to
  use it, i.e. root or the rabbitmq user — the launcher stops with a clear message otherwise;
  FEDMQ_RABBIT_ADMIN_MODE=rabbitmqctl|http forces one: fedmq.rabbit_admin), and in
  it one broker user per service, `<vhost>-<service>` (`broker_user`), with a random password
  and permissions limited to the queues and exchanges that service uses
  (`broker_permissions`); each service connects as its own user, so the user-id its messages
  carry tells the gateway's relays from anything else (docs/security.md);
- Redis: database number 1 + the party's position in --parties (db 0 is left to others), and
  key prefix `<prefix>:<party>:` so separate launches never share cached state;
- PostgreSQL: a database `<prefix>_<party>` created if missing (through --pg-admin-url).
It generates the CA and the parties' keys and certificates on first use, through the same PKI
functions as `fedmq pki`, then starts every registered service per party
(fedcommon.service_registry: gateway, worker, scheduler, audit, serving; `--services` /
`--without` pick fewer), the non-gateway services' /healthz and /metrics on ports of their own
(each gateway exposes `svc.serving` to the other parties, `rpc_services`, so a guest's serving
service reaches its hosts'), with their logs in <dir>/<party>/logs/, their spans in
<dir>/<party>/traces/<service>.jsonl (`fedmq job trace JOB --dir <dir>`) and pid files in
<dir>/<party>/run/. Ports: from --base-port on, or with --base-port 0 (the library's
default) free ones below the kernel's ephemeral range, where a service that finds its port
taken before it bound it (another process got there first) is started again on fresh ones
(`free_port`, `_wait_started`). FEDMQ_SCHEDULER_* variables in the launcher's environment (e.g.
FEDMQ_SCHEDULER_PARTY_TIMEOUT_S) reach every party's scheduler; in a
FEDMQ_<SERVICE>_OTLP_ENDPOINT, `{party}` becomes the party's id (a trace collector per party).
`down` stops exactly the processes whose pid files it wrote (SIGTERM, then SIGKILL after a
timeout); `restart` does that for one service of one party, starts it again and waits for its
/healthz. Each party's workers keep its tables in <dir>/<party>/tables. `down --purge` also
removes everything `up` created: the vhosts, the databases, the parties' Redis keys (every key
under `<prefix>:<party>:`, the prefix their inboxes use), the table folders and <dir>.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit, urlunsplit

import typer
from fedcommon.service_registry import SERVICE_NAMES
from fedcommon.service_registry import SERVICES as REGISTERED_SERVICES
from fedschemas import topics

from fedmq.rabbit_admin import RabbitAdmin, RabbitAdminError, RabbitAdminSettings, open_admin

DEFAULT_DIR = Path(".fedmq/local")
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# The one list of services (fedcommon.service_registry), in the order they start.
SERVICES = SERVICE_NAMES
_MODULES = {spec.name: spec.module for spec in REGISTERED_SERVICES}
STATE_FILE = "local.json"


class LauncherError(Exception):
    """The launcher cannot go on; the message says what is missing."""


@dataclass
class PartyPlan:
    party_id: str
    vhost: str
    bus_url: str
    redis_url: str
    database: str
    database_url: str
    link_port: int
    http_port: int
    scheduler_http_port: int = 0
    """/healthz and /metrics of the party's scheduler (0 in state files written before it)."""
    worker_http_port: int = 0
    """/healthz and /metrics of the party's worker (0 in state files written before it: the
    worker then serves no HTTP)."""
    audit_http_port: int = 0
    """/healthz and /metrics of the party's audit service (0 in state files written before
    it)."""
    serving_http_port: int = 0
    """/healthz and /metrics of the party's serving service (0 in state files written before
    it)."""
    tables_dir: str = ""
    """Where the party's workers keep its tables, an absolute path inside <dir> ("" in state
    files written before it: the workers then used their default folder)."""
    broker_passwords: dict[str, str] = field(default_factory=dict)
    """service -> the password of its broker user (empty in state files written before
    them: the services then share `bus_url`'s user)."""


@dataclass
class LocalState:
    root: str
    federation: str
    prefix: str
    pg_admin_url: str
    parties: dict[str, PartyPlan] = field(default_factory=dict)
    free_ports: bool = False
    """Whether the ports were picked free (no base port): `up` may then move a service whose
    port was taken before it bound it. Ports an operator chose (and those of state files written
    before this field) stay: a taken one is an error naming it."""

    def save(self) -> None:
        data = asdict(self)
        (Path(self.root) / STATE_FILE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, root: Path) -> LocalState:
        path = Path(root) / STATE_FILE
        if not path.exists():
            raise LauncherError(f"nothing launched in {root} (no {STATE_FILE})")
        data = json.loads(path.read_text())
        parties = {p: PartyPlan(**v) for p, v in data.pop("parties").items()}
        return cls(parties=parties, **data)

    def party_dir(self, party: str) -> Path:
        return Path(self.root) / party


# --- servers -------------------------------------------------------------------------------


_broker: ContextVar[str] = ContextVar("fedmq_local_broker", default=DEFAULT_AMQP)
"""The broker the functions below administer when given no `admin`: prepare and down set it
to the party's (its AMQP URL), so code that replaces these functions keeps their signatures."""
_admins: dict[tuple[str, str, int], RabbitAdmin] = {}


def broker_admin(amqp_url: str | None = None) -> RabbitAdmin:
    """The admin of the broker at `amqp_url` (default: the one prepare/down work on, else
    DEFAULT_AMQP): the management HTTP API where it serves that broker, else rabbitmqctl
    (fedmq.rabbit_admin; FEDMQ_RABBIT_ADMIN_MODE / _PORT choose). One per broker and
    settings for the process, so the choice (and its log line) is made once."""
    parsed = urlsplit(amqp_url or _broker.get())
    root = urlunsplit(parsed._replace(path="", query="", fragment=""))
    settings = RabbitAdminSettings()
    key = (root, settings.mode, settings.port)
    if key not in _admins:
        _admins[key] = open_admin(root, settings)
    return _admins[key]


@contextlib.contextmanager
def _on_broker(amqp_url: str) -> Iterator[None]:
    token = _broker.set(amqp_url)
    try:
        yield
    finally:
        _broker.reset(token)


def existing_vhosts(admin: RabbitAdmin | None = None) -> set[str]:
    return (admin or broker_admin()).list_vhosts()


def ensure_vhost(vhost: str, user: str = "guest", *, admin: RabbitAdmin | None = None) -> None:
    """Create the vhost if missing and let `user` configure, write and read everything in it."""
    admin = admin or broker_admin()
    if vhost not in admin.list_vhosts():
        admin.add_vhost(vhost)
    admin.set_permissions(vhost, user, ".*", ".*", ".*")


def delete_vhost(vhost: str, *, admin: RabbitAdmin | None = None) -> None:
    """Delete the vhost and the services' broker users made for it."""
    admin = admin or broker_admin()
    if vhost in admin.list_vhosts():
        admin.delete_vhost(vhost)
    delete_broker_users(vhost, admin=admin)


def broker_user(vhost: str, service: str) -> str:
    """The broker user of `service` on a party's vhost. Services derive their gateway's user
    from their own by this naming (fedbus.runtime.RemoteSourceGuard.for_service)."""
    return f"{vhost}-{service}"


def _names(*names: str) -> str:
    return "|".join(re.escape(n) for n in names)


# The exchanges every bus declares and publishes to (fedbus.amqp_bus), and the default exchange
# that replies go through.
_EXCHANGES = _names("fedmq", "fedmq.dlx", "fedmq.fanout")
_REPLIES = _names("amq.default")
_OUT = re.escape(topics.OUT_PREFIX) + r"[^.]+"
# Queues a service declares: the ones it consumes and the ones it publishes to (declared so
# that a publish before their consumer started is kept); each with its dead-letter queue.
_DECLARES: dict[str, str] = {
    "gateway": "|".join(
        [
            _OUT,
            _names(
                topics.GATEWAY, topics.GATEWAY_RPC, *sorted(set(topics.GATEWAY_ROUTES.values()))
            ),
        ]
    ),
    "scheduler": "|".join(
        [_OUT, _names(topics.SCHEDULER, topics.SCHEDULER_RPC, topics.WORKER, topics.GATEWAY)]
    ),
    "worker": "|".join(
        [
            _OUT,
            _names(
                topics.WORKER,
                topics.WORKER_REPLIES,
                topics.SCHEDULER,
                topics.DATA_RPC,
                topics.AUDIT_REPORTS,
            ),
            re.escape(topics.CRYPTO) + r"(\.reply\.[0-9a-f]+)?",
        ]
    ),
    # Its fan-out queue (fedaudit.settings.FANOUT_NAME), its read models' queue, the
    # scheduler's, where its stop requests go, its inbox (peers' checkpoints), out.<peer>
    # (its own checkpoints to the peers), the serving service's lifecycle events and the
    # workers' reports (checks of decrypted plaintexts).
    "audit": "|".join(
        [
            _OUT,
            _names(
                "fedmq.fanout.audit",
                topics.AUDIT,
                topics.AUDIT_RPC,
                topics.SCHEDULER,
                topics.SERVING_EVENTS,
                topics.AUDIT_REPORTS,
            ),
        ]
    ),
    # Its own topics (fedserving.handlers: peers' calls through the gateway, the REST API's
    # and the CLI's), the scheduler's RPC (which parties a published job had) and the
    # gateway's RPC (its calls to the hosts' serving services, fedbus.remote) and its lifecycle
    # events to the party's audit.
    "serving": "|".join(
        [
            _OUT,
            _names(
                topics.SERVING,
                topics.SERVING_RPC,
                topics.SCHEDULER_RPC,
                topics.GATEWAY_RPC,
                topics.SERVING_EVENTS,
            ),
        ]
    ),
}


def broker_permissions(service: str) -> tuple[str, str, str]:
    """RabbitMQ (configure, write, read) regexes of `service`'s broker user on its party's
    vhost: configure, write (publish, bind) and read (consume, bind from) the bus's exchanges
    and the queues it declares, write the default exchange (replies). Read covers every
    declared queue, not only the consumed ones: RabbitMQ wants read on a queue declared with a
    dead-letter exchange. Publishing is to one direct exchange, which RabbitMQ cannot restrict
    per routing key, so what keeps a service's forged messages out is the broker-validated
    user-id they carry (docs/security.md); these permissions keep each user off the queues of
    services it does not talk to (the worker off svc.scheduler.rpc and svc.gateway*, the
    scheduler off svc.data.rpc and svc.crypto*, the gateway off both RPC queues)."""
    queues = rf"({_DECLARES[service]})(\.dlq)?"
    return (
        rf"^({_EXCHANGES}|{queues})$",
        rf"^({_EXCHANGES}|{_REPLIES}|{queues})$",
        rf"^({_EXCHANGES}|{queues})$",
    )


def existing_users(admin: RabbitAdmin | None = None) -> set[str]:
    return (admin or broker_admin()).list_users()


def ensure_broker_user(
    vhost: str,
    service: str,
    password: str,
    *,
    known: set[str] | None = None,
    admin: RabbitAdmin | None = None,
) -> str:
    """Create (or reset) `service`'s broker user on `vhost` with its permissions there.
    `known`: the broker's users if the caller listed them already (through rabbitmqctl each
    call starts an Erlang VM, about a second of CPU)."""
    admin = admin or broker_admin()
    user = broker_user(vhost, service)
    if user in (admin.list_users() if known is None else known):
        admin.change_password(user, password)
    else:
        admin.add_user(user, password)
    admin.set_permissions(vhost, user, *broker_permissions(service))
    return user


def delete_broker_users(vhost: str, *, admin: RabbitAdmin | None = None) -> None:
    admin = admin or broker_admin()
    known = admin.list_users()
    for service in SERVICES:
        user = broker_user(vhost, service)
        if user in known:
            admin.delete_user(user)


def service_bus_url(state: LocalState, party: str, service: str) -> str:
    """The bus URL `service` of `party` connects with: its own broker user where the launcher
    made one, else the party's shared `bus_url`."""
    p = state.parties[party]
    password = p.broker_passwords.get(service)
    if password is None:
        return p.bus_url
    parsed = urlsplit(p.bus_url)
    host = parsed.netloc.rpartition("@")[2]
    user = quote(broker_user(p.vhost, service), safe="")
    return urlunsplit(parsed._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def ensure_database(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if exists is None:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


def drop_database(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


FREE_PORTS = (20000, 32000)
"""Where free_port draws from when the kernel's ephemeral range (ip_local_port_range) cannot
be read or leaves too little below it: 32768-60999 by default on Linux."""
LOWEST_FREE_PORT = 18000
"""free_port's ports start above RabbitMQ's management ports (15672, 15692) and the launcher's
default --base-port block (17400-17489)."""
RESERVED_PORTS = frozenset({25672})
"""Ports free_port never hands out though nothing may hold them now: RabbitMQ's inter-node
port (AMQP + 20000), which a broker restarted later must get back."""
PORT_TRIES = 5
"""Starts of one service on fresh ports before `up` gives up on a taken port."""


def _free_port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range. A port bound to 0 comes from that range, and
    so does the local port of every outgoing connection on the machine (a client of RabbitMQ,
    PostgreSQL, Redis, any test's), so a port picked there can be taken by a mere connect()
    before the service binds it; below it only another listener can take it."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return FREE_PORTS
    return (LOWEST_FREE_PORT, low - 1) if low > LOWEST_FREE_PORT + 4000 else FREE_PORTS


def free_port(exclude: frozenset[int] | set[int] = frozenset()) -> int:
    """A port nobody listens on (nor holds) now on 127.0.0.1, at random below the ephemeral
    range, and not in `exclude`. Only a guess until a service binds it: another process can
    take it in between, which is why `up` starts a service again on fresh ports when its log
    says its port was taken."""
    low, high = _free_port_range()
    for _ in range(200):
        port = low + secrets.randbelow(high - low + 1)  # OS entropy: no seed shared by processes
        if port in exclude or port in RESERVED_PORTS:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))  # without SO_REUSEADDR: held ports fail too
            except OSError:
                continue
            return port
    raise LauncherError(f"no free port found in {low}-{high} on 127.0.0.1")


# --- planning ------------------------------------------------------------------------------


def plan(
    parties: list[str],
    root: Path,
    *,
    prefix: str = "fedmq",
    federation: str = "local",
    amqp_url: str = DEFAULT_AMQP,
    redis_url: str = DEFAULT_REDIS,
    pg_admin_url: str = DEFAULT_PG_ADMIN,
    base_port: int = 0,
) -> LocalState:
    """Names, URLs and ports for each party (base_port 0: free ports picked now)."""
    if not parties or len(set(parties)) != len(parties):
        raise LauncherError("--parties needs distinct party ids")
    if len(parties) > 15:
        raise LauncherError("at most 15 parties (one Redis database each, 1..15)")
    if not re.fullmatch(r"[a-z0-9_-]{1,30}", prefix):
        raise LauncherError("prefix must be 1..30 of a-z 0-9 _ -")
    state = LocalState(
        root=str(root),
        federation=federation,
        prefix=prefix,
        pg_admin_url=pg_admin_url,
        free_ports=not base_port,
    )
    pg_base = pg_admin_url.rsplit("/", 1)[0]
    picked: set[int] = set()

    def port(offset: int) -> int:
        if base_port:
            return base_port + offset
        fresh = free_port(exclude=picked)  # distinct: none of them is bound yet
        picked.add(fresh)
        return fresh

    for i, party in enumerate(parties):
        vhost = f"{prefix}-{party}"
        database = f"{prefix}_{party}".replace("-", "_")
        state.parties[party] = PartyPlan(
            party_id=party,
            vhost=vhost,
            bus_url=f"{amqp_url.rstrip('/')}/{vhost}",
            redis_url=f"{redis_url.rstrip('/')}/{i + 1}",
            database=database,
            database_url=f"{pg_base}/{database}",
            link_port=port(2 * i),
            http_port=port(2 * i + 1),
            # After the gateways' ports (15 parties at most: 30 ports from base_port).
            scheduler_http_port=port(30 + i),
            # After the schedulers' 15.
            worker_http_port=port(45 + i),
            # After the workers' 15.
            audit_http_port=port(60 + i),
            # After the audits' 15.
            serving_http_port=port(75 + i),
            # Inside <dir>, so `down --purge` finds it (the worker's default for a PostgreSQL
            # database is a folder relative to the working directory).
            tables_dir=str((root / party / "tables").resolve()),
            broker_passwords={service: secrets.token_hex(24) for service in SERVICES},
        )
    return state


def prepare(state: LocalState) -> None:
    """Create what each party needs (vhost, database, keys and certificate), if missing."""
    from fedgateway import pki

    root = Path(state.root)
    root.mkdir(parents=True, exist_ok=True)
    ca_dir = root / "ca"
    if not (ca_dir / pki.CA_KEY).exists():
        pki.init_ca(ca_dir, state.federation)
    for party, p in state.parties.items():
        with _on_broker(p.bus_url):
            ensure_vhost(p.vhost)
            known = existing_users() if p.broker_passwords else set()
            for service, password in p.broker_passwords.items():
                ensure_broker_user(p.vhost, service, password, known=known)
        ensure_database(state.pg_admin_url, p.database)
        pki.ensure_party(ca_dir, party, state.party_dir(party) / "identity")
        _write_gateway_settings(state, party)
    state.save()


def gateway_settings(state: LocalState, party: str, **overrides: Any) -> dict[str, Any]:
    p = state.parties[party]
    data: dict[str, Any] = {
        "party_id": party,
        "bus_url": service_bus_url(state, party, "gateway"),
        "database_url": p.database_url,
        "identity_dir": str(state.party_dir(party) / "identity"),
        "listen_host": "127.0.0.1",
        "listen_port": p.link_port,
        "http_host": "127.0.0.1",
        "http_port": p.http_port,
        "peers": {
            other: {"address": f"127.0.0.1:{q.link_port}"}
            for other, q in state.parties.items()
            if other != party
        },
        # The peers may call this party's serving service (request/reply through both
        # gateways: the guest's serving asks each host's for its partial scores).
        "rpc_services": {"svc.serving": sorted(o for o in state.parties if o != party)},
    }
    data.update(overrides)
    return data


def _write_gateway_settings(state: LocalState, party: str, **overrides: Any) -> Path:
    path = state.party_dir(party) / "gateway.json"
    existing: dict[str, Any] = {}
    if path.exists():
        # Keep operator edits (routes, extra peers...) but refresh what the launcher owns.
        existing = json.loads(path.read_text())
    data = {**existing, **gateway_settings(state, party, **overrides)}
    if "rpc_services" not in overrides:
        # Other services an operator exposed stay exposed beside the launcher's svc.serving
        # (an explicit rpc_services override is taken as it is).
        data["rpc_services"] = {**existing.get("rpc_services", {}), **data["rpc_services"]}
    path.write_text(json.dumps(data, indent=2))
    return path


def update_gateway_settings(state: LocalState, party: str, **overrides: Any) -> Path:
    """Change a party's gateway settings file (takes effect at the gateway's next start)."""
    return _write_gateway_settings(state, party, **overrides)


# --- processes -----------------------------------------------------------------------------


def _pid_file(state: LocalState, party: str, service: str) -> Path:
    return state.party_dir(party) / "run" / f"{service}.pid"


def log_file(state: LocalState, party: str, service: str) -> Path:
    return state.party_dir(party) / "logs" / f"{service}.log"


def trace_file(state: LocalState, party: str, service: str) -> Path:
    """Where the party's service appends its spans (JSON lines): `fedmq job trace` reads them."""
    return (state.party_dir(party) / "traces" / f"{service}.jsonl").resolve()


def _service_env(state: LocalState, party: str, service: str) -> dict[str, str]:
    p = state.parties[party]
    env = dict(os.environ)
    # A variable the caller set wins (an empty one turns the file off).
    env.setdefault(f"FEDMQ_{service.upper()}_TRACE_FILE", str(trace_file(state, party, service)))
    # An OTLP endpoint may name the party ("http://collector:4318/{party}/v1/traces"): each
    # party exports its own spans to its own collector, as separate sites do.
    for name, value in env.items():
        if name.startswith("FEDMQ_") and name.endswith("_OTLP_ENDPOINT") and "{party}" in value:
            env[name] = value.replace("{party}", party)
    if service == "gateway":
        env["FEDMQ_GATEWAY_SETTINGS_FILE"] = str(state.party_dir(party) / "gateway.json")
    else:
        up = f"FEDMQ_{service.upper()}_"
        env.update(
            {
                up + "PARTY_ID": party,
                up + "BUS_URL": service_bus_url(state, party, service),
                up + "DATABASE_URL": p.database_url,
                up + "REDIS_URL": p.redis_url,
                up + "REDIS_PREFIX": f"{state.prefix}:{party}:{service}:inbox:",
            }
        )
        if service in ("scheduler", "worker", "audit", "serving"):
            env[up + "HTTP_HOST"] = "127.0.0.1"
            env[up + "HTTP_PORT"] = str(_http_port(state, party, service))
        if service == "audit":
            env[up + "SIGNING_KEY"] = audit_key(state, party)[0]
        if service == "serving":
            # Its feature cache and rate-limit counters under the party's Redis prefix; the
            # party's tables are the workers'; its export key in the party's folder.
            env[up + "REDIS_PREFIX"] = f"{state.prefix}:{party}:serving:"
            env.setdefault(up + "KEY_FILE", str((state.party_dir(party) / "serving.key").resolve()))
            if p.tables_dir:
                env[up + "TABLES_DIR"] = p.tables_dir
        if service == "scheduler":
            env[up + "AUDIT_PUBLIC_KEY"] = audit_key(state, party)[1]
        if service == "worker":
            env.setdefault(up + "CHECKPOINT_KEY", checkpoint_key(state, party))
            if p.tables_dir:
                env[up + "DATA_DIR"] = p.tables_dir
    return env


def checkpoint_key(state: LocalState, party: str) -> str:
    """The party's workers' shared checkpoint secret (created once, kept 0600 in its folder):
    a worker restarted by `fedmq local` resumes tasks whose secrets the old one sealed."""
    path = state.party_dir(party) / "checkpoint.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip()


def audit_key(state: LocalState, party: str) -> tuple[str, str]:
    """The party's audit signing key (created once, kept 0600 in its folder), as hex of its
    private and its public half: the audit signs checkpoints and stop requests with it, the
    scheduler acts only on stop requests it signed."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = state.party_dir(party) / "audit.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(Ed25519PrivateKey.generate().private_bytes_raw().hex())
    private = path.read_text().strip()
    public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private)).public_key()
    return private, public.public_bytes_raw().hex()


_children: dict[int, subprocess.Popen[bytes]] = {}
"""Processes started by this Python process: polled so their exit status is collected."""
_log_starts: dict[Path, int] = {}
"""A service's log file -> its size when this process last started the service: where that
start's lines begin (the log is appended to across starts)."""
PORT_TAKEN = "Address already in use"
"""strerror(EADDRINUSE), in the traceback of a service that could not bind its port."""


def _alive(pid: int, service: str) -> bool:
    """True if `pid` runs and is still our service (not a recycled pid of something else)."""
    child = _children.get(pid)
    if child is not None:  # our own child: its exit status is authoritative
        return child.poll() is None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ")
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # zombie: exited, not yet reaped
            return False
    except (OSError, IndexError):
        return False
    return _MODULES[service].encode() in cmdline


def read_pid(state: LocalState, party: str, service: str) -> int | None:
    path = _pid_file(state, party, service)
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def start_service(state: LocalState, party: str, service: str) -> int:
    """Start one service process of one party (if not already running); returns its pid."""
    pid = read_pid(state, party, service)
    if pid is not None and _alive(pid, service):
        return pid
    log_path = log_file(state, party, service)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _pid_file(state, party, service).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        _log_starts[log_path] = log.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", _MODULES[service]],
            env=_service_env(state, party, service),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the launcher's terminal does not hit them
        )
    _pid_file(state, party, service).write_text(str(proc.pid))
    _children[proc.pid] = proc
    return proc.pid


def _http_port(state: LocalState, party: str, service: str) -> int:
    """The service's /healthz and /metrics port (0: a worker launched before it had one)."""
    p = state.parties[party]
    if service == "scheduler":
        return p.scheduler_http_port
    if service == "worker":
        return p.worker_http_port
    if service == "audit":
        return p.audit_http_port
    if service == "serving":
        return p.serving_http_port
    return p.http_port


START_LIMIT_S = 300.0
"""How long wait_healthy waits at most for a service that is alive and still making progress
(its CPU time grows): under load importing a gateway took 17 s of wall time (load 15-32), so a
fixed 30 s failed stacks that were only slow."""


def _cpu_ticks(pid: int) -> int | None:
    """utime + stime of `pid` in clock ticks (None when /proc has no such process)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # after ")": state is [0], utime [11], stime [12]
    except (OSError, IndexError, ValueError):
        return None


def _exited_error(state: LocalState, party: str, service: str, pid: int | None) -> LauncherError:
    path = log_file(state, party, service)
    tail = path.read_text(errors="replace").splitlines()[-15:] if path.exists() else []
    child = _children.get(pid) if pid is not None else None
    code = child.poll() if child is not None else None
    return LauncherError(
        f"{service} of party {party} exited (status {code}); see {path}; last lines:\n"
        + "\n".join(tail)
        + (
            f"\n(a port of {service} was taken: "
            f"{', '.join(map(str, _ports_of(state, party, service)))})"
            if port_taken(state, party, service)
            else ""
        )
    )


def wait_healthy(
    state: LocalState,
    party: str,
    timeout: float = 30.0,
    *,
    service: str = "gateway",
    limit: float | None = None,
) -> None:
    """Wait until the party's gateway (or another service) answers /healthz with 200.

    Fails at once, with its log's last lines, when the process exited; after `timeout` seconds
    without progress (its CPU time did not grow: a hung or idle process); and in any case after
    `limit` (default max(timeout, START_LIMIT_S)) seconds. A service that is only slow to start
    (a loaded machine) is waited for while it makes progress.
    """
    url = f"http://127.0.0.1:{_http_port(state, party, service)}/healthz"
    start = time.monotonic()
    hard = start + (max(timeout, START_LIMIT_S) if limit is None else limit)
    progress_at = start
    ticks: int | None = None
    last = "no answer"
    while True:
        now = time.monotonic()
        if now >= hard or now >= progress_at + timeout:
            break
        pid = read_pid(state, party, service)
        if pid is None or not _alive(pid, service):
            raise _exited_error(state, party, service, pid)
        now_ticks = _cpu_ticks(pid)
        if now_ticks is not None and ticks is not None and now_ticks > ticks:
            progress_at = time.monotonic()
        ticks = now_ticks
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # loopback http
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    path = log_file(state, party, service)
    tail = path.read_text(errors="replace").splitlines()[-15:] if path.exists() else []
    waited = time.monotonic() - start
    why = f"no CPU time used for {timeout} s" if time.monotonic() < hard else "its start-up limit"
    raise LauncherError(
        f"{service} of party {party} not healthy after {waited:.0f} s ({why}): {last}; "
        f"see {path}; last lines:\n" + "\n".join(tail)
    )


def port_taken(state: LocalState, party: str, service: str) -> bool:
    """Whether the service's log, since this process last started it, says a port it tried to
    bind was taken."""
    path = log_file(state, party, service)
    try:
        with open(path, "rb") as log:
            log.seek(_log_starts.get(path, 0))
            return PORT_TAKEN.encode() in log.read()
    except OSError:
        return False


def _ports_of(state: LocalState, party: str, service: str) -> list[int]:
    p = state.parties[party]
    if service == "gateway":
        return [p.link_port, p.http_port]
    return [_http_port(state, party, service)]


def _move_ports(state: LocalState, party: str, service: str) -> None:
    """Fresh free ports for the service (the gateway: its link and HTTP ports; the others their
    HTTP port), saved; the gateway's peers learn its new link address from their settings
    files."""
    p = state.parties[party]
    used = {port for q in state.parties.values() for port in _all_ports(q)}
    if service == "gateway":
        p.link_port = free_port(exclude=used)
        p.http_port = free_port(exclude=used | {p.link_port})
    else:
        setattr(p, f"{service}_http_port", free_port(exclude=used))
    state.save()
    for other in state.parties:
        _write_gateway_settings(state, other)


def _all_ports(p: PartyPlan) -> list[int]:
    return [
        p.link_port,
        p.http_port,
        p.scheduler_http_port,
        p.worker_http_port,
        p.audit_http_port,
        p.serving_http_port,
    ]


def _wait_started(
    state: LocalState, party: str, service: str, started: tuple[str, ...], timeout: float = 30.0
) -> None:
    """wait_healthy; when the service exited because a port picked for it was taken before it
    bound it (another process on the machine got there first), start it again on fresh ports,
    PORT_TRIES times at most. A gateway that moves has its peers' gateways restarted: they read
    its link address once, at their start."""
    for attempt in range(PORT_TRIES):
        try:
            wait_healthy(state, party, timeout, service=service)
            return
        except LauncherError:
            retry = state.free_ports and attempt < PORT_TRIES - 1
            if not (retry and port_taken(state, party, service)):
                raise
        stop_service(state, party, service)  # one that lingers unhealthy instead of exiting
        _move_ports(state, party, service)
        start_service(state, party, service)
        if service == "gateway" and "gateway" in started:
            for other in state.parties:
                if other != party:
                    stop_service(state, other, "gateway")
                    start_service(state, other, "gateway")
                    wait_healthy(state, other, timeout)


def stop_service(
    state: LocalState, party: str, service: str, *, timeout: float = 15.0, kill: bool = False
) -> bool:
    """SIGTERM (or SIGKILL with kill=True) one service; SIGKILL after `timeout`. Returns whether
    a process was running."""
    pid = _signal_service(state, party, service, signal.SIGKILL if kill else signal.SIGTERM)
    if pid is None:
        return False
    _wait_stopped(state, party, service, pid, time.monotonic() + timeout)
    return True


def _signal_service(state: LocalState, party: str, service: str, sig: int) -> int | None:
    """Send `sig` to the service if it runs; its pid, or None (a stale pid file is removed)."""
    pid = read_pid(state, party, service)
    if pid is None:
        return None
    if not _alive(pid, service):
        _pid_file(state, party, service).unlink(missing_ok=True)
        return None
    os.kill(pid, sig)
    return pid


def _wait_stopped(state: LocalState, party: str, service: str, pid: int, deadline: float) -> None:
    """Wait for the signalled service to exit, SIGKILL it at `deadline`; remove its pid file."""
    while _alive(pid, service) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if _alive(pid, service):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid, service):
            _reap(pid)
            time.sleep(0.05)
    _reap(pid)
    _pid_file(state, party, service).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def redis_key_prefix(state: LocalState, party: str) -> str:
    """The prefix of every Redis key of `party`'s services (their inbox caches use
    `<prefix>:<party>:<service>:inbox:`)."""
    return f"{state.prefix}:{party}:"


def delete_redis_keys(redis_url: str, key_prefix: str) -> int:
    """Delete every key under `key_prefix` in the database of `redis_url`; how many."""
    import redis

    # SCAN's MATCH is a glob: escape its special characters so the prefix is taken literally.
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in key_prefix) + "*"
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


def restart(
    root: Path,
    party: str,
    service: str,
    *,
    timeout: float = 15.0,
    kill: bool = False,
    wait: bool = True,
) -> tuple[int | None, int]:
    """Stop one service of one party (SIGTERM, or SIGKILL with kill=True; SIGKILL after
    `timeout`), start it again with the same settings and wait for its /healthz. Returns (the
    old pid or None if it was not running, the new pid)."""
    from fedcommon.service_registry import service as registered

    state = LocalState.load(root)
    try:
        registered(service)
    except KeyError as exc:
        raise LauncherError(exc.args[0]) from None
    if party not in state.parties:
        raise LauncherError(f"no party {party} in {root}; launched: {', '.join(state.parties)}")
    old = read_pid(state, party, service)
    if not stop_service(state, party, service, timeout=timeout, kill=kill):
        old = None
    new = start_service(state, party, service)
    if wait and _http_port(state, party, service):
        wait_healthy(state, party, service=service)
    return old, new


def up(
    parties: list[str],
    root: Path = DEFAULT_DIR,
    *,
    services: tuple[str, ...] = SERVICES,
    wait: bool = True,
    **plan_options: Any,
) -> LocalState:
    """Prepare everything and start the services of every party."""
    root = Path(root)
    unknown = set(services) - set(SERVICES)
    if unknown:
        raise LauncherError(f"unknown services {sorted(unknown)}; known: {SERVICES}")
    if (root / STATE_FILE).exists():
        state = LocalState.load(root)
        if sorted(state.parties) != sorted(parties):
            raise LauncherError(
                f"{root} already runs parties {sorted(state.parties)}; "
                "`fedmq local down` first or use another --dir"
            )
    else:
        state = plan(parties, root, **plan_options)
    prepare(state)
    for party in state.parties:
        for service in services:
            start_service(state, party, service)
    if wait:
        for service in SERVICES:
            if service in services:
                for party in state.parties:
                    if _http_port(state, party, service):
                        _wait_started(state, party, service, services)
    return state


def without_services(services: tuple[str, ...], without: list[str]) -> tuple[str, ...]:
    """`services` less those in `without` (`fedmq local up --without serving`: a stack that
    needs no online serving saves its processes)."""
    unknown = set(without) - set(SERVICES)
    if unknown:
        raise LauncherError(f"unknown services {sorted(unknown)}; known: {SERVICES}")
    return tuple(s for s in services if s not in without)


def down(root: Path = DEFAULT_DIR, *, timeout: float = 15.0, purge: bool = False) -> list[str]:
    """Stop every service this launcher started in `root`; with purge, also delete what `up`
    created: the parties' vhosts, databases, Redis keys and table folders, and the directory.
    Returns what was stopped."""
    state = LocalState.load(root)
    # SIGTERM to every service first, then wait for them together: their shutdowns (a flush
    # and a broker close, a second or more each under load) overlap instead of adding up.
    signalled = [
        (party, service, pid)
        for party in state.parties
        for service in SERVICES
        if (pid := _signal_service(state, party, service, signal.SIGTERM)) is not None
    ]
    deadline = time.monotonic() + timeout
    for party, service, pid in signalled:
        _wait_stopped(state, party, service, pid, deadline)
    stopped = [f"{service}@{party}" for party, service, _ in signalled]
    if purge:
        for party, p in state.parties.items():
            delete_vhost(p.vhost, admin=broker_admin(p.bus_url))  # and its broker users
            delete_redis_keys(p.redis_url, redis_key_prefix(state, party))
            if p.tables_dir:
                shutil.rmtree(p.tables_dir, ignore_errors=True)
            drop_database(state.pg_admin_url, p.database)
        shutil.rmtree(root, ignore_errors=True)
    return stopped


def status(root: Path = DEFAULT_DIR) -> list[dict[str, Any]]:
    state = LocalState.load(root)
    rows = []
    for party, p in state.parties.items():
        for service in SERVICES:
            pid = read_pid(state, party, service)
            rows.append(
                {
                    "party": party,
                    "service": service,
                    "pid": pid,
                    "running": pid is not None and _alive(pid, service),
                    "vhost": p.vhost,
                    "link_port": p.link_port if service == "gateway" else None,
                    "http_port": _http_port(state, party, service) or None,
                }
            )
    return rows


# --- CLI -----------------------------------------------------------------------------------

local_app = typer.Typer(help="Run several parties' services locally.", no_args_is_help=True)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@local_app.command("up")
def up_cmd(
    parties: Annotated[str, typer.Option(help="Comma-separated party ids, e.g. 9999,10000.")],
    directory: Annotated[Path, typer.Option("--dir", help="State, keys, logs.")] = DEFAULT_DIR,
    services: Annotated[str, typer.Option(help="Which services per party.")] = ",".join(SERVICES),
    without: Annotated[
        str, typer.Option(help="Services not to start, e.g. serving (comma-separated).")
    ] = "",
    base_port: Annotated[int, typer.Option(help="First port (0: pick free ports).")] = 17400,
    prefix: Annotated[str, typer.Option(help="vhost / database name prefix.")] = "fedmq",
    pg_admin_url: Annotated[
        str, typer.Option(help="Where to create databases.")
    ] = DEFAULT_PG_ADMIN,
) -> None:
    """Start a gateway, a worker and a scheduler per party against the local RabbitMQ, Redis and
    PostgreSQL."""
    try:
        state = up(
            _split(parties),
            directory,
            services=without_services(tuple(_split(services)), _split(without)),
            base_port=base_port,
            prefix=prefix,
            pg_admin_url=pg_admin_url,
        )
    except (LauncherError, RabbitAdminError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for party, p in state.parties.items():
        typer.echo(
            f"party {party}: vhost {p.vhost}, link :{p.link_port}, "
            f"http http://127.0.0.1:{p.http_port}/healthz, "
            f"scheduler http://127.0.0.1:{p.scheduler_http_port}/healthz, "
            f"worker http://127.0.0.1:{p.worker_http_port}/healthz, "
            f"serving http://127.0.0.1:{p.serving_http_port}/healthz, db {p.database}"
        )


@local_app.command("down")
def down_cmd(
    directory: Annotated[Path, typer.Option("--dir")] = DEFAULT_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = 15.0,
    purge: Annotated[
        bool, typer.Option(help="Also delete vhosts, databases, Redis keys, tables, the dir.")
    ] = False,
) -> None:
    """Stop everything `fedmq local up` started (SIGTERM, then SIGKILL after --timeout)."""
    try:
        stopped = down(directory, timeout=timeout, purge=purge)
    except (LauncherError, RabbitAdminError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("stopped: " + (", ".join(stopped) or "nothing was running"))


@local_app.command("restart")
def restart_cmd(
    service: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICES)}.")],
    party: Annotated[str, typer.Option(help="The party whose service restarts.")],
    directory: Annotated[Path, typer.Option("--dir")] = DEFAULT_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = 15.0,
    kill: Annotated[bool, typer.Option(help="SIGKILL at once (a crash).")] = False,
) -> None:
    """Restart one service of one party (stop, start, wait for its /healthz)."""
    try:
        old, new = restart(directory, party, service, timeout=timeout, kill=kill)
    except LauncherError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    was = f"pid {old}" if old is not None else "not running"
    typer.echo(f"restarted {service}@{party}: {was} -> pid {new}")


@local_app.command("status")
def status_cmd(directory: Annotated[Path, typer.Option("--dir")] = DEFAULT_DIR) -> None:
    """Show each launched service and whether it runs."""
    try:
        rows = status(directory)
    except LauncherError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for r in rows:
        state = "running" if r["running"] else "stopped"
        extra = f" link :{r['link_port']}" if r["link_port"] else ""
        extra += f" http :{r['http_port']}" if r["http_port"] else ""
        typer.echo(f"{r['party']:>8} {r['service']:<8} {state:<8} pid {r['pid']}{extra}")
