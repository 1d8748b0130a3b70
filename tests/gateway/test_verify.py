"""The receiving gateway's checks: identity, signature over canonical bytes, replay policy."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from fedcrypto.signing import SigningKey
from fedgateway import pki
from fedgateway.verify import (
    InMemoryFinishedAttempts,
    KeyRing,
    Refused,
    SqlFinishedAttempts,
    Verifier,
    route_for,
)
from fedschemas import DemoPing, PartyRef, canonical_bytes, encode_envelope, new_envelope

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    pki.init_ca(root / "ca", "t")
    # Issued explicitly valid from a day before NOW: NOW is fixed when the module is imported,
    # which in a long run can be more than the CA's default back-dating before this fixture runs.
    csr = pki.make_party("9999", root / "9999")
    ca = pki.CertificateAuthority.load(root / "ca")
    cert = root / "9999" / "issued.cert.pem"
    cert.write_bytes(pki.sign_csr(ca, csr.read_bytes(), not_before=NOW - dt.timedelta(days=1)))
    pki.install(root / "9999", cert, root / "ca" / pki.CA_CERT)
    sender = pki.PartyIdentity.load(root / "9999")
    return root, sender


def _envelope(seq=0, *, job="j", attempt=0, created_at=NOW, source="9999", destination="10000"):
    return new_envelope(
        DemoPing(text="hi", n=seq),
        job_id=job,
        component="c",
        task_id="t",
        attempt=attempt,
        source=PartyRef(party_id=source, role="guest"),
        destination=PartyRef(party_id=destination, role="host"),
        tag="ping",
        iteration=-1,
        seq=seq,
        created_at=created_at,
    )


def _signed(env, key: SigningKey, key_id: str | None):
    env = env.model_copy(update={"signer_key_id": key_id})
    return env.model_copy(update={"signature": key.sign(canonical_bytes(env))})


@pytest.fixture
def verifier(federation):
    _root, sender = federation
    ring = KeyRing(sender.ca_cert)
    ring.add_certificate(sender.certificate.pem, party_id="9999", now=NOW)
    return Verifier(
        party_id="10000",
        keyring=ring,
        finished=InMemoryFinishedAttempts(),
        routes={"demo.": "svc.worker", "demo.ping": "svc.pings"},
        clock_window=dt.timedelta(minutes=10),
        max_envelope_bytes=1 << 20,
        clock=lambda: NOW,
    )


def _check(verifier, env, *, peer="9999"):
    return verifier.check(encode_envelope(env), message_id=env.message_id, peer_party=peer)


def test_a_signed_message_from_the_authenticated_peer_is_accepted_and_routed(verifier, federation):
    # Prepare
    _, sender = federation
    env = _signed(_envelope(), sender.signing_key, sender.key_id)

    # Execute
    accepted = _check(verifier, env)

    # Assert: the longest matching type prefix wins.
    assert accepted.topic == "svc.pings"
    assert accepted.envelope == env


def test_a_same_id_duplicate_within_its_attempt_passes(verifier, federation):
    _, sender = federation
    env = _signed(_envelope(), sender.signing_key, sender.key_id)
    assert _check(verifier, env).envelope.message_id == _check(verifier, env).envelope.message_id


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("missing_signature", lambda s: _envelope()),
        ("bad_signature", lambda s: _signed(_envelope(), SigningKey.generate(), s.key_id)),
        ("unknown_key", lambda s: _signed(_envelope(), SigningKey.generate(), "f" * 64)),
        (
            "bad_signature",  # a valid signature over other content
            lambda s: _signed(_envelope(), s.signing_key, s.key_id).model_copy(update={"seq": 99}),
        ),
        (
            "clock_window",
            lambda s: _signed(
                _envelope(created_at=NOW - dt.timedelta(minutes=11)), s.signing_key, s.key_id
            ),
        ),
        (
            "clock_window",
            lambda s: _signed(
                _envelope(created_at=NOW + dt.timedelta(minutes=11)), s.signing_key, s.key_id
            ),
        ),
        (
            "source_mismatch",
            lambda s: _signed(_envelope(source="10001"), s.signing_key, s.key_id),
        ),
        (
            "wrong_destination",
            lambda s: _signed(_envelope(destination="10001"), s.signing_key, s.key_id),
        ),
    ],
    ids=[
        "unsigned",
        "forged",
        "unknown-key",
        "tampered",
        "too-old",
        "from-the-future",
        "other-source",
        "other-destination",
    ],
)
def test_messages_are_refused_with_a_reason(verifier, federation, reason, make):
    _, sender = federation
    with pytest.raises(Refused) as exc:
        _check(verifier, make(sender))
    assert exc.value.reason == reason


def test_finished_jobs_and_attempts_are_replays_but_later_attempts_are_not(verifier, federation):
    # Prepare
    _, sender = federation
    verifier.finished.finish_attempt("j", 1)
    verifier.finished.finish_job("done")

    # Execute / Assert
    for attempt in (0, 1):
        with pytest.raises(Refused, match="finished_attempt"):
            _check(verifier, _signed(_envelope(attempt=attempt), sender.signing_key, sender.key_id))
    with pytest.raises(Refused, match="finished_job"):
        _check(verifier, _signed(_envelope(job="done", attempt=5), sender.signing_key, None))
    assert _check(verifier, _signed(_envelope(attempt=2), sender.signing_key, sender.key_id))


def test_garbage_and_mismatched_frame_ids_are_refused(verifier, federation):
    _, sender = federation
    env = _signed(_envelope(), sender.signing_key, sender.key_id)
    with pytest.raises(Refused, match="malformed"):
        verifier.check(b"\x93garbage", message_id="x", peer_party="9999")
    with pytest.raises(Refused, match="id_mismatch"):
        verifier.check(encode_envelope(env), message_id="other", peer_party="9999")


def test_a_revoked_key_stops_verifying_at_once(verifier, federation):
    _, sender = federation
    env = _signed(_envelope(), sender.signing_key, sender.key_id)
    verifier.keyring.revoke([sender.key_id])
    with pytest.raises(Refused, match="unknown_key"):
        _check(verifier, env)


def test_the_keyring_learns_keys_only_for_the_party_the_certificate_names(federation):
    _root, sender = federation
    ring = KeyRing(sender.ca_cert)
    with pytest.raises(pki.CertificateRefused) as exc:
        ring.add_certificate(sender.certificate.pem, party_id="10001")
    assert exc.value.reason == "wrong_party"
    assert ring.key_ids("10001") == []


def test_the_finished_store_survives_a_restart(tmp_path):
    # Prepare
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'gw.db'}")
    first = SqlFinishedAttempts(engine)
    first.finish_attempt("j", 2)
    first.finish_attempt("j", 1)
    first.finish_job("k")

    # Execute
    second = SqlFinishedAttempts(engine)

    # Assert
    assert second.status("j") == (False, 2)
    assert second.status("k") == (True, -1)
    assert second.status("unknown") == (False, -1)


def test_routes_match_the_longest_prefix_and_unknown_types_have_none():
    routes = {"demo.": "a", "demo.ping": "b", "": "fallback"}
    assert route_for("demo.ping", routes) == "b"
    assert route_for("demo.pong", routes) == "a"
    assert route_for("job.submit", routes) == "fallback"
    assert route_for("job.submit", {"demo.": "a"}) is None
