"""Relay without loss: two parties' gateways as separate processes on RabbitMQ, one killed with
SIGKILL in the middle of a 1,000-message stream, every message handled exactly once."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from fedgateway import pki
from fedschemas import canonical_bytes

from tests.gateway.conftest import Deployment
from tests.polling import poll

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

N = 1000


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Deployment:
    """One gateway pair for the module: each test starts again the gateway it kills, and
    waits until its whole stream was handled, so the next one finds the pair as a fresh one
    (starting a pair per test took half of this module's time). Counts and logs are each
    test's own (`counted`, `log`)."""
    return shared_deployment


def _assert_exactly_once(sink: Any, expected_ids: set[str]) -> None:
    rows = sink.rows()
    handled = [message_id for message_id, _ in rows]
    assert len(handled) == len(expected_ids), (
        f"{len(handled)} effects for {len(expected_ids)} messages"
    )
    assert set(handled) == expected_ids


@pytest.mark.parametrize(
    ("victim", "graceful"),
    [("10000", False), ("9999", False), ("9999", True)],
    ids=["receiving-sigkill", "sending-sigkill", "sending-sigterm"],
)
def test_every_message_is_handled_exactly_once_when_a_gateway_is_killed_mid_stream(
    victim, graceful, deployment, sink, envelope, paced_publisher, unique_name
):
    # Prepare: a job id of its own (the receiver's inbox outlives one test: same ids would be
    # dropped as duplicates of an earlier test's messages).
    envelopes = [envelope(i, job_id=f"kill-{unique_name}") for i in range(N)]
    expected = {e.message_id for e in envelopes}

    # Execute: stream, SIGKILL (or SIGTERM) the victim after a few hundred arrived, restart it.
    publisher = paced_publisher(envelopes, batch=25, interval=0.05)
    assert sink.wait_for(250, timeout=40) >= 250, (
        f"published {publisher.published}, error {publisher.error!r}, relayed out "
        f"{deployment.metric('9999', 'fedmq_gateway_relayed_total')}, in "
        f"{deployment.metric('10000', 'fedmq_gateway_relayed_total')}\n{deployment.tail()}"
    )
    handled_at_kill = sink.count()
    if graceful:
        deployment.stop(victim)
    else:
        deployment.kill(victim)
    time.sleep(1.0)
    deployment.start(victim)
    publisher.join(timeout=40)
    sink.wait_for(N, timeout=45)
    time.sleep(1.5)  # anything resent late would show up as an extra effect now

    # Assert
    assert handled_at_kill < N, "the kill did not land in the middle of the stream"
    _assert_exactly_once(sink, expected)
    assert deployment.counted("10000", "fedmq_gateway_refused_total") == 0
    if graceful:  # SIGTERM: in-flight sends finished or went back, then a clean exit
        assert any(e.get("event") == "gateway_stopped" for e in deployment.log(victim))


def test_a_key_rotation_mid_stream_loses_nothing_and_old_signatures_stay_valid(
    deployment, sink, envelope, to_message, paced_publisher, unique_name
):
    # Prepare
    identity_dir = deployment.party_dir("9999") / "identity"
    old = pki.PartyIdentity.load(identity_dir)
    envelopes = [envelope(i, job_id=f"rotation-{unique_name}") for i in range(N)]
    expected = {e.message_id for e in envelopes}

    # Execute: rotate the sending party's keys (new keys + CSR, CA signs, install) mid-stream;
    # SIGHUP tells its gateway to reload at once (its file watch would within seconds anyway).
    # The sending gateway signs a message when its relay takes it off the queue, and the sink
    # lags the publisher by hundreds: the publisher holds its last 300 until the gateway has
    # the new key, else on a loaded machine the whole stream could be signed before the
    # rotation (one key id). Up to 400 are still in flight at the rotation.
    publisher = paced_publisher(envelopes, batch=25, interval=0.05, hold_at=700)
    assert sink.wait_for(300, timeout=40) >= 300, deployment.tail()
    new_cert = pki.rotate_with_local_ca(deployment.state.root + "/ca", identity_dir)
    os.kill(deployment.pid("9999"), signal.SIGHUP)
    poll(
        lambda: any(e.get("event") == "identity_reloaded" for e in deployment.log("9999")),
        20,
    )
    publisher.resume()
    publisher.join(timeout=40)
    # A message signed before the rotation by the old key, still in the queue afterwards.
    late = envelope(N, job_id=f"rotation-{unique_name}").model_copy(
        update={"signer_key_id": old.key_id}
    )
    late = late.model_copy(update={"signature": old.signing_key.sign(canonical_bytes(late))})
    deployment.bus("9999").publish(to_message(late))
    expected.add(late.message_id)
    sink.wait_for(N + 1, timeout=45)
    time.sleep(1.0)

    # Assert
    _assert_exactly_once(sink, expected)
    key_ids = {key_id for _, key_id in sink.rows()}
    assert key_ids == {old.key_id, new_cert.key_id}
    assert deployment.counted("10000", "fedmq_gateway_refused_total") == 0
    assert any(e.get("event") == "identity_reloaded" for e in deployment.log("9999"))
