"""`fedmq pki ...`: the federation CA and each party's keys, one command per step.

    fedmq pki init-ca    --dir ca/ --federation NAME            (the CA operator, once)
    fedmq pki make-party --party 9999 --dir parties/9999/       (each party: keys + CSR)
    fedmq pki sign       --ca ca/ --csr party.csr.pem --out 9999.cert.pem   (the CA operator)
    fedmq pki install    --dir parties/9999/ --cert 9999.cert.pem --ca-cert ca/ca.cert.pem
    fedmq pki show       --cert parties/9999/tls.cert.pem

Rotation: `make-party --rotate` makes new keys beside the current ones, then `sign` and
`install` as above; the running gateway picks the new keys up (SIGHUP or its file watch).
Private keys never leave the directory they were generated in (docs/pki.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

pki_app = typer.Typer(help="Federation CA and party keys/certificates.", no_args_is_help=True)


@contextmanager
def _exit_1_on(*refusals: type[Exception]) -> Iterator[None]:
    """One of `refusals` ends the command with status 1 and its message on stderr."""
    try:
        yield
    except refusals as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


@pki_app.command("init-ca")
def init_ca(
    directory: Annotated[Path, typer.Option("--dir", help="Where the CA key and cert go.")],
    federation: Annotated[str, typer.Option(help="The federation's name (in every cert).")],
    days: Annotated[int, typer.Option(help="CA certificate lifetime.")] = 3650,
) -> None:
    """Create the federation CA (its private key stays in --dir, mode 0600)."""
    from fedgateway import pki

    with _exit_1_on(pki.PkiError):
        cert = pki.init_ca(directory, federation, days=days)
    typer.echo(f"CA certificate: {cert}")


@pki_app.command("make-party")
def make_party(
    party: Annotated[str, typer.Option(help="The party id, e.g. 9999.")],
    directory: Annotated[Path, typer.Option("--dir", help="The party's own directory.")],
    rotate: Annotated[
        bool, typer.Option(help="Make new keys for a rotation (kept in pending/ until install).")
    ] = False,
) -> None:
    """Generate the party's TLS and signing keys locally and write a CSR for the CA."""
    from fedgateway import pki

    with _exit_1_on(pki.PkiError):
        csr = pki.make_party(party, directory, rotate=rotate)
    typer.echo(f"CSR (send this to the CA operator): {csr}")


@pki_app.command("sign")
def sign(
    ca: Annotated[Path, typer.Option(help="The CA directory.")],
    csr: Annotated[Path, typer.Option(help="The party's CSR file.")],
    out: Annotated[Path, typer.Option(help="Where to write the certificate.")],
    days: Annotated[int, typer.Option(help="Certificate lifetime.")] = 365,
) -> None:
    """CA side: check a CSR (party id, signing-key proof) and issue the certificate."""
    from fedgateway import pki

    with _exit_1_on(pki.PkiError):
        path = pki.sign_csr_file(ca, csr, out, days=days)
    typer.echo(f"certificate: {path}")


@pki_app.command("install")
def install(
    directory: Annotated[Path, typer.Option("--dir", help="The party's directory.")],
    cert: Annotated[Path, typer.Option(help="The certificate the CA issued.")],
    ca_cert: Annotated[Path, typer.Option("--ca-cert", help="The federation CA certificate.")],
) -> None:
    """Install the issued certificate (completes a rotation if it matches pending keys)."""
    from fedgateway import pki

    with _exit_1_on(pki.PkiError, OSError, ValueError):
        checked = pki.install(directory, cert, ca_cert)
    typer.echo(
        f"installed: party {checked.party_id}, signing key id {checked.key_id}, "
        f"valid until {checked.not_after:%Y-%m-%d}"
    )


@pki_app.command("show")
def show(
    cert: Annotated[Path, typer.Option(help="A party certificate.")],
    ca_cert: Annotated[
        Path | None, typer.Option("--ca-cert", help="Check against this CA.")
    ] = None,
) -> None:
    """Print a party certificate's party id, signing key id and validity."""
    from cryptography import x509
    from fedgateway import pki

    data = cert.read_bytes()
    parsed = x509.load_pem_x509_certificate(data)
    with _exit_1_on(ValueError):
        party = pki.party_id_of(parsed)
        key = pki.key_id(pki.signing_key_of(parsed))
    typer.echo(
        f"party: {party}\nsigning key id: {key}\nfingerprint: {pki.cert_fingerprint(parsed)}"
    )
    typer.echo(f"valid: {parsed.not_valid_before_utc} .. {parsed.not_valid_after_utc}")
    if ca_cert is not None:
        with _exit_1_on(pki.CertificateRefused):
            pki.check_party_certificate(data, pki.load_certificate(ca_cert))
        typer.echo("checked against the CA: ok")
