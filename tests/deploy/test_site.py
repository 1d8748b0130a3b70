"""`fedmq site ...`: an empty folder to a party ready to join, as an operator runs it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from fedgateway import pki
from typer.testing import CliRunner

from fedmq.cli import app
from fedmq.site_cli import SECRET_KEYS, read_env, sync_identity
from tests.deploy.helpers import ENV_EXAMPLE, FEDMQ_SERVICES, compose_config, load_compose

runner = CliRunner()


def fedmq(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def init(directory: Path, party: str = "10000", *extra: str) -> Any:
    return fedmq(
        "site",
        "init",
        "--party",
        party,
        "--federation",
        "acme",
        "--link-address",
        "bank.example:7443",
        "--dir",
        str(directory),
        *extra,
    )


@pytest.fixture
def ca(tmp_path: Path) -> pki.CertificateAuthority:
    pki.init_ca(tmp_path / "ca", "acme")
    return pki.CertificateAuthority.load(tmp_path / "ca")


def issue(ca: pki.CertificateAuthority, csr: Path, out: Path) -> Path:
    out.write_bytes(pki.sign_csr(ca, csr.read_bytes()))
    return out


def install_cert(site: Path, cert: Path, ca_dir: Path) -> Any:
    return fedmq(
        "site",
        "install-cert",
        "--cert",
        str(cert),
        "--ca",
        str(ca_dir / "ca.cert.pem"),
        "--dir",
        str(site),
    )


def add_peer(site: Path, party: str, address: str, cert: Path | None = None) -> Any:
    with_cert = () if cert is None else ("--cert", str(cert))
    return fedmq(
        "site", "add-peer", "--party", party, "--address", address, *with_cert, "--dir", str(site)
    )


def sync_identity_cli(source: Path, target: Path) -> Any:
    owner = f"{os.getuid()}:{os.getgid()}"
    return fedmq(
        "site",
        "sync-identity",
        "--source",
        str(source),
        "--target",
        str(target),
        "--owner",
        owner,
    )


def installed_site(tmp_path: Path, ca: pki.CertificateAuthority) -> Path:
    """A site of party 10000 with its certificate from `ca` installed."""
    site = tmp_path / "site"
    init(site)
    issue(ca, site / "identity" / "party.csr.pem", tmp_path / "own.pem")
    pki.install(site / "identity", tmp_path / "own.pem", tmp_path / "ca" / "ca.cert.pem")
    return site


def settings_from(env: dict[str, str], service: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings class built from exactly the environment compose gives it."""
    from fedcommon.service_registry import service as registered
    from fedgateway.settings import load_settings

    for key in list(os.environ):
        if key.startswith("FEDMQ_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    if service == "gateway":
        return load_settings()
    return registered(service).settings_class()()


# --- init --------------------------------------------------------------------------------------


def test_init_makes_keys_csr_and_an_env_with_strong_secrets(tmp_path: Path) -> None:
    # Execute
    site = tmp_path / "site"
    done = init(site)

    # Assert: keys (private, 0600) and a CSR naming the party
    assert done.exit_code == 0, done.output
    identity = site / "identity"
    for key in ("tls.key.pem", "signing.key.pem"):
        assert stat.S_IMODE((identity / key).stat().st_mode) == 0o600
    csr = x509.load_pem_x509_csr((identity / "party.csr.pem").read_bytes())
    assert pki.party_id_of(csr) == "10000"
    pki.signing_key_of(csr)  # the signing key's proof of possession verifies
    # ...an .env for compose, private, with the party and its own random secrets
    env = read_env(site / ".env")
    assert stat.S_IMODE((site / ".env").stat().st_mode) == 0o600
    assert env["FEDMQ_PARTY_ID"] == "10000"
    assert env["FEDMQ_IDENTITY_DIR"] == str((site / "identity").resolve())
    secrets = [env[k] for k in SECRET_KEYS]
    assert len(set(secrets)) == len(secrets)
    assert all(len(s) >= 32 and s.lower() not in ("changeme", "changethis") for s in secrets)
    # ...and the next steps, starting with the CSR to send
    assert "party.csr.pem" in done.output and "install-cert" in done.output


def test_init_writes_the_same_keys_as_env_example(tmp_path: Path) -> None:
    init(tmp_path / "site")
    assert list(read_env(tmp_path / "site" / ".env")) == list(read_env(ENV_EXAMPLE))


def test_the_generated_env_is_accepted_by_every_service_in_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a site, and each service's environment as compose builds it from its .env
    init(tmp_path / "site")
    services = load_compose(read_env(tmp_path / "site" / ".env"))["services"]

    for name in FEDMQ_SERVICES:
        # Execute
        settings = settings_from(services[name]["environment"], name, monkeypatch)

        # Assert: production, no placeholder refused, real connections named
        assert settings.environment == "production"
        assert settings.party_id == "10000"
        # each service as its own broker user (fedmq site broker-users makes them)
        assert settings.bus_url.get_secret_value().startswith(f"amqp://fedmq-{name}:")
        assert settings.database_url.get_secret_value().startswith("postgresql+psycopg://")
        assert settings.otlp_endpoint is None
    gateway = settings_from(services["gateway"]["environment"], "gateway", monkeypatch)
    assert [t.get_secret_value() for t in gateway.api_tokens] == [
        read_env(tmp_path / "site" / ".env")["FEDMQ_API_TOKEN"]
    ]


def test_the_example_env_with_placeholders_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    services = load_compose(read_env(ENV_EXAMPLE))["services"]
    for name in FEDMQ_SERVICES:
        with pytest.raises(ValidationError, match="placeholder"):
            settings_from(services[name]["environment"], name, monkeypatch)


def test_compose_hands_the_services_settings_they_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a site with a peer, the real compose tool's resolved configuration
    site = tmp_path / "site"
    init(site)
    add_peer(site, "9999", "peer.example:7443")
    done = compose_config(site / ".env")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]

    # Execute / Assert: every service starts from it in production
    for name in FEDMQ_SERVICES:
        settings = settings_from(services[name]["environment"], name, monkeypatch)
        assert settings.environment == "production"
    gateway = settings_from(services["gateway"]["environment"], "gateway", monkeypatch)
    assert gateway.peers["9999"].address == "peer.example:7443"


