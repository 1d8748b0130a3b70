"""Both parties' gateway APIs, fuzzed from their own OpenAPI document (schemathesis): no route
answers 5xx, every status is one the document lists for the route, and every body matches the
documented schema (422s included).

Each party (the guest 9999 and the host 10000) is its gateway's API app, in process through
ASGI, in front of a real scheduler on its own RabbitMQ vhost and PostgreSQL database and the
party's data service (fedworker.data) over the same broker: the 32-bit attempt column and the
peer routing (`out.<peer>` exists for the peer only) are the real ones. The seed is fixed and
the examples per route bounded, so a run is repeatable and takes about a minute.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedbus import Bus, connect
from fedbus.sql_inbox import make_engine
from fedflow.tables import TableStore
from fedgateway.api.app import create_app
from fedgateway.settings import GatewaySettings
from fedscheduler.main import Scheduler
from fedscheduler.settings import SchedulerSettings
from fedschemas import topics
from fedserving.main import Service as ServingService
from fedserving.settings import ServingSettings
from fedworker.data import DataServer, PartyTables
from fedworker.metrics import WorkerMetrics
from hypothesis import HealthCheck, given, seed, settings
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup

from fedmq import local

from .conftest import TOKEN, FakeGateway

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

PARTIES = ("9999", "10000")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES_PER_ROUTE = {"9999": 12, "10000": 4}
"""Examples per route, by party: both parties' documents and routes are fuzzed, the guest's
fully; the host runs the same app code over its own broker, database and peer routing, so a
third of the examples there is enough to catch what differs by party."""


class GatewayUnderTest:
    """One party: scheduler and data service on the real servers, the API app over them."""

    def __init__(
        self, party: str, amqp_url: str, database_url: str, tmp: Path, redis_url: str
    ) -> None:
        self.party = party
        self.vhost = f"fedmqs{uuid.uuid4().hex[:8]}-{party}"
        local.ensure_vhost(self.vhost)
        bus_url = f"{amqp_url.rsplit('/', 1)[0]}/{self.vhost}"
        # What the party's gateway declares: an outbound topic for each peer, none for others.
        self.admin: Bus = connect(bus_url)
        for peer in PARTIES:
            if peer != party:
                self.admin.declare(topics.out_topic(peer))
        self.scheduler = Scheduler(
            SchedulerSettings(
                party_id=party,
                bus_url=SecretStr(bus_url),
                database_url=SecretStr(database_url),
                http_port=-1,
            )
        )
        self.scheduler.start()
        self.engine = make_engine(database_url)
        self.data = DataServer(
            self.admin,
            topics.DATA_RPC,
            party,
            PartyTables(TableStore(self.engine, tmp / f"tables-{party}")),
            metrics=WorkerMetrics(process=False),
        )
        self.data.start()
        # The audit service answers /api/v1/audit/... (its read models on svc.audit.rpc).
        self.audit = Audit(
            AuditSettings(
                party_id=party,
                bus_url=SecretStr(bus_url),
                database_url=SecretStr(database_url),
                http_port=-1,
                key_file=str(tmp / f"audit-{party}.key"),
            )
        )
        self.audit.start()
        # The serving service answers /api/v1/serving/... (svc.serving.rpc; docs/serving.md).
        self.serving = ServingService(
            ServingSettings(
                party_id=party,
                bus_url=SecretStr(bus_url),
                database_url=SecretStr(database_url),
                redis_url=SecretStr(redis_url),
                redis_prefix=f"{self.vhost}:serving:",
                tables_dir=str(tmp / f"tables-{party}"),
                key_file=str(tmp / f"serving-{party}.key"),
                http_port=-1,
                threads=2,
            )
        )
        self.serving.start()
        settings = GatewaySettings(
            party_id=party, bus_url=SecretStr(bus_url), api_tokens=[SecretStr(TOKEN)]
        )
        self.app = create_app(FakeGateway(settings))

    def close(self) -> None:
        api = self.app.state.api
        if api is not None:
            api.close()
        self.data.stop()
        self.audit.stop()
        self.serving.stop()
        self.scheduler.stop()
        self.admin.close()
        self.engine.dispose()
        local.delete_vhost(self.vhost)


@pytest.fixture(scope="module", params=PARTIES, ids=[f"party {p}" for p in PARTIES])
def gateway(
    request: pytest.FixtureRequest,
    amqp_url: str,
    pg_admin_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayUnderTest]:
    party: str = request.param
    database = f"fedmq_fuzz_{uuid.uuid4().hex[:10]}"
    local.ensure_database(pg_admin_url, database)
    under_test = GatewayUnderTest(
        party,
        amqp_url,
        f"{pg_admin_url.rsplit('/', 1)[0]}/{database}",
        tmp_path_factory.mktemp(f"fuzz-{party}"),
        redis_url,
    )
    try:
        yield under_test
    finally:
        under_test.close()
        local.drop_database(pg_admin_url, database)


def fuzz_operation(operation: Any, examples_per_route: int) -> str | None:
    """Run one route's examples (valid and invalid requests); the first failure, or None."""

    @given(
        case=operation.as_strategy(GenerationMode.POSITIVE)
        | operation.as_strategy(GenerationMode.NEGATIVE)
    )
    @seed(20261206)
    @settings(
        max_examples=examples_per_route,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def examples(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    try:
        examples()
    except (Failure, FailureGroup) as exc:  # the failed checks, with a curl to reproduce
        return f"{operation.method.upper()} {operation.path}: {exc}"
    return None


def test_no_route_answers_5xx_or_off_its_documented_schema(gateway: GatewayUnderTest) -> None:
    # Prepare: the operations of the party's own OpenAPI document.
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", gateway.app)
    operations = [result.ok() for result in schema.get_all_operations()]

    # Execute
    per_route = EXAMPLES_PER_ROUTE[gateway.party]
    failures = [f for op in operations if (f := fuzz_operation(op, per_route)) is not None]

    # Assert: every route was fuzzed, and none failed a check.
    assert len(operations) >= 12, [op.path for op in operations]
    assert failures == [], "\n\n".join(failures)
