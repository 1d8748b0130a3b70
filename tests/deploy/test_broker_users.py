"""Compose and Kubernetes give each service its own broker user, as `fedmq local` does: a
one-shot (`fedmq site broker-users`) makes `fedmq-<service>` with only that service's
permissions before the services start, each service connects as its own user with its own
password, and `fedmq site init` writes a distinct password per service.

The command talks to RabbitMQ's management API, which the shared test broker does not serve;
it runs here against a recording stand-in of that API (httpx.MockTransport). The permissions it
sets are `fedmq.local.broker_permissions`, which tests/security/test_broker_trust.py checks on
the real broker through `fedmq local`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fedmq import local
from fedmq.broker_users import (
    BROKER_SERVICES,
    BrokerUsersError,
    apply_broker_users,
    password_key,
)
from fedmq.site_cli import init_site, read_env
from tests.deploy.helpers import REPO, load_compose

K8S = REPO / "infra" / "k8s"


def test_every_bus_service_in_compose_connects_as_its_own_user_made_before_it_starts(
    example_env: dict[str, str],
) -> None:
    services = load_compose(example_env)["services"]
    makes = services["broker-users"]
    for service in BROKER_SERVICES:
        # Assert: its own user and password, and it waits for the one-shot that makes it
        url = services[service]["environment"][f"FEDMQ_{service.upper()}_BUS_URL"]
        parsed = httpx.URL(url)
        assert parsed.username == f"fedmq-{service}"
        assert parsed.password == example_env[password_key(service)]
        condition = services[service]["depends_on"]["broker-users"]["condition"]
        assert condition == "service_completed_successfully"
        assert makes["environment"][password_key(service)] == example_env[password_key(service)]
    assert makes["command"][:3] == ["fedmq", "site", "broker-users"]
    assert makes["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    # Only the one-shot knows the admin password
    admins = [n for n, s in services.items() if "amqp://fedmq:" in json.dumps(s)]
    assert admins == []


def test_kubernetes_runs_the_same_one_shot_and_the_secret_names_each_services_user() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "broker-users.yaml" in kustomization["resources"]
    (job,) = [d for d in yaml.safe_load_all((K8S / "broker-users.yaml").read_text()) if d]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]}
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]

    assert container["command"][:3] == ["fedmq", "site", "broker-users"]
    for service in BROKER_SERVICES:
        assert keys[password_key(service)] in secret
        url = httpx.URL(secret[f"FEDMQ_{service.upper()}_BUS_URL"])
        assert url.username == f"fedmq-{service}"


def test_site_init_writes_a_distinct_password_per_service(tmp_path: Path) -> None:
    env = read_env(init_site(tmp_path / "site", "10000", "acme", "bank.example:7443").env_file)

    passwords = [env[password_key(service)] for service in BROKER_SERVICES]

    assert len(set(passwords)) == len(BROKER_SERVICES)
    assert all(len(p) >= 32 for p in passwords)
    assert env["RABBITMQ_PASSWORD"] not in passwords


class ManagementApi:
    """A stand-in for RabbitMQ's management API: records the PUTs, answers as RabbitMQ does."""

    def __init__(self, refuse: str | None = None) -> None:
        self.puts: dict[str, dict[str, Any]] = {}
        self.refuse = refuse

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "PUT"
        assert request.headers["authorization"].startswith("Basic ")
        path = request.url.raw_path.decode()
        if self.refuse is not None and self.refuse in path:
            return httpx.Response(400, json={"error": "bad_request", "reason": "refused"})
        self.puts[path] = json.loads(request.content)
        return httpx.Response(201)


def test_the_command_gives_each_user_exactly_the_permissions_fedmq_local_gives() -> None:
    api = ManagementApi()
    passwords = {service: f"pw-{service}-0123456789" for service in BROKER_SERVICES}
    transport = httpx.MockTransport(api)

    with httpx.Client(base_url="http://rabbitmq:15672", transport=transport, auth=("a", "b")) as c:
        apply_broker_users(c, "fedmq", passwords)

    for service in BROKER_SERVICES:
        user = f"fedmq-{service}"
        assert api.puts[f"/api/users/{user}"] == {"password": passwords[service], "tags": ""}
        configure, write, read = local.broker_permissions(service)
        assert api.puts[f"/api/permissions/fedmq/{user}"] == {
            "configure": configure,
            "write": write,
            "read": read,
        }
    assert len(api.puts) == 2 * len(BROKER_SERVICES)


def test_a_missing_password_or_a_refusal_stops_the_command_saying_which() -> None:
    transport = httpx.MockTransport(ManagementApi(refuse="fedmq-worker"))
    passwords = {service: "pw-0123456789abcdef" for service in BROKER_SERVICES}

    with httpx.Client(
        base_url="http://rabbitmq:15672", transport=transport, auth=("fedmq", "admin-pw")
    ) as client:
        with pytest.raises(BrokerUsersError, match="RABBITMQ_AUDIT_PASSWORD"):
            apply_broker_users(client, "fedmq", {**passwords, "audit": ""})
        with pytest.raises(BrokerUsersError, match=r"PUT /api/users/fedmq-worker: 400"):
            apply_broker_users(client, "fedmq", passwords)
