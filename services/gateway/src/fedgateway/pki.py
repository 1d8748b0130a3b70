"""The federation's PKI: a CA, each party's keys and certificate, rotation, and checking a peer.

Trust model (docs/pki.md has the long form):
- One federation CA signs one certificate per party key generation. The CA never sees a private
  key: a party generates its TLS key (EC P-256) and its Ed25519 signing key locally and sends the
  CA a certificate signing request (CSR).
- The certificate names the party twice: subject CN=party-<id> and a URI SAN
  `urn:fedmq:party:<id>` (the SAN is what we read; the CN is for humans and must agree).
- The certificate binds the party's Ed25519 *signing* public key with a non-critical extension
  (OID `SIGNING_KEY_OID`, under a UUID arc per ITU-T X.667, so no registration is needed). Its
  value is DER `SEQUENCE { OCTET STRING pubkey(32), OCTET STRING pop(64) }` where `pop` is the
  signing key's Ed25519 signature over `POP_CONTEXT || party_id || 0x00 || TLS SPKI DER`: proof
  that whoever asked for the certificate holds the signing key too, and that the two keys belong
  together. The CA checks it before signing; peers check the CA's signature over the whole.
- A signing key's id (`envelope.signer_key_id`) is fedcrypto's VerifyKey.fingerprint(): hex
  SHA-256 of the raw 32-byte public key.

Party directory layout (all written by the functions below; private keys 0600):
    party.json           {"party_id": "9999"}
    tls.key.pem          current TLS private key (PKCS#8, EC P-256)       -- secret
    signing.key.pem      current Ed25519 signing key (PKCS#8)             -- secret
    party.csr.pem        CSR of the current keys
    tls.cert.pem         the installed certificate of the current keys
    ca.cert.pem          the federation CA certificate: the only trust anchor
    pending/             rotation: new keys + CSR waiting for the CA (same file names)
    previous/<key id>.cert.pem   certificates of earlier generations (public only), still sent
                         to peers in the link hello until they expire, so messages signed just
                         before a rotation still verify.
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

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fedcrypto.signing import BadSignature, SigningKey, VerifyKey

# 2.25.<UUID as integer> is an OID arc anyone may mint (ITU-T X.667); .1 under it is ours.
FEDMQ_OID_ARC = "2.25.57120645018837757817380211829501018278"
SIGNING_KEY_OID = x509.ObjectIdentifier(FEDMQ_OID_ARC + ".1")
PARTY_URI_PREFIX = "urn:fedmq:party:"
POP_CONTEXT = b"fedmq signing-key proof of possession v1\x00"
PARTY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

CA_KEY = "ca.key.pem"
CA_CERT = "ca.cert.pem"
CA_INFO = "ca.json"
PARTY_INFO = "party.json"
TLS_KEY = "tls.key.pem"
SIGNING_KEY = "signing.key.pem"
CSR = "party.csr.pem"
TLS_CERT = "tls.cert.pem"
PENDING = "pending"
PREVIOUS = "previous"

# Certificates are valid from a little before "now" so that a peer whose clock is slightly behind
# does not see a brand-new certificate as not yet valid.
_BACKDATE = dt.timedelta(minutes=5)


class PkiError(Exception):
    """A PKI operation cannot go ahead; the message says why and what to do."""


class CertificateRefused(PkiError):
    """A peer's certificate is not acceptable. `reason` is a short code used in metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- small helpers -------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_party_id(party_id: str) -> str:
    if not PARTY_ID_PATTERN.match(party_id):
        raise PkiError(f"party id {party_id!r} must match {PARTY_ID_PATTERN.pattern}")
    return party_id


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Write atomically (temp file + rename); secrets are created 0600 before any byte lands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pop_message(party_id: str, tls_spki_der: bytes) -> bytes:
    return POP_CONTEXT + party_id.encode() + b"\x00" + tls_spki_der


