"""data.decrypted_bounds: the key holder's worker checks what it decrypts for a peer (masked
decryption, fedflow.kit.he) and reports the counts to its own audit (report.decrypt_check on
svc.audit.reports); a peer that asks it to decrypt anything but masked values of the agreed
range is caught there, and the job stops within a second naming the rule and the peer."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedaudit import test_hooks
from fedaudit.standalone import AuditedRun, StoppedByAudit
from fedaudit.store import list_findings
from fedbus import Message
from fedcrypto import EncryptedVector, generate_keypair
from fedcrypto.paillier.limbs import from_mpz
from fedcrypto.signing import SigningKey
from fedflow.kit.decrypt_check import count_floats, decode_checked
from fedflow.kit.he import HeParty
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline
from fedschemas import FederationData, PartyRef, encode_envelope, new_envelope, topics
from fedschemas.audit_payloads import DecryptCheck

from tests.audit.test_stop import start_audit
from tests.polling import wait_for
from tests.scheduler.conftest import GUEST, HOST, PSI_EVAL, Federation, hold_psi

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data"

# One epoch of four batches on the breast data, 1024-bit keys: masked decryption both ways.
SMALL_LR = f"""\
name: decrypt-check
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
      common: {{epochs: 1, batch_size: 160, key_bits: 1024, insecure_short_keys: true, seed: 0}}
