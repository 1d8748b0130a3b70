"""`fedmq site ...`: turn an empty folder into a party that runs with docker compose.

    fedmq site init --party 10000 --federation acme --link-address bank.example:7443 [--dir .]
    fedmq site install-cert --cert 10000.cert.pem --ca ca.cert.pem [--dir .]
    fedmq site add-peer --party 9999 --address peer.example:7443 [--cert 9999.cert.pem] [--dir .]
    fedmq site sync-identity --source ... --target ... --owner 10001:10001   (run by compose)
    fedmq site policy init|show|check [--file policy.yaml]   (the party's security policy)

A site folder holds what is this party's own, and nothing else:
    .env          compose's settings for the party (0600: it holds the secrets)
    identity/     the party's keys, CSR and, once the CA answered, certificate (fedmq pki layout)
    peers/        peer certificates added with add-peer (public)
docker-compose.yml and infra/ are not copied: they come with the fedmq release (the repository),
and compose runs there with `--env-file <site>/.env`, or in the site folder itself when the site
is the release folder (`--dir .`, the default). Paths in .env are absolute for that reason.

Keys are made and certificates checked by the gateway's PKI functions (fedgateway.pki); nothing
here does cryptography of its own. docs/deploy.md walks through the whole round trip.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from fedflow.policy import SecurityPolicy
    from fedgateway.pki import PartyCertificate

ENV_FILE = ".env"
IDENTITY_DIR = "identity"
PEERS_DIR = "peers"
PEERS_MOUNT = "/etc/fedmq/peers"
"""Where docker-compose.yml mounts the peers folder in the gateway container."""

SECRET_KEYS = (
    "POSTGRES_PASSWORD",
    "RABBITMQ_PASSWORD",
    # One broker user per service (`fedmq site broker-users`, fedmq.broker_users).
    "RABBITMQ_GATEWAY_PASSWORD",
    "RABBITMQ_SCHEDULER_PASSWORD",
    "RABBITMQ_WORKER_PASSWORD",
    "RABBITMQ_AUDIT_PASSWORD",
    "RABBITMQ_SERVING_PASSWORD",
    "REDIS_PASSWORD",
    "FEDMQ_API_TOKEN",
    "FEDMQ_CHECKPOINT_KEY",
    "GRAFANA_ADMIN_PASSWORD",
)
SECRET_BYTES = 32
"""Random bytes per secret: 43 URL-safe characters, safe inside the connection URLs."""

# The files the gateway reads from its identity directory (fedgateway.pki's layout). Keys are
# listed before certificates: a gateway reloading while they are copied refuses a certificate
# that does not match its keys and keeps the old identity, so keys must land first.
IDENTITY_FILES = ("party.json", "tls.key.pem", "signing.key.pem", "ca.cert.pem", "tls.cert.pem")
SECRET_IDENTITY_FILES = frozenset({"tls.key.pem", "signing.key.pem"})
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class SiteError(Exception):
    """A site command cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class SiteInit:
    directory: Path
    env_file: Path
    csr: Path
    backup: Path | None
    """Where an earlier site's files went (with --force), or None."""


def env_values(
    party_id: str, federation: str, link_address: str, directory: Path
) -> dict[str, str]:
    """The .env of a new site, key by key, in the order of .env.example (tests keep them equal)."""
    directory = directory.resolve()
    values = {
        "COMPOSE_PROJECT_NAME": "fedmq-" + re.sub(r"[^a-z0-9_-]", "-", party_id.lower()),
        "FEDMQ_PARTY_ID": party_id,
        "FEDMQ_FEDERATION": federation,
        "FEDMQ_LINK_ADDRESS": link_address,
        "FEDMQ_IDENTITY_DIR": str(directory / IDENTITY_DIR),
        "FEDMQ_PEERS_DIR": str(directory / PEERS_DIR),
        "FEDMQ_PEERS": "{}",
    }
    values.update({key: secrets.token_urlsafe(SECRET_BYTES) for key in SECRET_KEYS})
    values["FEDMQ_AUDIT_SIGNING_KEY"], values["FEDMQ_AUDIT_PUBLIC_KEY"] = _audit_key_pair()
    # The serving service signs model exports with a key of its own (docs/serving.md).
    values["FEDMQ_SERVING_SIGNING_KEY"] = _audit_key_pair()[0]
    values.update(
        {
            "FEDMQ_IMAGE": "fedmq:0.1.0",
            "FEDMQ_WORKERS": "1",
            "FEDMQ_TASK_THREADS": "4",
            "FEDMQ_LINK_PORT": link_address.rpartition(":")[2],
            "FEDMQ_API_PORT": "8081",
            "GRAFANA_PORT": "3000",
            "JAEGER_UI_PORT": "16686",
            "FEDMQ_LOG_LEVEL": "INFO",
            "FEDMQ_OTLP_ENDPOINT": "",
            "PROMETHEUS_RETENTION": "15d",
        }
    )
    return values


