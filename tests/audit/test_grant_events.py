"""Issue #13's "grants used": a party that accepts a job names, in its job.accept, the grants
of its that covered the job, so its audit log (and the initiator's) records which grant let the
job read its tables, and `fedmq audit events JOB` shows it.

Real schedulers (tests/scheduler/conftest.py: memory buses, SQLite, a relay for the gateways)
and the host's real audit service on the host's bus, read through the gateway's REST API by the
CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedbus import connect
from fedcrypto.signing import SigningKey
from fedgateway.api.app import create_app
from fedgateway.settings import GatewaySettings
from fedscheduler import store
from pydantic import SecretStr
from typer.testing import CliRunner

from fedmq.cli import app
from tests.api.conftest import FakeGateway, serving
from tests.polling import wait_for
from tests.scheduler.conftest import GUEST, HOST, PSI_EVAL, Federation
from tests.scheduler.conftest import federation_factory as federation_factory

TOKEN = "grant-events-token-0123456789"


@pytest.fixture
def host_audit(tmp_path: Path, unique_name: str) -> Iterator[str]:
    """The host's audit on the host's broker of the federation (federation_factory's bus
    names), started before any job so its fan-out sees everything; yields its gateway API's URL."""
    bus_url = f"memory://{unique_name}-{HOST}"
    audit = Audit(
        AuditSettings(
            party_id=HOST,
            bus_url=SecretStr(bus_url),
            database_url=SecretStr(f"sqlite:///{tmp_path / 'audit.db'}"),
            signing_key=SigningKey.generate().to_bytes().hex(),
            http_port=-1,
            log_json=False,
        ),
        bus=connect(bus_url),
    )
    audit.start()
    settings = GatewaySettings(
        party_id=HOST, bus_url=SecretStr(bus_url), api_tokens=[SecretStr(TOKEN)]
    )
    api = create_app(FakeGateway(settings))
    try:
        with serving(api) as url:
            yield url
    finally:
        api.state.api.close()
        audit.stop()


def fedmq(*args: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["audit", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_the_audit_log_names_the_grant_under_which_a_party_accepted_a_job(
    federation_factory: Callable[..., Federation], host_audit: str
) -> None:
    # Prepare: the host grants its table to the guest for psi, and another table it does not
    # read for this job
    url = host_audit
    fed = federation_factory(
        grants=[
            (HOST, "breast_hetero_host", GUEST, ["psi"]),
            (HOST, "unrelated_table", GUEST, ["*"]),
        ]
    )
    with fed.schedulers[HOST].sessions.begin() as session:
        grant_ids = {g.table_name: g.id for g in store.grants(session, grantee=GUEST)}
    job_id = f"job-grant-{uuid.uuid4().hex[:8]}"

    # Execute: the job runs; the CLI reads the host's audit log of it
    fed.client(GUEST).submit(PSI_EVAL, job_id=job_id)
    fed.wait_state(GUEST, job_id, "success")
    records: list[dict] = []

    def accept_recorded() -> dict | None:
        code, out = fedmq("events", job_id, "--json", "--url", url, "--token", TOKEN)
        assert code == 0, out
        records[:] = json.loads(out)["data"]
        return next((r for r in records if r["type"] == "job.accept"), None)

    accept = wait_for(accept_recorded)
    shown = fedmq("events", job_id, "--url", url, "--token", TOKEN)

    # Assert: the accept that left the host names the one grant that covered the job (its
    # id, table and types), not the unrelated one; the CLI's table shows it on that line
    assert accept["direction"] == "out" and accept["source_party"] == HOST
    assert accept["facts"]["grants"] == [
        {
            "grant_id": grant_ids["breast_hetero_host"],
            "table": "breast_hetero_host",
            "component_types": ["psi"],
        }
    ]
    assert all("grants" not in r["facts"] for r in records if r["type"] != "job.accept")
    assert shown[0] == 0, shown[1]
    accept_line = next(line for line in shown[1].splitlines() if "job.accept" in line)
    assert f"#{grant_ids['breast_hetero_host']} breast_hetero_host (psi)" in accept_line
    assert "unrelated_table" not in shown[1]
