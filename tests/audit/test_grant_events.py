"""Issue #13's "grants used": a party that accepts a job names, in its job.accept, the grants
of its that covered the job, so its audit log (and the initiator's) records which grant let the
job read its tables, and `fedmq audit events JOB` shows it.

Real schedulers (tests/scheduler/conftest.py: memory buses, SQLite, a relay for the gateways)
and each party's real audit service on its bus, read through the gateway's REST API by the
CLI."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import structlog
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


@contextmanager
def _audit_api(party: str, bus_url: str, database: Path) -> Iterator[str]:
    """`party`'s audit on `bus_url`, started before any job so its fan-out sees everything,
    behind its gateway's API: yields the API's URL."""
    audit = Audit(
        AuditSettings(
            party_id=party,
            bus_url=SecretStr(bus_url),
            database_url=SecretStr(f"sqlite:///{database}"),
            signing_key=SigningKey.generate().to_bytes().hex(),
            http_port=-1,
            log_json=False,
        ),
        bus=connect(bus_url),
    )
    audit.start()
    settings = GatewaySettings(
        party_id=party, bus_url=SecretStr(bus_url), api_tokens=[SecretStr(TOKEN)]
    )
    api = create_app(FakeGateway(settings))
    try:
        with serving(api) as url:
            yield url
    finally:
        api.state.api.close()
        audit.stop()


@pytest.fixture
def audit_urls(tmp_path: Path, unique_name: str) -> Iterator[dict[str, str]]:
    """Each party's audit API on its broker of the federation (federation_factory's names)."""
    with ExitStack() as stack:
        yield {
            party: stack.enter_context(
                _audit_api(party, f"memory://{unique_name}-{party}", tmp_path / f"{party}.db")
            )
            for party in (GUEST, HOST)
        }


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> Iterator[None]:
    """The audits, gateways and schedulers run in this process, unconfigured: structlog's
    default logger prints to sys.stdout as it is at each call, which is CliRunner's capture
    while a `fedmq` call runs, so a service thread's log line landed inside the CLI's JSON.
    A service's logs go to stderr (as `fedmq`'s own do); restored afterwards."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        yield
    finally:
        structlog.configure(**saved)


def fedmq(*args: str) -> tuple[int, str]:
    """The CLI's exit code and its stdout alone (its own logs go to stderr)."""
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["audit", *args], catch_exceptions=False)
    return result.exit_code, result.stdout


def test_the_audit_logs_name_the_grant_under_which_a_party_accepted_a_job(
    federation_factory: Callable[..., Federation], audit_urls: dict[str, str]
) -> None:
    # Prepare: the host grants its table to the guest for psi, and another table it does not
    # read for this job
    fed = federation_factory(
        grants=[
            (HOST, "breast_hetero_host", GUEST, ["psi"]),
            (HOST, "unrelated_table", GUEST, ["*"]),
        ]
    )
    with fed.schedulers[HOST].sessions.begin() as session:
        grant_ids = {g.table_name: g.id for g in store.grants(session, grantee=GUEST)}
    job_id = f"job-grant-{uuid.uuid4().hex[:8]}"

    # Execute: the job runs; the CLI reads each party's audit log of it
    fed.client(GUEST).submit(PSI_EVAL, job_id=job_id)
    fed.wait_state(GUEST, job_id, "success")
    records: dict[str, list[dict]] = {}

    def accept_recorded(party: str) -> dict | None:
        api = ["--url", audit_urls[party], "--token", TOKEN]
        code, out = fedmq("events", job_id, "--json", *api)
        assert code == 0, out
        records[party] = json.loads(out)["data"]
        return next((r for r in records[party] if r["type"] == "job.accept"), None)

    accepts = {party: wait_for(lambda p=party: accept_recorded(p)) for party in (HOST, GUEST)}
    shown = fedmq("events", job_id, "--url", audit_urls[HOST], "--token", TOKEN)

    # Assert: the accept that left the host, and the same accept as it reached the guest, name
    # the one grant that covered the job (its id, table and types), not the unrelated one; the
    # CLI's table shows it on that line
    expected = [
        {
            "grant_id": grant_ids["breast_hetero_host"],
            "table": "breast_hetero_host",
            "component_types": ["psi"],
        }
    ]
    assert (accepts[HOST]["direction"], accepts[GUEST]["direction"]) == ("out", "in")
    assert accepts[HOST]["facts"]["grants"] == expected
    assert accepts[GUEST]["facts"]["grants"] == expected
    others = [r for rs in records.values() for r in rs if r["type"] != "job.accept"]
    assert others and all("grants" not in r["facts"] for r in others)
    assert shown[0] == 0, shown[1]
    accept_line = next(line for line in shown[1].splitlines() if "job.accept" in line)
    assert f"#{grant_ids['breast_hetero_host']} breast_hetero_host (psi)" in accept_line
    assert "unrelated_table" not in shown[1]