def _audit_key_pair() -> tuple[str, str]:
    """A fresh Ed25519 key for the audit service, hex of its private and public halves."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    return key.private_bytes_raw().hex(), key.public_key().public_bytes_raw().hex()


# --- .env reading and writing ---------------------------------------------------------------


def _format_value(value: str) -> str:
    # Single quotes: compose (v1's python-dotenv and v2's parser alike) takes the value
    # literally, so JSON's double quotes and braces survive without escaping.
    if value and not re.fullmatch(r"[A-Za-z0-9_./:@+-]*", value):
        if "'" in value:
            raise SiteError(f"a .env value cannot contain a single quote: {value!r}")
        return f"'{value}'"
    return value


def write_env(path: Path, values: dict[str, str]) -> None:
    """Write .env atomically, mode 0600 from its first byte (it holds the party's secrets)."""
    text = (
        "# Written by `fedmq site init`: this party's settings for docker-compose.yml.\n"
        "# Holds secrets: keep it 0600 and out of version control. .env.example explains each.\n"
        + "".join(f"{key}={_format_value(value)}\n" for key, value in values.items())
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_env(path: Path) -> dict[str, str]:
    """KEY=value lines of a .env written by `write_env` (or edited by hand in the same style)."""
    if not path.exists():
        raise SiteError(f"no {path}: run `fedmq site init` first (or pass --dir)")
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SiteError(f"{path}:{number}: not KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


# --- init ----------------------------------------------------------------------------------


def _check_address(address: str, what: str) -> str:
    host, _, port = address.rpartition(":")
    if not _HOST_PORT.match(address) or not host or not 0 < int(port) < 65536:
        raise SiteError(f"{what} must be host:port (e.g. bank.example:7443), got {address!r}")
    return address


def init_site(
    directory: Path, party_id: str, federation: str, link_address: str, *, force: bool = False
) -> SiteInit:
    """Make the party's keys and CSR (fedgateway.pki) and write its .env with fresh secrets."""
    from fedgateway import pki

    if not pki.PARTY_ID_PATTERN.match(party_id):
        raise SiteError(f"party id {party_id!r} must match {pki.PARTY_ID_PATTERN.pattern}")
    if not federation or len(federation) > 64:
        raise SiteError("the federation name must be 1..64 characters")
    _check_address(link_address, "--link-address")
    directory = Path(directory)
    existing = [
        directory / name
        for name in (ENV_FILE, IDENTITY_DIR, PEERS_DIR)
        if (directory / name).exists()
    ]
    backup = None
    if existing:
        if not force:
            names = ", ".join(str(p) for p in existing)
            raise SiteError(
                f"{directory} already holds a site ({names}); refusing to overwrite its keys "
                "and secrets. Use another --dir, or --force to move them aside first"
            )
        # Never delete keys or secrets: they may be the only copy. Move them aside.
        backup = directory / f"site-backup-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
        backup.mkdir(parents=True)
        for path in existing:
            shutil.move(str(path), backup / path.name)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        csr = pki.make_party(party_id, directory / IDENTITY_DIR)
    except pki.PkiError as exc:
        raise SiteError(str(exc)) from None
    (directory / PEERS_DIR).mkdir(exist_ok=True)
    env_file = directory / ENV_FILE
    write_env(env_file, env_values(party_id, federation, link_address, directory))
    return SiteInit(directory=directory, env_file=env_file, csr=csr, backup=backup)


# --- install-cert ----------------------------------------------------------------------------


def install_cert(directory: Path, cert: Path, ca_cert: Path) -> PartyCertificate:
    """Check the CA's answer against this site's keys and party id, and install it (pki.install)."""
    from fedgateway import pki

    directory = Path(directory)
    values = read_env(directory / ENV_FILE)
    identity = directory / IDENTITY_DIR
    if not (identity / pki.PARTY_INFO).exists():
        raise SiteError(f"{identity} holds no party keys: run `fedmq site init` first")
    for path, what in ((cert, "--cert"), (ca_cert, "--ca")):
        if not Path(path).is_file():
            raise SiteError(f"{what} {path}: no such file")
    try:
        issued = pki.load_certificate(Path(cert))
        named = pki.party_id_of(issued)
    except ValueError as exc:
        raise SiteError(f"{cert} is not a fedmq party certificate: {exc}") from None
    if named != values.get("FEDMQ_PARTY_ID"):
        raise SiteError(
            f"{cert} is the certificate of party {named}, but this site is party "
            f"{values.get('FEDMQ_PARTY_ID')}: ask the CA for this party's certificate"
        )
    try:
        return pki.install(identity, Path(cert), Path(ca_cert))
    except (pki.PkiError, ValueError) as exc:
        raise SiteError(str(exc)) from None


# --- add-peer ------------------------------------------------------------------------------


def add_peer(
    directory: Path, party_id: str, address: str, cert: Path | None = None
) -> dict[str, object]:
    """Add (or update) a peer gateway in .env's FEDMQ_PEERS; with `cert`, check it against the
    federation CA and keep a copy in peers/. Returns the peer's entry."""
    from fedgateway import pki

    directory = Path(directory)
    env_file = directory / ENV_FILE
    values = read_env(env_file)
    if party_id == values.get("FEDMQ_PARTY_ID"):
        raise SiteError(f"party {party_id} is this site itself, not a peer")
    if not pki.PARTY_ID_PATTERN.match(party_id):
        raise SiteError(f"party id {party_id!r} must match {pki.PARTY_ID_PATTERN.pattern}")
    _check_address(address, "--address")
    entry: dict[str, object] = {"address": address}
    if cert is not None:
        ca_path = directory / IDENTITY_DIR / pki.CA_CERT
        if not ca_path.exists():
            raise SiteError(
                "no federation CA certificate installed yet: run `fedmq site install-cert` "
                "before adding peers with --cert"
            )
        if not Path(cert).is_file():
            raise SiteError(f"--cert {cert}: no such file")
        try:
            checked = pki.check_party_certificate(
                Path(cert).read_bytes(), pki.load_certificate(ca_path)
            )
        except pki.CertificateRefused as exc:
            raise SiteError(f"{cert} refused: {exc}") from None
        if checked.party_id != party_id:
            raise SiteError(
                f"{cert} is the certificate of party {checked.party_id}, not {party_id}"
            )
        peers_dir = directory / PEERS_DIR
        peers_dir.mkdir(exist_ok=True)
        shutil.copyfile(cert, peers_dir / f"{party_id}.cert.pem")
        (peers_dir / f"{party_id}.cert.pem").chmod(0o644)
        entry["certificates"] = [f"{PEERS_MOUNT}/{party_id}.cert.pem"]
    try:
        peers = json.loads(values.get("FEDMQ_PEERS") or "{}")
    except json.JSONDecodeError as exc:
        raise SiteError(f"FEDMQ_PEERS in {env_file} is not JSON: {exc}") from None
    if not isinstance(peers, dict):
        raise SiteError(f"FEDMQ_PEERS in {env_file} must be a JSON object")
    peers[party_id] = entry
    values["FEDMQ_PEERS"] = json.dumps(peers, separators=(",", ":"), sort_keys=True)
    write_env(env_file, values)
    return entry


# --- sync-identity -----------------------------------------------------------------------------


def sync_identity(source: Path, target: Path, uid: int, gid: int) -> list[str]:
    """Copy the gateway's identity files from the operator's folder into the gateway's volume,
    owned by the service user; returns the names copied. Each file is replaced atomically."""
    source, target = Path(source), Path(target)
    if not (source / "tls.cert.pem").exists():
        raise SiteError(
            f"{source} has no installed certificate: run `fedmq site install-cert` with the "
            "certificate the federation CA issued, then start again"
        )
    from fedgateway import pki

    try:
        # The gateway's own loader: keys and certificate match, the CA signed it, it is valid.
        pki.PartyIdentity.load(source)
    except (pki.PkiError, OSError, ValueError) as exc:
        raise SiteError(f"the identity in {source} is not usable: {exc}") from None
    names = [n for n in IDENTITY_FILES if (source / n).exists()]
    previous = sorted(p.name for p in (source / "previous").glob("*.cert.pem"))
    target.mkdir(parents=True, exist_ok=True)
    os.chown(target, uid, gid)
    target.chmod(0o700)
    if previous:
        (target / "previous").mkdir(exist_ok=True)
        os.chown(target / "previous", uid, gid)
    wanted = [*names[:-1], *(f"previous/{n}" for n in previous), names[-1]]
    for name in wanted:
        data = (source / name).read_bytes()
        dest = target / name
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        mode = 0o600 if name in SECRET_IDENTITY_FILES else 0o644
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chown(tmp, uid, gid)
        os.replace(tmp, dest)
    # Certificates of generations the source no longer keeps are no longer announced.
    for stale in (target / "previous").glob("*.cert.pem"):
        if stale.name not in previous:
            stale.unlink()
    return wanted


# --- CLI -----------------------------------------------------------------------------------

site_app = typer.Typer(
    help="A party's site for docker compose: keys, certificate, peers, .env.",
    no_args_is_help=True,
)
_console = Console(soft_wrap=True)
_errors = Console(stderr=True, soft_wrap=True)

DirOption = Annotated[
    Path, typer.Option("--dir", help="The site folder (.env, identity/, peers/).")
]


def _fail(exc: Exception) -> typer.Exit:
    _errors.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
    return typer.Exit(code=1)


def _compose_command(directory: Path) -> str:
    if (directory / "docker-compose.yml").exists():
        return f"cd {directory} && docker compose up -d"
    return f"docker compose --env-file {directory.resolve() / ENV_FILE} up -d"


@site_app.command("init")
def init_cmd(
    party: Annotated[str, typer.Option(help="This party's id, e.g. 10000.")],
    federation: Annotated[str, typer.Option(help="The federation's name.")],
    link_address: Annotated[
        str, typer.Option(help="host:port where other sites reach this gateway's link.")
    ],
    directory: DirOption = Path("."),
    force: Annotated[
        bool, typer.Option(help="Move an existing site's files aside and start anew.")
    ] = False,
) -> None:
    """Generate the party's keys and CSR and write .env with fresh random secrets."""
    try:
        site = init_site(directory, party, federation, link_address, force=force)
    except SiteError as exc:
        raise _fail(exc) from None
    if site.backup is not None:
        _console.print(f"[yellow]the earlier site's files were moved to {site.backup}[/yellow]")
    _console.print(f"[green]site for party {party}[/green] in {site.directory.resolve()}")
    _console.print(f"  keys and CSR  {site.directory / IDENTITY_DIR}/ (private keys 0600)")
    _console.print(f"  settings      {site.env_file} (0600; random secrets, API token inside)")
    _console.print("\n[bold]Next steps[/bold]")
    _console.print(
        f"  1. send the CSR [cyan]{site.csr}[/cyan] to the {federation} CA operator, who runs\n"
        f"     fedmq pki sign --ca <ca dir> --csr party.csr.pem --out {party}.cert.pem\n"
        "     and sends back the certificate and the CA certificate (ca.cert.pem)"
    )
    _console.print(
        f"  2. fedmq site install-cert --dir {directory} --cert {party}.cert.pem --ca ca.cert.pem"
    )
    _console.print(
        f"  3. per peer: fedmq site add-peer --dir {directory} --party <id> "
        "--address <host:7443> --cert <id>.cert.pem"
    )
    _console.print(f"  4. {_compose_command(site.directory)}")
    _console.print(
        f"  and tell the other parties this gateway's link address: [cyan]{link_address}[/cyan]"
    )


@site_app.command("install-cert")
def install_cert_cmd(
    cert: Annotated[Path, typer.Option(help="The certificate the federation CA issued.")],
    ca: Annotated[Path, typer.Option("--ca", help="The federation CA certificate.")],
    directory: DirOption = Path("."),
) -> None:
    """Check the issued certificate against this site's keys and party id, then install it."""
    try:
        checked = install_cert(directory, cert, ca)
    except SiteError as exc:
        raise _fail(exc) from None
    _console.print(
        f"[green]installed[/green]: party {checked.party_id}, signing key id "
        f"{checked.key_id[:16]}…, valid until {checked.not_after:%Y-%m-%d}"
    )
    _console.print(f"next: add peers (fedmq site add-peer), then {_compose_command(directory)}")


@site_app.command("add-peer")
def add_peer_cmd(
    party: Annotated[str, typer.Option(help="The peer's party id.")],
    address: Annotated[str, typer.Option(help="host:port of the peer gateway's link.")],
    cert: Annotated[
        Path | None,
        typer.Option(help="The peer's certificate (checked against the federation CA)."),
    ] = None,
    directory: DirOption = Path("."),
) -> None:
    """Add a peer gateway to .env (FEDMQ_PEERS); restart the gateway to apply it."""
    try:
        entry = add_peer(directory, party, address, cert)
    except SiteError as exc:
        raise _fail(exc) from None
    checked = " (certificate checked against the federation CA)" if "certificates" in entry else ""
    _console.print(f"[green]peer {party}[/green] at {address}{checked}")
    _console.print("apply with: docker compose up -d gateway")


@site_app.command("broker-users")
def broker_users_cmd(
    api: Annotated[
        str, typer.Option(help="the broker's management API (its admin user's base URL)")
    ] = "http://rabbitmq:15672",
    vhost: Annotated[str, typer.Option(help="the party's vhost")] = "fedmq",
    admin_user: Annotated[
        str, typer.Option(envvar="RABBITMQ_ADMIN_USER", help="the broker's admin user")
    ] = "fedmq",
    admin_password: Annotated[
        str,
        typer.Option(envvar="RABBITMQ_PASSWORD", help="its password", show_default=False),
    ] = "",
) -> None:
    """Create one broker user per service with only its own permissions (as `fedmq local`
    does); the passwords come from RABBITMQ_<SERVICE>_PASSWORD. Compose and Kubernetes run it
    once before the services start."""
    import httpx

    from fedmq.broker_users import (
        BROKER_SERVICES,
        BrokerUsersError,
        apply_broker_users,
        password_key,
    )

    passwords = {service: os.environ.get(password_key(service), "") for service in BROKER_SERVICES}
    with httpx.Client(base_url=api, auth=(admin_user, admin_password), timeout=10.0) as client:
        try:
            users = apply_broker_users(client, vhost, passwords)
        except (BrokerUsersError, httpx.HTTPError) as exc:
            raise _fail(exc) from None
    for user in users:
        _console.print(f"broker user {user.name}: {user.service}'s permissions on vhost {vhost}")


@site_app.command("sync-identity", hidden=True)
def sync_identity_cmd(
    source: Annotated[Path, typer.Option(help="The operator's identity folder (read-only).")],
    target: Annotated[Path, typer.Option(help="The gateway's identity volume.")],
    owner: Annotated[str, typer.Option(help="uid:gid of the service user.")] = "10001:10001",
) -> None:
    """Copy the identity into the gateway's volume (docker-compose.yml's `identity` one-shot)."""
    try:
        uid, _, gid = owner.partition(":")
        copied = sync_identity(source, target, int(uid), int(gid or uid))
    except (SiteError, OSError, ValueError) as exc:
        raise _fail(exc) from None
    _console.print(f"identity synced to {target}: {', '.join(copied)}")


# --- fedmq site policy ---------------------------------------------------------------------

policy_app = typer.Typer(
    help="This party's security policy (docs/policy.md): the floor every job must meet here.",
    no_args_is_help=True,
)
site_app.add_typer(policy_app, name="policy")

POLICY_FILE = Path("policy.yaml")
PolicyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="The policy file (YAML or JSON); the scheduler's and the worker's POLICY_FILE. "
        "Left out: the secure defaults.",
    ),
]

POLICY_TEMPLATE = """\
# This party's security policy (docs/policy.md). Point both FEDMQ_SCHEDULER_POLICY_FILE and
# FEDMQ_WORKER_POLICY_FILE at this file: the scheduler checks every job against it before
# accepting (or submitting) it, the worker every task before running it. A refusal names the
# rule, e.g. "policy.min_key_bits: key_bits 256 < 2048 (party 10000's policy, lr_0)".
version: 1
# Shortest Paillier key accepted in any job (key_bits params). Below 2048 needs
# allow_insecure_short_keys: true as well (tests only).
min_key_bits: 2048
# Accept a pipeline's insecure_short_keys: true.
allow_insecure_short_keys: false
# Component types this party runs; null: all of them.
allowed_components: null
# Per component type:
#   allow_revealing:   modes that reveal more of this party's data than the default
#                      protocol, accepted here (default: none), e.g. [reveal_host_scores]
#   bounds:            {param: {min: ..., max: ...}} for numeric params
#   initiator_may_set: params another party's pipeline may change from their defaults for
#                      this party (null: any)
#   allow_code:        import paths another party's pipeline may name for this party to
#                      import and run (homo_nn's model; default: none), exact strings
components: {}
#  hetero_lr:
#    allow_revealing: []
#    bounds: {epochs: {max: 100}}
#    initiator_may_set: [epochs, batch_size, learning_rate, decay, alpha, tol, early_stop, seed]
#  homo_nn:
#    allow_code: ["mypkg.nets:make_model"]
"""


def _policy(file: Path | None) -> SecurityPolicy:
    from fedflow.policy import load_policy

    return load_policy(file)


@policy_app.command("show")
def policy_show_cmd(file: PolicyFileOption = None) -> None:
    """Print the policy in force (every rule, defaults filled in) and the revealing modes the
    components declare."""
    from fedflow.descriptors import COMPONENT_NAMES
    from fedflow.policy import PolicyError, policy_yaml, revealing_modes

    try:
        policy = _policy(file)
    except PolicyError as exc:
        raise _fail(exc) from None
    source = str(file) if file is not None else "the secure defaults (no file)"
    _console.print(f"# policy: {source}", highlight=False)
    _console.print(policy_yaml(policy), end="", highlight=False, markup=False)
    modes = [m for name in sorted(COMPONENT_NAMES) for m in revealing_modes(name)]
    for mode in modes:
        allowed = mode.param in policy.rules_for(mode.component_type).allow_revealing
        _console.print(
            f"# {mode.component_type}.{mode.param} ({mode.what}, at the {mode.reveals}): "
            f"{'allowed' if allowed else 'refused'}",
            highlight=False,
            markup=False,
        )


@policy_app.command("check")
def policy_check_cmd(
    file: PolicyFileOption = None,
    pipeline: Annotated[
        Path | None, typer.Argument(help="A pipeline to check this party's part of.")
    ] = None,
    party: Annotated[
        str | None, typer.Option(help="This party's id (needed with a pipeline).")
    ] = None,
) -> None:
    """Check the policy file; with a pipeline, whether this party's policy accepts its part
    (exit status 1 with the rules it breaks)."""
    from fedflow.descriptors import Pipeline, PipelineError
    from fedflow.policy import PolicyError, check_pipeline

    try:
        policy = _policy(file)
        if pipeline is None:
            _console.print(f"policy ok: {file or 'the secure defaults'}", highlight=False)
            return
        if party is None:
            raise SiteError("--party is needed to check a pipeline (whose part of it?)")
        parsed = Pipeline.from_yaml(pipeline.read_text(encoding="utf-8"))
        if party not in parsed.party_ids():
            raise SiteError(f"party {party} is not a party of {pipeline}")
    except (PolicyError, PipelineError, SiteError, OSError) as exc:
        raise _fail(exc) from None
    violations = check_pipeline(policy, parsed, party)
    if violations:
        for violation in violations:
            _errors.print(f"refused: {violation}", highlight=False, markup=False)
        raise typer.Exit(code=1)
    _console.print(f"accepted: party {party}'s part of {parsed.name}", highlight=False)


@policy_app.command("init")
def policy_init_cmd(
    file: Annotated[Path, typer.Option("--file", help="Where to write it.")] = POLICY_FILE,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write the secure default policy, commented, for the operator to edit."""
    if file.exists() and not force:
        raise _fail(SiteError(f"{file} exists (--force overwrites it)"))
    file.write_text(POLICY_TEMPLATE, encoding="utf-8")
    _console.print(f"[green]policy written[/green] to {file} (the secure defaults)")
    _console.print(
        f"set FEDMQ_SCHEDULER_POLICY_FILE and FEDMQ_WORKER_POLICY_FILE to {file.resolve()}"
    )
