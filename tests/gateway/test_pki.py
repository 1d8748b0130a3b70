"""The federation PKI: keys stay with their party, certificates bind party id and signing key,
the CA checks what it signs, install checks what it installs, rotation keeps old certs."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fedcrypto.signing import SigningKey
from fedgateway import pki


@pytest.fixture
def ca_dir(tmp_path):
    pki.init_ca(tmp_path / "ca", "testfed")
    return tmp_path / "ca"


def test_a_party_certificate_names_the_party_and_binds_its_signing_key(ca_dir, tmp_path):
    # Prepare
    csr = pki.make_party("9999", tmp_path / "p")
    signing = SigningKey.from_pem((tmp_path / "p" / pki.SIGNING_KEY).read_bytes())

    # Execute
    cert_pem = pki.sign_csr(pki.CertificateAuthority.load(ca_dir), csr.read_bytes())
    checked = pki.check_party_certificate(cert_pem, pki.load_certificate(ca_dir / pki.CA_CERT))

    # Assert
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert checked.party_id == "9999"
    assert checked.signing_key == signing.verify_key()
    assert checked.key_id == signing.verify_key().fingerprint()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "party-9999"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:fedmq:party:9999"]


def test_private_keys_are_written_owner_only_and_never_into_the_csr(ca_dir, tmp_path):
    # Execute
    csr = pki.make_party("9999", tmp_path / "p")

    # Assert
    for name in (pki.TLS_KEY, pki.SIGNING_KEY):
        mode = stat.S_IMODE(os.stat(tmp_path / "p" / name).st_mode)
        assert mode == 0o600, name
    assert b"PRIVATE" not in csr.read_bytes()
    assert not list(ca_dir.glob("*party*"))  # the CA directory never sees party files


def test_the_ca_refuses_a_csr_whose_signing_key_proof_belongs_to_other_keys(ca_dir, tmp_path):
    # Prepare: copy the signing-key extension of party 9999's CSR into a CSR for other TLS keys.
    genuine = x509.load_pem_x509_csr(pki.make_party("9999", tmp_path / "p").read_bytes())
    ext = genuine.extensions.get_extension_for_oid(pki.SIGNING_KEY_OID)
    other_tls = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(genuine.subject)
        .add_extension(
            genuine.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
            critical=False,
        )
        .add_extension(ext.value, critical=False)
        .sign(other_tls, hashes.SHA256())
    )

    # Execute / Assert
    with pytest.raises(pki.PkiError, match="proof of possession"):
        pki.sign_csr(
            pki.CertificateAuthority.load(ca_dir),
            forged.public_bytes(serialization.Encoding.PEM),
        )


def test_a_certificate_from_another_ca_or_out_of_its_validity_is_refused(ca_dir, tmp_path):
    # Prepare
    ca = pki.CertificateAuthority.load(ca_dir)
    csr = pki.make_party("9999", tmp_path / "p").read_bytes()
    now = dt.datetime.now(dt.UTC)
    expired = pki.sign_csr(
        ca, csr, not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1)
    )
    pki.init_ca(tmp_path / "other-ca", "other")
    foreign = pki.sign_csr(pki.CertificateAuthority.load(tmp_path / "other-ca"), csr)
    good = pki.sign_csr(ca, csr)

    # Execute / Assert
    with pytest.raises(pki.CertificateRefused) as e1:
        pki.check_party_certificate(expired, ca.cert)
    with pytest.raises(pki.CertificateRefused) as e2:
        pki.check_party_certificate(foreign, ca.cert)
    with pytest.raises(pki.CertificateRefused) as e3:
        fingerprint = pki.check_party_certificate(good, ca.cert).fingerprint
        pki.check_party_certificate(good, ca.cert, revoked=frozenset({fingerprint}))
    assert (e1.value.reason, e2.value.reason, e3.value.reason) == (
        "expired",
        "foreign_ca",
        "revoked",
    )


def test_install_refuses_a_certificate_for_another_party_or_other_keys(ca_dir, tmp_path):
    # Prepare
    ca = pki.CertificateAuthority.load(ca_dir)
    pki.make_party("9999", tmp_path / "p9999")
    other_csr = pki.make_party("10000", tmp_path / "p10000")
    (tmp_path / "other.pem").write_bytes(pki.sign_csr(ca, other_csr.read_bytes()))
    pki.make_party("9999", tmp_path / "twin")  # same party id, different keys
    twin_csr = (tmp_path / "twin" / pki.CSR).read_bytes()
    (tmp_path / "twin.pem").write_bytes(pki.sign_csr(ca, twin_csr))

    # Execute / Assert
    with pytest.raises(pki.PkiError, match="party 10000"):
        pki.install(tmp_path / "p9999", tmp_path / "other.pem", ca_dir / pki.CA_CERT)
    with pytest.raises(pki.PkiError, match="matches neither"):
        pki.install(tmp_path / "p9999", tmp_path / "twin.pem", ca_dir / pki.CA_CERT)


def test_rotation_keeps_the_old_key_until_install_then_announces_the_old_certificate(
    ca_dir, tmp_path
):
    # Prepare
    before = pki.ensure_party(ca_dir, "9999", tmp_path / "p")

    # Execute: new keys and CSR; the current identity still loads unchanged before install.
    csr = pki.make_party("9999", tmp_path / "p", rotate=True)
    during = pki.PartyIdentity.load(tmp_path / "p")
    (tmp_path / "new.pem").write_bytes(
        pki.sign_csr(pki.CertificateAuthority.load(ca_dir), csr.read_bytes())
    )
    pki.install(tmp_path / "p", tmp_path / "new.pem", ca_dir / pki.CA_CERT)
    after = pki.PartyIdentity.load(tmp_path / "p")

    # Assert
    assert during.key_id == before.key_id
    assert after.key_id != before.key_id
    assert [p.key_id for p in after.previous] == [before.key_id]
    assert not (tmp_path / "p" / pki.PENDING).exists()


def test_make_party_never_overwrites_existing_keys(tmp_path):
    # Prepare
    pki.make_party("9999", tmp_path / "p")
    key = (tmp_path / "p" / pki.SIGNING_KEY).read_bytes()

    # Execute / Assert
    with pytest.raises(pki.PkiError, match="already holds keys"):
        pki.make_party("9999", tmp_path / "p")
    assert (tmp_path / "p" / pki.SIGNING_KEY).read_bytes() == key
