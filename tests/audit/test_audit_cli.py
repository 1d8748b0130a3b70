"""`fedmq audit events|alerts|report|export|verify` end to end: the CLI over real HTTP to the
gateway's REST API (/api/v1/audit/..., the API token as for the rest), which asks the party's
real audit service over svc.audit.rpc; the audit has recorded an honest hetero_lr job and a job
whose host announced a key of the wrong width."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedbus import Message, connect
from fedcrypto.signing import SigningKey
from fedgateway.api.app import create_app
from fedgateway.settings import GatewaySettings
from pydantic import SecretStr
from typer.testing import CliRunner

from fedmq.cli import app
from tests.api.conftest import FakeGateway, serving
from tests.audit.traffic import GUEST, HOST, KEY_BITS, Traffic, odd_key
from tests.polling import wait_for

TOKEN = "audit-cli-token-0123456789"


@dataclass
class AuditedParty:
    url: str
    honest: str
    cheated: str
    honest_records: int


@pytest.fixture
def party(tmp_path: Path) -> Iterator[AuditedParty]:
    """The guest's audit, fed an honest job and a cheated one, behind its gateway's API."""
    bus_url = f"memory://audit-cli-{uuid.uuid4().hex[:10]}"
    bus = connect(bus_url)
    audit = Audit(
        AuditSettings(
            party_id=GUEST,
            bus_url=SecretStr(bus_url),
            database_url=SecretStr(f"sqlite:///{tmp_path / 'audit.db'}"),
            signing_key=SigningKey.generate().to_bytes().hex(),
            min_key_bits=KEY_BITS,
            http_port=-1,
            log_json=False,
        ),
        bus=bus,
    )
    audit.start()
    honest, cheated = Traffic(job_id="job-honest"), Traffic(job_id="job-cheated")
    sent = [(honest, e) for e in honest.honest(iterations=1)]
    sent += [
        (cheated, e)
        for e in (cheated.propose(), cheated.task_run(), cheated.public_key(HOST, odd_key(2025)))
    ]
    for traffic, envelope in sent:
        delivery = traffic.delivery(envelope)
        bus.declare(delivery.topic)
        bus.publish(Message(delivery.topic, delivery.body, delivery.message_id))
    wait_for(lambda: audit.ctx.head.seq >= len(sent) or None)
    settings = GatewaySettings(
        party_id=GUEST, bus_url=SecretStr(bus_url), api_tokens=[SecretStr(TOKEN)]
    )
    api = create_app(FakeGateway(settings))
    try:
        with serving(api) as url:
            yield AuditedParty(url, honest.job_id, cheated.job_id, len(sent) - 3)
    finally:
        api.state.api.close()
        audit.stop()
        bus.close()


def fedmq(*args: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["audit", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_the_audit_commands_read_the_log_through_the_api(
    party: AuditedParty, tmp_path: Path
) -> None:
    api = ["--url", party.url, "--token", TOKEN]

    # Execute
    events = fedmq("events", party.honest, "--json", *api)
    shown = fedmq("events", party.honest, *api)
    alerts = fedmq("alerts", *api)
    clean = fedmq("report", party.honest, *api)
    critical = fedmq("report", party.cheated, *api)
    exported = fedmq("export", "-o", str(tmp_path / "log.jsonl"), *api)
    verified = fedmq("verify", str(tmp_path / "log.jsonl"))
    refused = fedmq("events", party.honest, "--url", party.url, "--token", "wrong")

    # Assert: events lists every record of the honest job; alerts has the cheated job's
    # finding and nothing of the honest one; report exits 1 only for the critical finding;
    # the exported log verifies offline; a wrong token is refused (exit 2)
    assert events[0] == 0, events[1]
    records = json.loads(events[1])["data"]
    assert len(records) == party.honest_records
    assert {r["tag"] for r in records} >= {"public_key", "host_scores", "residual"}
    assert shown[0] == 0 and "host_scores" in shown[1]
    assert alerts[0] == 0 and "data.key_width" in alerts[1], alerts[1]
    assert party.honest not in alerts[1]
    assert clean[0] == 0, clean[1]
    assert critical[0] == 1 and "data.key_width" in critical[1], critical[1]
    assert exported[0] == 0 and verified[0] == 0, (exported[1], verified[1])
    assert refused[0] == 2
