"""The audit hashes each payload once: the precomputed-digest form of canonical_bytes gives the
same bytes as the plain one, and a record's hashes equal the reference computations."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fedschemas import FederationData, PartyRef, canonical_bytes, new_envelope

GUEST = PartyRef(party_id="10000", role="guest")
HOST = PartyRef(party_id="9999", role="host")


def _envelope(deadline: bool = False):  # type: ignore[no-untyped-def]
    envelope = new_envelope(
        FederationData(kind="masked_vector", array=np.arange(50_000, dtype=np.float64)),
        job_id="j1",
        component="hetero_lr_0",
        task_id="j1/hetero_lr_0/10000/guest",
        attempt=0,
        source=GUEST,
        destination=HOST,
        tag="residual",
        iteration=3,
        seq=7,
        created_at=datetime(2026, 12, 7, 12, 0, tzinfo=UTC),
    )
    if deadline:
        envelope = envelope.replace(deadline=envelope.created_at + timedelta(seconds=30))
    return envelope.replace(signer_key_id="gw-1", signature=b"s" * 64)


@pytest.mark.parametrize("deadline", [False, True])
def test_canonical_bytes_with_a_precomputed_payload_digest_are_the_same_bytes(
    deadline: bool,
) -> None:
    envelope = _envelope(deadline)
    digest = hashlib.sha256(envelope.payload).digest()

    given = canonical_bytes(envelope, payload_sha256=digest)

    assert given == canonical_bytes(envelope)


def test_canonical_bytes_refuses_a_digest_that_is_not_32_bytes() -> None:
    envelope = _envelope()

    with pytest.raises(ValueError, match="not 32"):
        canonical_bytes(envelope, payload_sha256=hashlib.sha256(envelope.payload).digest()[:16])


def test_a_records_hashes_are_those_of_the_payload_and_both_canonical_forms() -> None:
    from fedaudit.auditor import make_record
    from fedschemas import decode_payload, encode_envelope, topics

    envelope = _envelope()
    unsigned = envelope.model_copy(update={"signer_key_id": None})

    record = make_record(
        topics.out_topic(HOST.party_id),
        encode_envelope(envelope),
        envelope,
        decode_payload(envelope),
        GUEST.party_id,
    )

    assert record["payload_sha256"] == hashlib.sha256(envelope.payload).hexdigest()
    assert record["envelope_sha256"] == hashlib.sha256(canonical_bytes(envelope)).hexdigest()
    assert (
        record["facts"]["content_sha256"] == hashlib.sha256(canonical_bytes(unsigned)).hexdigest()
    )
    assert record["facts"]["content_sha256"] != record["envelope_sha256"]
