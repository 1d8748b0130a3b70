"""Refusals on the site link, against party 10000's gateway running as a process: peers with a
missing certificate, a foreign CA, an expired certificate or another party's certificate are
refused, logged and counted; forged signatures and replays are refused, logged, counted, and
dead-lettered at the source with the receiver's reason."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import uuid
from pathlib import Path

import pytest
from fedbus import HEADER_DEAD_REASON
from fedcrypto.signing import SigningKey
from fedgateway import pki
from fedgateway.framing import Hello
from fedgateway.link import PeerRefused, open_client_connection
from fedschemas import canonical_bytes

from tests.gateway.conftest import Deployment
from tests.polling import poll

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Deployment:
    """One gateway pair for the module (no test here stops one); counts and logs are each
    test's own (`counted`, `log`)."""
    return shared_deployment


def _client_context(ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(ca))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _connect_as(deployment, claimed_party: str, cert: Path | None, key: Path | None) -> None:
    """Try to open a link to party 10000 as `claimed_party`; returns only if it was accepted."""
    ca_path = deployment.party_dir("10000") / "identity" / pki.CA_CERT
    hello = Hello(
        party_id=claimed_party,
        certificates=(cert.read_bytes(),) if cert is not None else (),
    )

    async def attempt() -> None:
        conn = await open_client_connection(
            f"127.0.0.1:{deployment.state.parties['10000'].link_port}",
            context=_client_context(ca_path, cert, key),
            hello=hello,
            expected_party="10000",
            ca_cert=pki.load_certificate(ca_path),
            max_frame_bytes=1 << 20,
        )
        conn.close()

    asyncio.run(attempt())


def _refusal_logged(deployment, reason: str, timeout: float = 10.0) -> list[dict]:
    return poll(
        lambda: [
            e
            for e in deployment.log("10000")
            if e.get("event") == "peer_refused" and e.get("reason") == reason
        ],
        timeout,
        interval=0.1,
    )


def _party_with_own_ca(tmp_path: Path, party: str) -> pki.PartyIdentity:
    """A complete identity for `party` under a CA the federation does not know."""
    pki.init_ca(tmp_path / "foreign-ca", "foreign")
    return pki.ensure_party(tmp_path / "foreign-ca", party, tmp_path / f"foreign-{party}")


def _expired_identity(deployment, tmp_path: Path, party: str) -> tuple[Path, Path]:
    """Keys for `party` with a certificate from the federation CA that expired yesterday."""
    directory = tmp_path / f"expired-{party}"
    csr = pki.make_party(party, directory)
    ca = pki.CertificateAuthority.load(Path(deployment.state.root) / "ca")
    now = dt.datetime.now(dt.UTC)
    cert = pki.sign_csr(
        ca,
        csr.read_bytes(),
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    (directory / pki.TLS_CERT).write_bytes(cert)
    return directory / pki.TLS_CERT, directory / pki.TLS_KEY


def test_peers_without_a_valid_certificate_for_their_claimed_party_are_refused_and_counted(
    deployment, tmp_path
):
    # Prepare: four impostors.
    ca_dir = Path(deployment.state.root) / "ca"
    foreign = _party_with_own_ca(tmp_path, "9999")
    expired_cert, expired_key = _expired_identity(deployment, tmp_path, "9999")
    other = pki.ensure_party(ca_dir, "10001", tmp_path / "party-10001")
    cases = [
        ("missing_certificate", "9999", None, None),
        ("foreign_ca", "9999", foreign.tls_cert_path, foreign.tls_key_path),
        ("expired", "9999", expired_cert, expired_key),
        ("wrong_party", "9999", other.tls_cert_path, other.tls_key_path),  # 10001 posing as 9999
        ("unknown_party", "10001", other.tls_cert_path, other.tls_key_path),  # not a peer
    ]

    for reason, claimed, cert, key in cases:
        # Execute
        with pytest.raises((PeerRefused, ssl.SSLError, ConnectionError, OSError)):
            _connect_as(deployment, claimed, cert, key)

        # Assert: refused on the server side for that reason, logged and counted.
        assert _refusal_logged(deployment, reason), f"no peer_refused event for {reason}"
        assert (
            deployment.counted(
                "10000", "fedmq_gateway_connections_refused_total", side="server", reason=reason
            )
            >= 1
        ), reason


def test_the_genuine_peer_certificate_is_accepted(deployment):
    # Prepare
    identity = pki.PartyIdentity.load(deployment.party_dir("9999") / "identity")

    # Execute / Assert: no exception means HELLO_OK came back.
    _connect_as(deployment, "9999", identity.tls_cert_path, identity.tls_key_path)


def _dead_letter_reasons(bus, topic: str, want: int, timeout: float = 20.0) -> dict[str, str]:
    found: dict[str, str] = {}

    def enough() -> bool:
        for d in bus.dead_letters(topic):
            found[d.message_id] = d.headers.get(HEADER_DEAD_REASON, "")
        return len(found) >= want

    poll(enough, timeout, interval=0.2)
    return found


def test_forged_signatures_and_replays_are_refused_logged_counted_and_dead_lettered(
    deployment, sink, envelope, to_message
):
    # Prepare
    real = pki.PartyIdentity.load(deployment.party_dir("9999") / "identity")
    job = f"job-{uuid.uuid4().hex[:6]}"
    forged = envelope(1, job_id=job).model_copy(update={"signer_key_id": real.key_id})
    forged = forged.model_copy(
        update={"signature": SigningKey.generate().sign(canonical_bytes(forged))}
    )
    stale = envelope(2, job_id=job, created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    finished_job = f"done-{uuid.uuid4().hex[:6]}"
    deployment.end_attempt("10000", finished_job, 0)  # as party 10000's scheduler would
    replayed = envelope(3, job_id=finished_job, attempt=0)
    live = envelope(4, job_id=finished_job, attempt=1)  # the next attempt is not a replay

    # Execute
    bus = deployment.bus("9999")
    for env in (forged, stale, replayed, live):
        bus.publish(to_message(env))
    reasons = _dead_letter_reasons(bus, "out.10000", want=3)
    sink.wait_for(1, timeout=20)

    # Assert: the three are dead-lettered at the source with the receiver's reason...
    assert reasons == {
        forged.message_id: "refused by party 10000: bad_signature",
        stale.message_id: "refused by party 10000: clock_window",
        replayed.message_id: "refused by party 10000: finished_attempt",
    }
    # ...never reach the handler, while the next attempt's message does...
    assert [m for m, _ in sink.rows()] == [live.message_id]
    # ...and are counted and logged by the receiving gateway.
    for reason in ("bad_signature", "clock_window", "finished_attempt"):
        assert deployment.counted("10000", "fedmq_gateway_refused_total", reason=reason) == 1
    logged = {
        e["message_id"]: e["reason"]
        for e in deployment.log("10000")
        if e.get("event") == "message_refused"
    }
    assert logged == {
        forged.message_id: "bad_signature",
        stale.message_id: "clock_window",
        replayed.message_id: "finished_attempt",
    }