def test_init_twice_without_force_fails_and_force_keeps_the_old_keys(tmp_path: Path) -> None:
    site = tmp_path / "site"
    init(site)
    first_key = (site / "identity" / "tls.key.pem").read_bytes()

    again = init(site)
    assert again.exit_code == 1
    assert "already holds a site" in again.output and "--force" in again.output
    assert (site / "identity" / "tls.key.pem").read_bytes() == first_key

    forced = init(site, "10000", "--force")
    assert forced.exit_code == 0, forced.output
    assert (site / "identity" / "tls.key.pem").read_bytes() != first_key
    backups = list(site.glob("site-backup-*/identity/tls.key.pem"))
    assert [b.read_bytes() for b in backups] == [first_key]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--party", "bad id!"), "party id"),
        (("--link-address", "no-port"), "host:port"),
    ],
)
def test_init_refuses_bad_input_clearly(
    tmp_path: Path, args: tuple[str, str], message: str
) -> None:
    base = {"--party": "10000", "--federation": "acme", "--link-address": "bank.example:7443"}
    base[args[0]] = args[1]
    flat = [x for kv in base.items() for x in kv]
    done = fedmq("site", "init", *flat, "--dir", str(tmp_path / "site"))
    assert done.exit_code == 1
    assert message in done.output
    assert not (tmp_path / "site" / ".env").exists()


# --- install-cert --------------------------------------------------------------------------------


def test_install_cert_from_the_federation_ca(tmp_path: Path, ca: pki.CertificateAuthority) -> None:
    # Prepare: the CSR round trip
    site = tmp_path / "site"
    init(site)
    cert = issue(ca, site / "identity" / "party.csr.pem", tmp_path / "10000.cert.pem")

    # Execute
    done = install_cert(site, cert, tmp_path / "ca")

    # Assert: the gateway can load the identity
    assert done.exit_code == 0, done.output
    assert "installed" in done.output and "party 10000" in done.output
    identity = pki.PartyIdentity.load(site / "identity")
    assert identity.party_id == "10000"


def test_install_cert_of_another_party_fails_clearly(
    tmp_path: Path, ca: pki.CertificateAuthority
) -> None:
    # Prepare: a certificate the CA issued to party 9999
    site = tmp_path / "site"
    init(site)
    other = tmp_path / "9999"
    csr = pki.make_party("9999", other)
    cert = issue(ca, csr, tmp_path / "9999.cert.pem")

    # Execute
    done = install_cert(site, cert, tmp_path / "ca")

    # Assert: refused, saying whose certificate it is; nothing installed
    assert done.exit_code == 1
    assert "party 9999" in done.output and "party 10000" in done.output
    assert not (site / "identity" / "tls.cert.pem").exists()