def _encode_signing_ext(pubkey: bytes, pop: bytes) -> bytes:
    # DER SEQUENCE { OCTET STRING (32), OCTET STRING (64) }: all lengths < 128, short form.
    assert len(pubkey) == 32 and len(pop) == 64
    inner = b"\x04\x20" + pubkey + b"\x04\x40" + pop
    return b"\x30" + bytes([len(inner)]) + inner


def _decode_signing_ext(value: bytes) -> tuple[bytes, bytes]:
    if (
        len(value) != 102
        or value[:2] != b"\x30\x64"
        or value[2:4] != b"\x04\x20"
        or value[36:38] != b"\x04\x40"
    ):
        raise ValueError(
            "signing-key extension is not SEQUENCE { OCTET STRING(32), OCTET STRING(64) }"
        )
    return value[4:36], value[38:102]


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Key usage of the CA's certificate (signs, certificates and CRLs too) or of a party's TLS
    certificate (signs and agrees keys)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def key_id(verify_key: VerifyKey) -> str:
    """The signing key's id carried in envelope.signer_key_id."""
    return verify_key.fingerprint()


def cert_fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER: its name in revocation lists and logs."""
    return cert.fingerprint(hashes.SHA256()).hex()


# --- reading certificates ------------------------------------------------------------------


def party_id_of(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    """The party id named by a certificate or CSR (URI SAN, cross-checked with the CN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("no subjectAltName: not a fedmq party certificate") from None
    uris = [
        u
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(PARTY_URI_PREFIX)
    ]
    if len(uris) != 1:
        raise ValueError(f"expected exactly one {PARTY_URI_PREFIX}<id> URI SAN, found {len(uris)}")
    party_id = uris[0][len(PARTY_URI_PREFIX) :]
    if not PARTY_ID_PATTERN.match(party_id):
        raise ValueError(f"party id {party_id!r} in the certificate is malformed")
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != f"party-{party_id}":
        raise ValueError(f"subject CN does not say party-{party_id}")
    return party_id


def _signing_ext(cert: x509.Certificate | x509.CertificateSigningRequest) -> tuple[bytes, bytes]:
    try:
        ext = cert.extensions.get_extension_for_oid(SIGNING_KEY_OID).value
    except x509.ExtensionNotFound:
        raise ValueError("no fedmq signing-key extension") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise ValueError("signing-key extension has an unexpected type")
    return _decode_signing_ext(ext.value)


def signing_key_of(cert: x509.Certificate | x509.CertificateSigningRequest) -> VerifyKey:
    """The Ed25519 signing key bound by a certificate or CSR, after checking its proof."""
    raw, pop = _signing_ext(cert)
    verify_key = VerifyKey.from_bytes(raw)
    tls_key = cert.public_key()
    if not isinstance(tls_key, ec.EllipticCurvePublicKey):
        raise ValueError("TLS key is not an EC key")
    try:
        verify_key.verify(_pop_message(party_id_of(cert), _spki_der(tls_key)), pop)
    except BadSignature:
        raise ValueError("signing-key proof of possession does not verify") from None
    return verify_key


@dataclass(frozen=True)
class PartyCertificate:
    """A checked party certificate: who it names and which signing key it binds."""

    party_id: str
    signing_key: VerifyKey
    key_id: str
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    pem: bytes


def check_party_certificate(
    cert: x509.Certificate | bytes,
    ca_cert: x509.Certificate,
    *,
    now: dt.datetime | None = None,
    revoked: frozenset[str] = frozenset(),
) -> PartyCertificate:
    """Check that `cert` was issued by the federation CA, is within its validity, not revoked,
    and names a party with a valid signing-key binding. Raises CertificateRefused(reason)."""
    if isinstance(cert, bytes):
        try:
            cert = (
                x509.load_pem_x509_certificate(cert)
                if cert.startswith(b"-----")
                else x509.load_der_x509_certificate(cert)
            )
        except ValueError as exc:
            raise CertificateRefused("bad_certificate", f"cannot parse: {exc}") from None
    now = now or _now()
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateRefused("foreign_ca", "not issued by the federation CA") from None
    if now < cert.not_valid_before_utc:
        raise CertificateRefused("not_yet_valid", f"valid from {cert.not_valid_before_utc}")
    if now > cert.not_valid_after_utc:
        raise CertificateRefused("expired", f"expired at {cert.not_valid_after_utc}")
    fingerprint = cert_fingerprint(cert)
    try:
        party_id = party_id_of(cert)
        verify_key = signing_key_of(cert)
    except ValueError as exc:
        raise CertificateRefused("bad_certificate", str(exc)) from None
    if fingerprint in revoked or key_id(verify_key) in revoked:
        raise CertificateRefused("revoked", f"certificate {fingerprint[:16]} is revoked")
    return PartyCertificate(
        party_id=party_id,
        signing_key=verify_key,
        key_id=key_id(verify_key),
        fingerprint=fingerprint,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        pem=cert.public_bytes(serialization.Encoding.PEM),
    )


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


# --- CA side -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    federation: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def load(cls, ca_dir: Path) -> CertificateAuthority:
        ca_dir = Path(ca_dir)
        if not (ca_dir / CA_KEY).exists():
            raise PkiError(f"no CA in {ca_dir}: run `fedmq pki init-ca --dir {ca_dir}` first")
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{ca_dir / CA_KEY} is not an EC private key")
        info = json.loads((ca_dir / CA_INFO).read_text())
        return cls(federation=info["federation"], key=key, cert=load_certificate(ca_dir / CA_CERT))


def init_ca(ca_dir: Path, federation: str, *, days: int = 3650) -> Path:
    """Create the federation CA (EC P-256 key, self-signed certificate); returns the cert path.

    Refuses to overwrite an existing CA: a new CA would orphan every party's certificate."""
    ca_dir = Path(ca_dir)
    if (ca_dir / CA_KEY).exists():
        raise PkiError(f"a CA already exists in {ca_dir}; refusing to overwrite it")
    if not federation or len(federation) > 64:
        raise PkiError("federation name must be 1..64 characters")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{federation} federation CA"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(ca=True),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write(
        ca_dir / CA_KEY,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        secret=True,
    )
    _write(ca_dir / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
    _write(ca_dir / CA_INFO, json.dumps({"federation": federation}).encode())
    return ca_dir / CA_CERT


def sign_csr(
    ca: CertificateAuthority,
    csr_pem: bytes,
    *,
    days: int = 365,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> bytes:
    """Check a party's CSR and issue its certificate (PEM). The CA sees only public keys.

    `not_before`/`not_after` override the validity (tests make expired certificates with them)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise PkiError("the CSR's self-signature does not verify")
    try:
        party_id = party_id_of(csr)
        signing_key_of(csr)  # checks the proof of possession
        raw, pop = _signing_ext(csr)
    except ValueError as exc:
        raise PkiError(f"CSR refused: {exc}") from None
    tls_key = csr.public_key()
    if not isinstance(tls_key, ec.EllipticCurvePublicKey):
        raise PkiError("CSR refused: the TLS key must be an EC key")
    now = _now()
    start = not_before or now - _BACKDATE
    end = not_after or now + dt.timedelta(days=days)
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ca.federation),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"party-{party_id}"),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(tls_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(PARTY_URI_PREFIX + party_id)]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(tls_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(
            x509.UnrecognizedExtension(SIGNING_KEY_OID, _encode_signing_ext(raw, pop)),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def sign_csr_file(ca_dir: Path, csr_path: Path, out_path: Path, *, days: int = 365) -> Path:
    """`fedmq pki sign`: read a CSR file, write the issued certificate."""
    cert = sign_csr(CertificateAuthority.load(ca_dir), Path(csr_path).read_bytes(), days=days)
    _write(Path(out_path), cert)
    return Path(out_path)


# --- party side ----------------------------------------------------------------------------


def _make_keys_and_csr(party_id: str, target: Path) -> Path:
    tls_key = ec.generate_private_key(ec.SECP256R1())
    signing_key = SigningKey.generate()
    pop = signing_key.sign(_pop_message(party_id, _spki_der(tls_key.public_key())))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"party-{party_id}")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(PARTY_URI_PREFIX + party_id)]
            ),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(
                SIGNING_KEY_OID, _encode_signing_ext(signing_key.verify_key().to_bytes(), pop)
            ),
            critical=False,
        )
        .sign(tls_key, hashes.SHA256())
    )
    _write(
        target / TLS_KEY,
        tls_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        secret=True,
    )
    _write(target / SIGNING_KEY, signing_key.to_pem(), secret=True)
    _write(target / CSR, csr.public_bytes(serialization.Encoding.PEM))
    return target / CSR


def make_party(party_id: str, party_dir: Path, *, rotate: bool = False) -> Path:
    """Generate a party's TLS and signing keys locally and write its CSR; returns the CSR path.

    With `rotate=True` the new keys go to `pending/` and the current ones keep working until the
    signed certificate is installed. Without it, existing keys are never overwritten."""
    _check_party_id(party_id)
    party_dir = Path(party_dir)
    info = party_dir / PARTY_INFO
    if info.exists():
        existing = json.loads(info.read_text())["party_id"]
        if existing != party_id:
            raise PkiError(f"{party_dir} belongs to party {existing}, not {party_id}")
    if rotate:
        if not (party_dir / TLS_CERT).exists():
            raise PkiError(f"{party_dir} has no installed certificate to rotate from")
        pending = party_dir / PENDING
        if pending.exists():
            shutil.rmtree(pending)
        return _make_keys_and_csr(party_id, pending)
    if (party_dir / TLS_KEY).exists():
        raise PkiError(
            f"{party_dir} already holds keys; use rotate=True (--rotate) to make new ones"
        )
    _write(info, json.dumps({"party_id": party_id}).encode())
    return _make_keys_and_csr(party_id, party_dir)


def _private_tls_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an EC private key")
    return key


def install(party_dir: Path, cert_path: Path, ca_cert_path: Path) -> PartyCertificate:
    """Install a signed certificate (and the CA certificate) into a party directory.

    Checks the certificate against the CA, the party id, and the local keys. If it belongs to
    the keys in `pending/`, this completes a rotation: the current certificate moves to
    `previous/`, the old private keys are deleted, and the pending keys become current."""
    party_dir = Path(party_dir)
    party_id = json.loads((party_dir / PARTY_INFO).read_text())["party_id"]
    ca_cert = load_certificate(Path(ca_cert_path))
    cert_pem = Path(cert_path).read_bytes()
    try:
        checked = check_party_certificate(cert_pem, ca_cert)
    except CertificateRefused as exc:
        raise PkiError(f"certificate refused: {exc}") from None
    if checked.party_id != party_id:
        raise PkiError(f"certificate is for party {checked.party_id}, this is party {party_id}")
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert_spki = _spki_der(cert.public_key())  # type: ignore[arg-type]

    def matches(keys_dir: Path) -> bool:
        if not (keys_dir / TLS_KEY).exists():
            return False
        tls_ok = _spki_der(_private_tls_key(keys_dir / TLS_KEY).public_key()) == cert_spki
        signing = SigningKey.from_pem((keys_dir / SIGNING_KEY).read_bytes()).verify_key()
        return tls_ok and signing == checked.signing_key

    pending = party_dir / PENDING
    if matches(pending):
        current = party_dir / TLS_CERT
        if current.exists():
            old = check_party_certificate(
                current.read_bytes(), ca_cert, now=load_certificate(current).not_valid_before_utc
            )
            _write(party_dir / PREVIOUS / f"{old.key_id}.cert.pem", current.read_bytes())
        _write(party_dir / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
        # Order matters for a gateway reloading concurrently: keys first, certificate last; the
        # loader refuses a certificate that does not match the keys and keeps the old identity.
        for name in (TLS_KEY, SIGNING_KEY, CSR):
            os.replace(pending / name, party_dir / name)
        _write(party_dir / TLS_CERT, cert_pem)
        shutil.rmtree(pending)
        return checked
    if not matches(party_dir):
        raise PkiError("certificate matches neither the current nor the pending keys")
    _write(party_dir / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(party_dir / TLS_CERT, cert_pem)
    return checked


@dataclass(frozen=True)
class PartyIdentity:
    """Everything a gateway needs about its own party, loaded from a party directory."""

    party_id: str
    directory: Path
    tls_cert_path: Path
    tls_key_path: Path
    ca_cert_path: Path
    ca_cert: x509.Certificate
    signing_key: SigningKey
    key_id: str
    certificate: PartyCertificate
    previous: tuple[PartyCertificate, ...]
    """Earlier generations still valid: sent to peers so in-flight old signatures verify."""

    @classmethod
    def load(cls, party_dir: Path, *, now: dt.datetime | None = None) -> PartyIdentity:
        party_dir = Path(party_dir)
        if not (party_dir / TLS_CERT).exists():
            raise PkiError(f"{party_dir} has no installed certificate: run `fedmq pki install`")
        party_id = json.loads((party_dir / PARTY_INFO).read_text())["party_id"]
        ca_cert = load_certificate(party_dir / CA_CERT)
        try:
            current = check_party_certificate((party_dir / TLS_CERT).read_bytes(), ca_cert, now=now)
        except CertificateRefused as exc:
            raise PkiError(f"own certificate unusable: {exc}") from None
        signing_key = SigningKey.from_pem((party_dir / SIGNING_KEY).read_bytes())
        tls_key = _private_tls_key(party_dir / TLS_KEY)
        cert = x509.load_pem_x509_certificate(current.pem)
        if signing_key.verify_key() != current.signing_key or _spki_der(
            tls_key.public_key()
        ) != _spki_der(cert.public_key()):  # type: ignore[arg-type]
            raise PkiError(f"{party_dir}: keys and certificate do not match (rotation half-done?)")
        previous = []
        for path in sorted((party_dir / PREVIOUS).glob("*.cert.pem")):
            try:
                previous.append(check_party_certificate(path.read_bytes(), ca_cert, now=now))
            except CertificateRefused:
                continue  # expired or otherwise dead: no longer worth announcing
        return cls(
            party_id=party_id,
            directory=party_dir,
            tls_cert_path=party_dir / TLS_CERT,
            tls_key_path=party_dir / TLS_KEY,
            ca_cert_path=party_dir / CA_CERT,
            ca_cert=ca_cert,
            signing_key=signing_key,
            key_id=current.key_id,
            certificate=current,
            previous=tuple(previous),
        )


def ensure_party(ca_dir: Path, party_id: str, party_dir: Path, *, days: int = 365) -> PartyIdentity:
    """Launcher helper: make keys, have the local CA sign, and install — only what is missing."""
    party_dir = Path(party_dir)
    if not (party_dir / TLS_CERT).exists():
        csr = party_dir / CSR if (party_dir / TLS_KEY).exists() else make_party(party_id, party_dir)
        cert = party_dir / "issued.cert.pem"
        sign_csr_file(ca_dir, csr, cert, days=days)
        install(party_dir, cert, Path(ca_dir) / CA_CERT)
        cert.unlink()
    return PartyIdentity.load(party_dir)


def rotate_with_local_ca(ca_dir: Path, party_dir: Path, *, days: int = 365) -> PartyCertificate:
    """Convenience for development and tests: the three rotation steps against a local CA."""
    party_id = json.loads((Path(party_dir) / PARTY_INFO).read_text())["party_id"]
    csr = make_party(party_id, party_dir, rotate=True)
    cert = Path(party_dir) / PENDING / "issued.cert.pem"
    sign_csr_file(ca_dir, csr, cert, days=days)
    return install(party_dir, cert, Path(ca_dir) / CA_CERT)
