"""What the receiving gateway checks before a cross-site message enters its party's broker.

Order of checks (the first failure is the refusal reason, a short code used as the metric label
of `fedmq_gateway_refused_total{reason=...}`):

    malformed          the bytes do not decode as an envelope (fedschemas.MalformedMessage)
    id_mismatch        the link frame's message id is not the envelope's
    source_mismatch    envelope.source.party_id is not the party authenticated by mutual TLS: a
                       party may only relay its own messages, so a captured message of party A
                       cannot be replayed by party B
    wrong_destination  envelope.destination.party_id is not this gateway's party
    missing_signature  no signature
    unknown_key        signer_key_id names no live certified key of the source party
    bad_signature      Ed25519 over fedschemas.canonical_bytes(envelope) does not verify
    clock_window       created_at is further than the allowed window from this gateway's clock
    finished_job       the job is known to be finished
    finished_attempt   this attempt of the job is known to be finished (or a later one started)
    no_route           no route for the message type (a settings problem, not an attack)

A same-id duplicate within a live attempt passes: it is not a replay, and the receiver's inbox
drops it (effectively-once, docs/delivery.md).
"""

from __future__ import annotations

import abc
import datetime as dt
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography import x509
from fedcrypto.signing import BadSignature, VerifyKey
from fedschemas import Envelope, MalformedMessage, canonical_bytes, decode_envelope

from fedgateway.pki import CertificateRefused, PartyCertificate, check_party_certificate


class Refused(Exception):
    """A message was refused; `reason` is a metric label, `detail` a sentence for the log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- signing keys of other parties ---------------------------------------------------------


@dataclass(frozen=True)
class TrustedKey:
    party_id: str
    key_id: str
    verify_key: VerifyKey
    not_after: dt.datetime
    cert_fingerprint: str


class KeyRing:
    """Signing keys of peer parties, learned only from certificates the federation CA issued.

    Keys arrive from each peer's TLS certificate and the certificates in its link hello (current
    and earlier generations), so a rotation needs no change at the receivers. A key is used
    until its certificate expires or its certificate / key id is revoked."""

    def __init__(self, ca_cert: x509.Certificate, *, revoked: Iterable[str] = ()) -> None:
        self._ca_cert = ca_cert
        self._revoked = frozenset(revoked)
        self._keys: dict[str, dict[str, TrustedKey]] = {}
        self._lock = threading.Lock()

    def set_ca(self, ca_cert: x509.Certificate) -> None:
        with self._lock:
            self._ca_cert = ca_cert

    def revoke(self, ids: Iterable[str]) -> None:
        """Revoke by certificate fingerprint or key id; takes effect for the next message."""
        with self._lock:
            self._revoked = self._revoked | frozenset(ids)

    def add_certificate(
        self, pem_or_der: bytes, *, party_id: str, now: dt.datetime | None = None
    ) -> PartyCertificate:
        """Check a certificate of `party_id` and remember its signing key.

        Raises CertificateRefused when it is not from the CA, not valid now, revoked, or names
        another party (reason "wrong_party")."""
        with self._lock:
            ca, revoked = self._ca_cert, self._revoked
        checked = check_party_certificate(pem_or_der, ca, now=now, revoked=revoked)
        if checked.party_id != party_id:
            raise CertificateRefused(
                "wrong_party", f"certificate names party {checked.party_id}, expected {party_id}"
            )
        with self._lock:
            self._keys.setdefault(party_id, {})[checked.key_id] = TrustedKey(
                party_id=party_id,
                key_id=checked.key_id,
                verify_key=checked.signing_key,
                not_after=checked.not_after,
                cert_fingerprint=checked.fingerprint,
            )
        return checked

    def keys_for(self, party_id: str, key_id: str | None, now: dt.datetime) -> list[VerifyKey]:
        """Live keys of `party_id`: the one named `key_id`, or all of them when it is None."""
        with self._lock:
            keys = list(self._keys.get(party_id, {}).values())
            revoked = self._revoked
        live = [
            k
            for k in keys
            if k.not_after >= now and k.key_id not in revoked and k.cert_fingerprint not in revoked
        ]
        if key_id is not None:
            live = [k for k in live if k.key_id == key_id]
        return [k.verify_key for k in live]

    def key_ids(self, party_id: str) -> list[str]:
        with self._lock:
            return sorted(self._keys.get(party_id, {}))

    def certificates(self, party_id: str) -> list[TrustedKey]:
        """What is known of `party_id`'s certificates (key id, expiry, fingerprint), newest
        expiry first: the board's site page shows their expiry dates."""
        with self._lock:
            keys = list(self._keys.get(party_id, {}).values())
        return sorted(keys, key=lambda k: k.not_after, reverse=True)