def test_install_cert_for_other_keys_of_the_same_party_fails(
    tmp_path: Path, ca: pki.CertificateAuthority
) -> None:
    # A certificate for party 10000 but someone else's keys (e.g. an old CSR)
    site = tmp_path / "site"
    init(site)
    csr = pki.make_party("10000", tmp_path / "elsewhere")
    cert = issue(ca, csr, tmp_path / "wrong.cert.pem")
    done = install_cert(site, cert, tmp_path / "ca")
    assert done.exit_code == 1
    assert "matches neither" in done.output


# --- add-peer ------------------------------------------------------------------------------


def test_add_peer_checks_its_certificate_and_updates_the_env(
    tmp_path: Path, ca: pki.CertificateAuthority
) -> None:
    # Prepare: an installed site and a peer certified by the same CA
    site = installed_site(tmp_path, ca)
    peer_cert = issue(ca, pki.make_party("9999", tmp_path / "p"), tmp_path / "9999.cert.pem")

    # Execute
    done = add_peer(site, "9999", "peer.example:7443", peer_cert)

    # Assert: the peer is in FEDMQ_PEERS in the gateway's format, its certificate kept
    assert done.exit_code == 0, done.output
    peers = json.loads(read_env(site / ".env")["FEDMQ_PEERS"])
    assert peers == {
        "9999": {
            "address": "peer.example:7443",
            "certificates": ["/etc/fedmq/peers/9999.cert.pem"],
        }
    }
    assert (site / "peers" / "9999.cert.pem").read_bytes() == peer_cert.read_bytes()
    assert stat.S_IMODE((site / ".env").stat().st_mode) == 0o600


def test_add_peer_refuses_a_certificate_of_a_foreign_ca_or_another_party(
    tmp_path: Path, ca: pki.CertificateAuthority
) -> None:
    site = installed_site(tmp_path, ca)
    pki.init_ca(tmp_path / "rogue", "rogue")
    rogue = pki.CertificateAuthority.load(tmp_path / "rogue")
    foreign = issue(rogue, pki.make_party("9999", tmp_path / "p"), tmp_path / "foreign.pem")

    refused = add_peer(site, "9999", "peer.example:7443", foreign)
    cert_of_9999 = issue(ca, tmp_path / "p" / "party.csr.pem", tmp_path / "p.pem")
    wrong_party = add_peer(site, "9998", "peer.example:7443", cert_of_9999)
    itself = add_peer(site, "10000", "x.example:7443")

    assert refused.exit_code == 1 and "foreign_ca" in refused.output
    assert wrong_party.exit_code == 1 and "party 9999, not 9998" in wrong_party.output
    assert itself.exit_code == 1 and "this site itself" in itself.output
    assert json.loads(read_env(site / ".env")["FEDMQ_PEERS"]) == {}


# --- sync-identity (the compose one-shot) ------------------------------------------------------


def test_sync_identity_copies_what_the_gateway_loads(
    tmp_path: Path, ca: pki.CertificateAuthority
) -> None:
    site = installed_site(tmp_path, ca)

    copied = sync_identity(site / "identity", tmp_path / "volume", os.getuid(), os.getgid())

    assert copied[-1] == "tls.cert.pem"  # the certificate lands after the keys
    assert pki.PartyIdentity.load(tmp_path / "volume").party_id == "10000"
    assert stat.S_IMODE((tmp_path / "volume" / "tls.key.pem").stat().st_mode) == 0o600
    assert not (tmp_path / "volume" / "party.csr.pem").exists()


def test_sync_identity_without_a_certificate_says_to_install_one(tmp_path: Path) -> None:
    init(tmp_path / "site")
    done = sync_identity_cli(tmp_path / "site" / "identity", tmp_path / "volume")
    assert done.exit_code == 1
    assert "install-cert" in done.output


def test_sync_identity_refuses_keys_that_do_not_match_the_certificate(
    tmp_path: Path, ca: pki.CertificateAuthority
) -> None:
    # Prepare: an installed site whose TLS key was then replaced by another one
    site = installed_site(tmp_path, ca)
    pki.make_party("10000", tmp_path / "other")
    key = site / "identity" / "tls.key.pem"
    key.write_bytes((tmp_path / "other" / "tls.key.pem").read_bytes())

    # Execute
    done = sync_identity_cli(site / "identity", tmp_path / "volume")

    # Assert: nothing copied for the gateway to trip over
    assert done.exit_code == 1
    assert "not usable" in done.output and "do not match" in done.output
    assert not (tmp_path / "volume" / "tls.key.pem").exists()
