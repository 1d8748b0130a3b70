"""zstd on the site link (compression.py, docs/wan.md "Compression"): compressible bodies cross
compressed and arrive byte for byte, ciphertexts are sent as they are, and the receiver never
trusts a compressed frame's sizes."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

import pytest
import zstandard
from fedbus import Message, connect
from fedgateway import compression
from fedschemas import (
    DemoPing,
    FederationData,
    PartyRef,
    decode_envelope,
    decode_payload,
    encode_envelope,
    new_envelope,
)

from tests.polling import wait_until
from tests.relay_helpers import InProcessGateways, collect

pytestmark = pytest.mark.timeout(60)

SENDER, RECEIVER = "9999", "10000"


@pytest.fixture
def pair(tmp_path, unique_name) -> Iterator[InProcessGateways]:
    # striping from 1 MiB, so the compressed body is also striped (the two compose)
    with InProcessGateways(
        tmp_path, [SENDER, RECEIVER], unique_name, link_stripe_bytes=1 << 20, link_streams=2
    ) as gateways:
        yield gateways


def _envelope(payload, seq: int):
    return new_envelope(
        payload,
        job_id="zstd-job",
        component="c",
        task_id="t",
        attempt=0,
        source=PartyRef(party_id=SENDER, role="guest"),
        destination=PartyRef(party_id=RECEIVER, role="host"),
        tag="t",
        iteration=-1,
        seq=seq,
        created_at=dt.datetime.now(dt.UTC),
    )


def test_compressible_bodies_cross_compressed_and_ciphertexts_as_they_are(pair):
    # Prepare: 4 MiB of hex text (compresses about 2:1), a 2 MiB ciphertext (random bytes:
    # does not compress), and a small message (below the size worth compressing)
    got, _ = collect(pair.bus_url(RECEIVER), "svc.worker")
    text = os.urandom(2 << 20).hex()
    blob = os.urandom(2 << 20)
    sent = [
        _envelope(DemoPing(text=text, n=0), 0),
        _envelope(
            FederationData(
                kind="ciphertext_vector", blob=blob, blob_format="fedcrypto.paillier.v1"
            ),
            1,
        ),
        _envelope(DemoPing(text="small", n=2), 2),
    ]
    bus = connect(pair.bus_url(SENDER))

    # Execute
    for env in sent:
        bus.publish(
            Message(topic=f"out.{RECEIVER}", body=encode_envelope(env), message_id=env.message_id)
        )

    # Assert: each arrived once with its payload intact and its signature in place...
    wait_until(lambda: len(got) >= 3, 30, "the three messages at the receiver")
    by_id = {d.message_id: decode_envelope(d.body) for d in got}
    assert sorted(by_id) == sorted(env.message_id for env in sent)
    assert decode_payload(by_id[sent[0].message_id]).text == text  # type: ignore[attr-defined]
    assert decode_payload(by_id[sent[1].message_id]).blob == blob  # type: ignore[attr-defined]
    assert all(env.signature is not None for env in by_id.values())
    # ...the text went compressed, the ciphertext as it was, the small one was not tried
    stats = pair.gateways[SENDER]._links[RECEIVER].compress_stats  # a test's look inside
    assert stats["compressed"] == 1
    assert stats["skipped"] == 1
    assert stats["sent_bytes"] < 0.7 * stats["raw_bytes"]
    # ...and the same counts are the gateway's Prometheus metrics
    registry = pair.gateways[SENDER].metrics.registry
    peer = {"peer": RECEIVER}
    assert registry.get_sample_value("fedmq_gateway_link_compressed_bodies_total", peer) == 1
    assert registry.get_sample_value("fedmq_gateway_link_compress_skipped_bodies_total", peer) == 1
    for name, key in (("raw", "raw_bytes"), ("sent", "sent_bytes")):
        value = registry.get_sample_value(f"fedmq_gateway_link_compress_{name}_bytes_total", peer)
        assert value == stats[key] > 0


def test_ciphertext_is_not_compressed_and_text_is():
    assert compression.compress_if_worth(os.urandom(1 << 20), 1) is None
    assert compression.compress_if_worth(b"x" * 100, 1) is None  # too small to bother
    text = os.urandom(1 << 19).hex().encode()
    packed = compression.compress_if_worth(text, 1)
    assert packed is not None and len(packed) < 0.7 * len(text)
    assert compression.decompress(packed, len(text), limit=len(text)) == text


@pytest.mark.parametrize(
    ("declared", "limit", "why"),
    [
        (10_000, 5_000, "exceeds the limit"),  # more than one envelope's worth: not even tried
        (5_000, 1 << 20, "declares 10000 bytes"),  # the frame says less than the zstd header
        (20_000, 1 << 20, "declares 10000 bytes"),
    ],
)
def test_a_compressed_body_whose_sizes_disagree_is_refused_before_decompressing(
    declared, limit, why
):
    packed = zstandard.ZstdCompressor(level=1).compress(b"a" * 10_000)
    with pytest.raises(compression.BadCompression, match=why):
        compression.decompress(packed, declared, limit=limit)


def test_a_compressed_body_without_its_size_or_cut_short_is_refused():
    no_size = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(b"a" * 10_000)
    with pytest.raises(compression.BadCompression, match="declares"):
        compression.decompress(no_size, 10_000, limit=1 << 20)
    whole = zstandard.ZstdCompressor(level=1).compress(os.urandom(5_000).hex().encode())
    with pytest.raises(compression.BadCompression):
        compression.decompress(whole[:-8], 10_000, limit=1 << 20)
    with pytest.raises(compression.BadCompression, match="not a zstd frame"):
        compression.decompress(b"not zstd at all", 10, limit=1 << 20)