"""


def _audited(tmp_path: Path) -> tuple[Pipeline, AuditedRun]:
    pipeline = Pipeline.from_yaml(SMALL_LR)
    floors = {GUEST: 1024, HOST: 1024}
    return pipeline, AuditedRun(pipeline, SMALL_LR, tmp_path, min_key_bits=floors)


def test_honest_masked_decryptions_are_reported_in_bound(tmp_path: Path) -> None:
    # Prepare
    pipeline, audited = _audited(tmp_path)

    # Execute
    result = run_pipeline(pipeline, {GUEST: DATA, HOST: DATA}, tmp_path, watch=audited)

    # Assert: each party reported every decryption it made as the key holder (the peer's
    # masked gradient) and every answer it unmasked (its own gradient), none out of bound,
    # NaN or infinite
    assert all(task.state == "success" for task in result.tasks)
    for party, peer, mine, theirs in (
        (GUEST, HOST, "guest_gradient", "host_gradient"),
        (HOST, GUEST, "host_gradient", "guest_gradient"),
    ):
        reports = [
            r["facts"]
            for r in audited.audits[party].records(result.job_id, "local")
            if r["type"] == "report.decrypt_check"
        ]
        assert {(f["peer"], f["checked_tag"]) for f in reports} == {
            (peer, theirs),
            (peer, f"{mine}_masked"),
        }
        assert all(f["count"] > 0 for f in reports), reports
        assert all(f["out_of_bound"] == f["nan"] == f["infinite"] == 0 for f in reports), reports
        assert audited.audits[party].findings(result.job_id) == [], party


def test_a_peer_asking_to_decrypt_unmasked_values_stops_the_job(tmp_path: Path) -> None:
    # Prepare: the parties send their gradients to decrypt without the masks
    pipeline, audited = _audited(tmp_path)

    # Execute
    with test_hooks.unmasked_decryption(), pytest.raises(StoppedByAudit) as stopped:
        run_pipeline(pipeline, {GUEST: DATA, HOST: DATA}, tmp_path, watch=audited)

    # Assert: a key holder's audit stopped it, naming the rule and the peer that asked
    assert re.search(
        f"stopped by the audit of party ({GUEST}|{HOST}): rule data.decrypted_bounds broken by "
        f"party ({GUEST}|{HOST}) .*out of bound",
        str(stopped.value),
    ), str(stopped.value)
    assert audited.stop is not None and audited.stop["by"] != audited.stop["party_id"]


def test_a_key_holder_answering_with_made_up_values_is_named_by_the_askers_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the host, as key holder, answers the guest's masked gradient with residues it
    # made up instead of decrypting them
    honest = HeParty.decrypt_for_peer

    def made_up(self: HeParty, tag: str, iteration: int, answer: str, peer: str, *args: Any):
        if self.ctx.role != "host":
            return honest(self, tag, iteration, answer, peer, *args)
        got = self.recv_ciphertexts(tag, iteration, peer, self.public_key, *args)
        self.ctx.federation.authorize_decrypt(tag, iteration, frm=peer)
        n = int(self.public_key.n)
        residues = from_mpz([n // 2 - i for i in range(got.size)], self.public_key.plain_limbs)
        answered = FederationData(kind="masked_vector", array=residues)
        self.ctx.federation.send(answered, to=peer, tag=answer, iteration=iteration)

    monkeypatch.setattr(HeParty, "decrypt_for_peer", made_up)
    pipeline, audited = _audited(tmp_path)

    # Execute
    with pytest.raises(StoppedByAudit):
        run_pipeline(pipeline, {GUEST: DATA, HOST: DATA}, tmp_path, watch=audited)

    # Assert: the guest's unmasking counted every value out of bound, and its audit named the
    # host
    found = audited.audits[GUEST].findings(audited.job_id)
    assert (found[0]["rule"], found[0]["severity"], found[0]["party"]) == (
        "data.decrypted_bounds",
        "critical",
        HOST,
    ), found
    assert "'guest_gradient_masked' of hetero_lr_0" in found[0]["detail"]
    assert re.search(
        r"of (\d+) plaintexts decrypted or decoded here, \1 out of bound", found[0]["detail"]
    ), found[0]["detail"]


def test_decoding_counts_overflow_and_unreadable_plaintexts_instead_of_raising() -> None:
    # Prepare: a 512-bit key; plaintexts 3, -5, one in the band no encoding produces, and one
    # that decodes past float64 at a (crafted) exponent of 256 (16^256 = 2^1024)
    public, private = generate_keypair(512, insecure_allow_short=True)
    n = int(public.n)
    plain = [3, n - 5, n // 2, 1]
    vec = EncryptedVector(
        public,
        public.encrypt_residues(from_mpz(plain, public.plain_limbs), obfuscate=False),
        0,
        (4,),
        bound=public.max_int,
    )
    residues = private.decrypt_residues(vec.data)

    # Execute
    at_zero, unreadable = decode_checked(residues, 0, public)
    at_256, _ = decode_checked(residues, 256, public)
    counts = count_floats(at_256, -10.0, 10.0, unreadable)

    # Assert: the readable values as fedcrypto decodes them, the others counted: NaN marks the
    # unreadable one (counted out of bound, not as NaN), the overflow is infinite
    assert at_zero[[0, 1, 3]].tolist() == [3.0, -5.0, 1.0]
    assert np.isnan(at_zero[2]) and unreadable == 1
    assert at_256[3] == np.inf
    assert (counts.count, counts.nan, counts.infinite, counts.out_of_bound) == (4, 0, 3, 1)


@pytest.mark.parametrize("precision", [2.0**-40, 2.0**-120], ids=["exact", "above-2^53"])
def test_decoding_with_checks_gives_fedcryptos_floats_bit_for_bit(precision: float) -> None:
    # Prepare: values encoded with mantissas below 2^53 (ldexp) and above it (int division)
    public, private = generate_keypair(512, insecure_allow_short=True)
    values = np.random.default_rng(7).normal(0.0, 1e3, 200)
    vec = public.encrypt(values, precision=precision)

    # Execute
    checked, unreadable = decode_checked(private.decrypt_residues(vec.data), vec.exponent, public)

    # Assert
    assert unreadable == 0
    assert checked.tobytes() == np.asarray(private.decrypt(vec), dtype=np.float64).tobytes()


def _report(job_id: str, out_of_bound: int, party: str = HOST, iteration: int = 0) -> Message:
    """The report a key holder's worker publishes after decrypting the guest's gradient."""
    envelope = new_envelope(
        DecryptCheck(
            job_id=job_id,
            component="psi_0",
            attempt=0,
            party_id=party,
            peer=GUEST,
            tag="guest_gradient",
            iteration=iteration,
            count=200,
            out_of_bound=out_of_bound,
            bound="masked plaintext in [0, n/3) of a 2048-bit key",
        ),
        job_id=job_id,
        component="psi_0",
        task_id=f"{job_id}/psi_0/{party}/host",
        attempt=0,
        source=PartyRef(party_id=party, role="host"),
        destination=PartyRef(party_id=party, role="local"),
        tag="decrypt_check.guest_gradient.9999",
        iteration=iteration,
        seq=0,
        created_at=datetime.now(UTC),
    )
    return Message(topics.AUDIT_REPORTS, encode_envelope(envelope), envelope.message_id)


def test_a_report_of_out_of_bound_plaintexts_stops_the_job_within_a_second(
    federation_factory: Callable[..., Federation], tmp_path: Path
) -> None:
    # Prepare: the host's audit; the job runs and holds
    audit_key = SigningKey.generate()
    fed = federation_factory(
        scripts={GUEST: hold_psi, HOST: hold_psi},
        audit_public_key=audit_key.verify_key().to_bytes().hex(),
    )
    audit = start_audit(fed, HOST, audit_key, tmp_path)
    job_id = "decrypt-bounds-1"
    fed.client(GUEST).submit(PSI_EVAL, job_id=job_id)
    wait_for(lambda: "psi_0" in fed.workers[HOST].components_run(job_id))
    bus = fed.buses[HOST]
    # A report in bound stops nothing; one claiming another party is dead-lettered
    bus.publish(_report(job_id, 0, iteration=0))
    bus.publish(_report(job_id, 3, party=GUEST, iteration=1))
    dead = wait_for(lambda: bus.dead_letters(topics.AUDIT_REPORTS) or None)
    assert "on party 10000's own reports topic" in dead[0].headers["x-fedmq-dead-reason"]
    assert fed.job(HOST, job_id)["state"] == "running"

    # Execute: the host's worker reports 3 plaintexts out of bound
    sent = time.monotonic()
    bus.publish(_report(job_id, 3, iteration=1))

    # Assert: the job fails within a second, the guest named as the party that broke the rule
    failed = fed.wait_state(HOST, job_id, "failed", timeout=5)
    assert time.monotonic() - sent < 1.0
    assert f"rule data.decrypted_bounds broken by party {GUEST}" in failed["reason"]
    assert "3 out of bound" in failed["reason"]
    with audit.engine.connect() as conn:
        critical = [f for f in list_findings(conn, job_id=job_id) if f["severity"] == "critical"]
    assert [(f["rule"], f["party"]) for f in critical] == [("data.decrypted_bounds", GUEST)]
    audit.stop()
