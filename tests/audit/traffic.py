"""A two-party hetero_lr job's traffic as one party's audit sees it, honest or not.

`Traffic` builds the envelopes the guest (9999) and the host (10000) exchange, the proposal and
task.run before them, and the deliveries (topic, wire bytes) they become at the observing
party: what it sends is on out.<peer>, what it receives on the service topic the gateway
publishes it to. The malicious cases are the same builders with one field wrong.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from fedaudit import test_hooks
from fedbus import Delivery
from fedcrypto.paillier.keys import PublicKey, generate_keypair
from fedcrypto.paillier.limbs import from_mpz
from fedcrypto.signing import SigningKey
from fedschemas import (
    Envelope,
    FederationData,
    PartyRef,
    Payload,
    canonical_bytes,
    encode_envelope,
    new_envelope,
    topics,
)
from fedschemas.payloads import JobPropose, TaskRun, task_scope_id

GUEST, HOST = "9999", "10000"
ROLES = {GUEST: "guest", HOST: "host"}
KEY_BITS = 1024

PIPELINE = f"""\
name: audit-test
parties:
  guest: "{GUEST}"
  host: ["{HOST}"]
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: breast_hetero_guest}}
      host: {{table: breast_hetero_host}}
  - name: hetero_lr_0
    type: hetero_lr
    inputs: {{data: reader_0.data}}
    params:
      common: {{epochs: 1, key_bits: {KEY_BITS}, insecure_short_keys: true}}
"""

_KEYS: dict[str, PublicKey] = {}
SIGNING_KEYS: dict[str, SigningKey] = {}


def key_of(party: str) -> PublicKey:
    """A real Paillier public key per party (made once per test session)."""
    if party not in _KEYS:
        _KEYS[party] = generate_keypair(KEY_BITS, insecure_allow_short=True)[0]
    return _KEYS[party]


def odd_key(bits: int) -> bytes:
    """A serialized 'public key' of exactly `bits` bits (what a cheating party announces):
    the service's own harness (fedaudit.test_hooks; tests/audit/conftest.py enables it)."""
    return test_hooks.odd_key(bits)


@dataclass
class Traffic:
    observer: str = GUEST
    job_id: str = "job-audit-1"
    component: str = "hetero_lr_0"
    unsigned: set[str] = field(default_factory=set)
    """Message ids delivered without the peer's signature (a forged inbound message)."""
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def delivery(self, envelope: Envelope) -> Delivery:
        source = envelope.source.party_id
        if source == self.observer and envelope.type in ("federation.data", "job.propose"):
            topic = topics.out_topic(envelope.destination.party_id)
        else:
            topic = topics.topic_for(envelope.type)
        signed = envelope.message_id not in self.unsigned
        if source != self.observer and envelope.signature is None and signed:
            # What the gateway publishes from a peer carries the peer's signature.
            key = SIGNING_KEYS.setdefault(source, SigningKey.generate())
            envelope = envelope.model_copy(update={"signer_key_id": f"party-{source}"})
            envelope = envelope.model_copy(
                update={"signature": key.sign(canonical_bytes(envelope))}
            )
        return Delivery(
            topic=topic,
            body=encode_envelope(envelope),
            message_id=envelope.message_id,
            headers={},
            delivery_count=1,
        )

    def envelope(
        self,
        payload: Payload,
        sender: str,
        receiver: str,
        tag: str,
        *,
        iteration: int = -1,
        seq: int = 0,
        component: str | None = None,
        sender_role: str | None = None,
        attempt: int = 0,
    ) -> Envelope:
        component = component or self.component
        role = sender_role or ROLES.get(sender, "guest")
        return new_envelope(
            payload,
            job_id=self.job_id,
            component=component,
            task_id=task_scope_id(self.job_id, component, sender, role),
            attempt=attempt,
            source=PartyRef(party_id=sender, role=role),
            destination=PartyRef(party_id=receiver, role=ROLES.get(receiver, "host")),
            tag=tag,
            iteration=iteration,
            seq=seq,
            created_at=datetime.now(UTC),
        )

    # --- the job's control messages --------------------------------------------------------

    def propose(self, pipeline: str = PIPELINE) -> Envelope:
        payload = JobPropose(job_id=self.job_id, initiator=GUEST, pipeline_yaml=pipeline)
        return self.envelope(payload, GUEST, HOST, "propose", component="job", sender_role="guest")

    def task_run(self, component_type: str = "hetero_lr") -> Envelope:
        me = self.observer
        payload = TaskRun(
            job_id=self.job_id,
            component=self.component,
            component_type=component_type,
            attempt=0,
            role=ROLES[me],
            party_id=me,
            parties={"guest": [GUEST], "host": [HOST]},
            pipeline_yaml=PIPELINE,
        )
        env = self.envelope(payload, me, me, "task_run", component=self.component)
        return env

    # --- federation data -------------------------------------------------------------------

    def public_key(self, sender: str, blob: bytes | None = None) -> Envelope:
        blob = key_of(sender).to_bytes() if blob is None else blob
        payload = FederationData(
            kind="public_key", blob=blob, blob_format="fedcrypto.paillier.public_key.v1"
        )
        return self.envelope(payload, sender, self._other(sender), "public_key")

    def ciphertexts(
        self,
        tag: str,
        sender: str,
        iteration: int,
        *,
        values: list[int] | None = None,
        under: str | None = None,
        rows: int = 4,
        seq: int = 0,
    ) -> Envelope:
        """Fresh encryptions under `under`'s key (default: the sender's), or raw `values`."""
        key = key_of(under or sender)
        if values is None:
            data = key.encrypt(np.arange(rows, dtype=np.int64) + next(self._seq)).data
        else:
            data = from_mpz(values, key.limbs)
        payload = FederationData(
            kind="ciphertext_vector", array=data, meta={"exponent": 0, "bound": "ff"}
        )
        return self.envelope(
            payload, sender, self._other(sender), tag, iteration=iteration, seq=seq
        )

    def masked(self, tag: str, sender: str, iteration: int, rows: int = 4) -> Envelope:
        limbs = key_of(sender).plain_limbs
        payload = FederationData(
            kind="masked_vector", array=np.ones((rows, limbs), dtype=np.uint64)
        )
        return self.envelope(payload, sender, self._other(sender), tag, iteration=iteration)

    def aggregate(self, tag: str, sender: str, iteration: int, value: float) -> Envelope:
        payload = FederationData(kind="aggregate", array=np.array(value, dtype=np.float64))
        return self.envelope(payload, sender, self._other(sender), tag, iteration=iteration)

    def _other(self, party: str) -> str:
        return HOST if party == GUEST else GUEST

    # --- an honest run -----------------------------------------------------------------------

    def honest(self, iterations: int = 2) -> list[Envelope]:
        """The start of an honest hetero_lr run (the guest's and the host's messages in an
        order the observing guest can see them)."""
        out = [self.propose(), self.task_run(), self.public_key(GUEST), self.public_key(HOST)]
        for t in range(iterations):
            out += [
                self.ciphertexts("residual", GUEST, t),
                self.ciphertexts("host_scores", HOST, t),
                self.ciphertexts("host_gradient", HOST, t, under=GUEST),
                self.ciphertexts("guest_gradient", GUEST, t, under=HOST),
                self.masked("host_gradient_masked", GUEST, t),
                self.masked("guest_gradient_masked", HOST, t),
                self.aggregate("host_score_sq", HOST, t, 1.5),
            ]
        return out