# --- finished jobs and attempts --------------------------------------------------------------


class FinishedAttempts(abc.ABC):
    """Which jobs and attempts are over: messages for them are replays and refused.

    Fed by operators (settings, the gateway API) now and by the scheduler's control messages
    later. `finish_attempt(job, n)` closes attempts 0..n of the job; `finish_job` closes all."""

    @abc.abstractmethod
    def finish_attempt(self, job_id: str, attempt: int) -> None: ...

    @abc.abstractmethod
    def finish_job(self, job_id: str) -> None: ...

    @abc.abstractmethod
    def status(self, job_id: str) -> tuple[bool, int]:
        """(job finished, highest finished attempt or -1)."""


class InMemoryFinishedAttempts(FinishedAttempts):
    def __init__(self) -> None:
        self._jobs: dict[str, tuple[bool, int]] = {}
        self._lock = threading.Lock()

    def finish_attempt(self, job_id: str, attempt: int) -> None:
        with self._lock:
            done, highest = self._jobs.get(job_id, (False, -1))
            self._jobs[job_id] = (done, max(highest, attempt))

    def finish_job(self, job_id: str) -> None:
        with self._lock:
            _, highest = self._jobs.get(job_id, (False, -1))
            self._jobs[job_id] = (True, highest)

    def status(self, job_id: str) -> tuple[bool, int]:
        with self._lock:
            return self._jobs.get(job_id, (False, -1))


