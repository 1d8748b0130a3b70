"""Gateways wired in one process on memory:// buses (fast): signing on the way out, routing on the
way in, a third party added by settings alone, the HTTP endpoints, and source-side refusals."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections.abc import Iterator

import pytest
from fedbus import HEADER_DEAD_REASON, Message, connect
from fedcrypto.signing import VerifyKey
from fedgateway.main import Gateway
from fedgateway.settings import load_settings
from fedschemas import DemoPing, PartyRef, canonical_bytes, decode_envelope, encode_envelope
from fedschemas import new_envelope as make

from tests.polling import poll
from tests.relay_helpers import InProcessGateways, collect

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster(tmp_path, unique_name) -> Iterator[InProcessGateways]:
    with InProcessGateways(tmp_path, ["9999", "10000", "10001"], unique_name) as c:
        yield c


def _envelope(source: str, destination: str, seq: int = 0):
    return make(
        DemoPing(text="hello", n=seq),
        job_id="job",
        component="c",
        task_id="t",
        attempt=0,
        source=PartyRef(party_id=source, role="guest"),
        destination=PartyRef(party_id=destination, role="host"),
        tag="ping",
        iteration=-1,
        seq=seq,
        created_at=dt.datetime.now(dt.UTC),
    )


def test_the_sending_gateway_signs_and_the_receiving_gateway_routes_by_type(cluster):
    # Prepare
    got, arrived = collect(cluster.bus_url("10000"), "svc.worker")
    env = _envelope("9999", "10000")
    sender_identity = cluster.identities["9999"]

    # Execute
    connect(cluster.bus_url("9999")).publish(
        Message(
            topic="out.10000",
            body=encode_envelope(env),
            message_id=env.message_id,
            headers={"x-test": "kept"},
        )
    )

    # Assert: one delivery, same id and headers, signed with 9999's key over canonical bytes.
    assert arrived.wait(20)
    received = decode_envelope(got[0].body)
    assert got[0].message_id == env.message_id
    assert got[0].headers.get("x-test") == "kept"
    assert received.signer_key_id == sender_identity.key_id
    VerifyKey.from_bytes(sender_identity.signing_key.verify_key().to_bytes()).verify(
        canonical_bytes(received), received.signature
    )
    assert received.model_copy(update={"signature": None, "signer_key_id": None}) == env


def test_a_third_party_is_reached_by_settings_alone(cluster):
    # Prepare
    got, arrived = collect(cluster.bus_url("10001"), "svc.worker")
    env = _envelope("9999", "10001")

    # Execute
    connect(cluster.bus_url("9999")).publish(
        Message(topic="out.10001", body=encode_envelope(env), message_id=env.message_id)
    )

    # Assert
    assert arrived.wait(20)
    assert got[0].message_id == env.message_id


def test_the_source_dead_letters_what_it_must_not_relay(cluster):
    # Prepare
    bus = connect(cluster.bus_url("9999"))
    misaddressed = _envelope("9999", "10001")
    impersonating = _envelope("10000", "10001")

    # Execute
    bus.publish(Message(topic="out.10000", body=b"\x00garbage", message_id="garbage-1"))
    bus.publish(
        Message(
            topic="out.10000",
            body=encode_envelope(misaddressed),
            message_id=misaddressed.message_id,
        )
    )
    bus.publish(
        Message(
            topic="out.10001",
            body=encode_envelope(impersonating),
            message_id=impersonating.message_id,
        )
    )
    reasons: dict[str, str] = {}

    def all_three_dead() -> bool:
        for topic in ("out.10000", "out.10001"):
            for d in bus.dead_letters(topic):
                reasons[d.message_id] = d.headers[HEADER_DEAD_REASON]
        return len(reasons) >= 3

    poll(all_three_dead, 10, interval=0.05)

    # Assert
    assert reasons["garbage-1"].startswith("malformed envelope")
    assert "addressed to party 10001" in reasons[misaddressed.message_id]
    assert "source party 10000 is not this party" in reasons[impersonating.message_id]


def test_health_and_metrics_endpoints_answer(cluster):
    # Prepare
    gateway = cluster.gateways["10000"]
    base = f"http://127.0.0.1:{gateway.http_port}"

    # Execute
    with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
        health = json.loads(resp.read())
    with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
        metrics = resp.read().decode()

    # Assert
    assert health["status"] == "ok" and health["party_id"] == "10000"
    assert set(health["peers"]) == {"9999", "10001"}
    assert "fedmq_gateway_refused_total" in metrics or "fedmq_gateway_refused" in metrics


def test_settings_come_from_a_json_file_named_in_the_environment(tmp_path, monkeypatch):
    # Prepare
    path = tmp_path / "gateway.json"
    path.write_text(
        json.dumps(
            {
                "party_id": "10001",
                "peers": {"9999": {"address": "10.0.0.1:7443"}},
                "routes": {"demo.": "svc.demo"},
            }
        )
    )
    monkeypatch.setenv("FEDMQ_GATEWAY_SETTINGS_FILE", str(path))

    # Execute
    settings = load_settings()

    # Assert
    assert settings.party_id == "10001"
    assert settings.peers["9999"].address == "10.0.0.1:7443"
    assert settings.routes == {"demo.": "svc.demo"}


def test_a_server_presenting_another_partys_certificate_is_refused_by_the_client(cluster):
    # Prepare: a second gateway of party 9999 whose "10000" address is really 10001's port.
    impostor_port = cluster.gateways["10001"].link_port
    gateway = Gateway(
        cluster.settings(
            "9999",
            bus_url=f"memory://{cluster.name}-9999-b",
            peers={"10000": {"address": f"127.0.0.1:{impostor_port}"}},
        )
    )
    gateway.start()
    try:
        env = _envelope("9999", "10000")
        bus = connect(f"memory://{cluster.name}-9999-b")

        # Execute
        bus.publish(
            Message(topic="out.10000", body=encode_envelope(env), message_id=env.message_id)
        )
        refused = poll(
            lambda: (
                gateway.metrics.registry.get_sample_value(
                    "fedmq_gateway_connections_refused_total",
                    {"side": "client", "reason": "wrong_party"},
                )
                or 0.0
            ),
            10,
            interval=0.05,
        )

        # Assert: refused and counted; the message stays at the source, nothing was relayed.
        assert refused >= 1
        assert not gateway.metrics.registry.get_sample_value(
            "fedmq_gateway_relayed_total", {"direction": "out", "peer": "10000"}
        )
    finally:
        gateway.stop()