_metadata = sa.MetaData()
finished_jobs_table = sa.Table(
    "fedmq_gateway_finished",
    _metadata,
    sa.Column("job_id", sa.String(256), primary_key=True),
    sa.Column("job_finished", sa.Boolean, nullable=False, default=False),
    sa.Column("highest_finished_attempt", sa.BigInteger, nullable=False, default=-1),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


class SqlFinishedAttempts(FinishedAttempts):
    """The durable store (PostgreSQL in the stack, SQLite embedded), with a read-through cache:
    the check runs for every message, the writes are rare."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        _metadata.create_all(engine)
        self._cache = InMemoryFinishedAttempts()
        self._reload()

    def _reload(self) -> None:
        with self._engine.connect() as conn:
            for row in conn.execute(sa.select(finished_jobs_table)):
                if row.highest_finished_attempt >= 0:
                    self._cache.finish_attempt(row.job_id, row.highest_finished_attempt)
                if row.job_finished:
                    self._cache.finish_job(row.job_id)

    def _upsert(self, job_id: str, job_finished: bool, attempt: int) -> None:
        now = dt.datetime.now(dt.UTC)
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(finished_jobs_table).where(finished_jobs_table.c.job_id == job_id)
            ).first()
            if row is None:
                conn.execute(
                    finished_jobs_table.insert().values(
                        job_id=job_id,
                        job_finished=job_finished,
                        highest_finished_attempt=attempt,
                        updated_at=now,
                    )
                )
            else:
                conn.execute(
                    finished_jobs_table.update()
                    .where(finished_jobs_table.c.job_id == job_id)
                    .values(
                        job_finished=row.job_finished or job_finished,
                        highest_finished_attempt=max(row.highest_finished_attempt, attempt),
                        updated_at=now,
                    )
                )

    def finish_attempt(self, job_id: str, attempt: int) -> None:
        self._upsert(job_id, False, attempt)
        self._cache.finish_attempt(job_id, attempt)

    def finish_job(self, job_id: str) -> None:
        self._upsert(job_id, True, -1)
        self._cache.finish_job(job_id)

    def status(self, job_id: str) -> tuple[bool, int]:
        return self._cache.status(job_id)


# --- the verifier --------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    envelope: Envelope
    topic: str


def route_for(message_type: str, routes: Mapping[str, str]) -> str | None:
    """The local topic for a message type: the longest matching type prefix wins."""
    best: str | None = None
    best_len = -1
    for prefix, topic in routes.items():
        if message_type.startswith(prefix) and len(prefix) > best_len:
            best, best_len = topic, len(prefix)
    return best


class Verifier:
    """Signature, identity and replay checks for messages arriving over the link."""

    def __init__(
        self,
        *,
        party_id: str,
        keyring: KeyRing,
        finished: FinishedAttempts,
        routes: Mapping[str, str],
        clock_window: dt.timedelta,
        max_envelope_bytes: int,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.party_id = party_id
        self.keyring = keyring
        self.finished = finished
        self.routes = dict(routes)
        self.clock_window = clock_window
        self.max_envelope_bytes = max_envelope_bytes
        self._clock = clock

    def check(self, body: bytes, *, message_id: str, peer_party: str) -> Accepted:
        """Accept a message from authenticated peer `peer_party`, or raise Refused."""
        env = self.check_signed(body, message_id=message_id, peer_party=peer_party)
        topic = route_for(env.type, self.routes)
        if topic is None:
            raise Refused("no_route", f"no route for message type {env.type}")
        return Accepted(envelope=env, topic=topic)

    def check_signed(self, body: bytes, *, message_id: str | None, peer_party: str) -> Envelope:
        """Every check but the route (request/reply frames are not routed by type): the
        envelope, or Refused. `message_id` None: the frame carries no separate id."""
        try:
            env = decode_envelope(body, max_bytes=self.max_envelope_bytes)
        except MalformedMessage as exc:
            raise Refused("malformed", exc.reason) from None
        if message_id is not None and env.message_id != message_id:
            raise Refused("id_mismatch", "frame message id differs from the envelope's")
        if env.source.party_id != peer_party:
            raise Refused(
                "source_mismatch",
                f"envelope source is {env.source.party_id}, the link is party {peer_party}",
            )
        if env.destination.party_id != self.party_id:
            raise Refused("wrong_destination", f"addressed to party {env.destination.party_id}")
        if env.signature is None:
            raise Refused("missing_signature", "cross-site messages must be signed")
        now = self._clock()
        keys = self.keyring.keys_for(peer_party, env.signer_key_id, now)
        if not keys:
            raise Refused(
                "unknown_key",
                f"no live certified key {env.signer_key_id or '(any)'} for party {peer_party}",
            )
        # Recomputed from the decoded fields (so always the canonical form): one SHA-256 pass
        # over the payload and a few hundred bytes for Ed25519.
        signed = canonical_bytes(env)
        for key in keys:
            try:
                key.verify(signed, env.signature)
                break
            except BadSignature:
                continue
        else:
            raise Refused("bad_signature", f"signature does not verify for party {peer_party}")
        skew = abs(now - env.created_at)
        if skew > self.clock_window:
            raise Refused(
                "clock_window",
                f"created_at is {skew.total_seconds():.0f} s from now "
                f"(window {self.clock_window.total_seconds():.0f} s)",
            )
        # Traffic outside any job (online calls) has no job to be finished.
        job_done, highest = self.finished.status(env.job_id) if env.job_id else (False, -1)
        if job_done:
            raise Refused("finished_job", f"job {env.job_id} is finished")
        if env.attempt <= highest:
            raise Refused(
                "finished_attempt",
                f"attempt {env.attempt} of job {env.job_id} is finished (up to {highest})",
            )
        return env
