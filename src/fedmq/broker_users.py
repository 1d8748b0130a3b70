"""`fedmq site broker-users`: one RabbitMQ user per service of a site, as `fedmq local` makes.

A compose or Kubernetes site runs this once before its services start (docker-compose.yml's
`broker-users` one-shot, infra/k8s/broker-users.yaml's Job). For each service that uses the
bus it creates (or resets the password of) the user `<vhost>-<service>` and gives it, on the
party's vhost, exactly the permissions `fedmq local` gives (`fedmq.local.broker_permissions`:
its own queues and the exchanges it publishes to). Each service then connects as its own user,
so the user-id property RabbitMQ validates on every message names the service that sent it, and
a service accepts an envelope with a remote source only from the gateway's user
(docs/security.md, "Least privilege on the broker").

It talks to the broker's management HTTP API (the management plugin the site's image enables),
as the site's admin user; the passwords come from the environment, one per service
(`RABBITMQ_<SERVICE>_PASSWORD`, written by `fedmq site init`). Idempotent: run it again after
changing a password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from fedmq.local import broker_permissions, broker_user

BROKER_SERVICES = ("gateway", "scheduler", "worker", "audit", "serving")
"""The services of a site that connect to its broker, each as its own user."""


def password_key(service: str) -> str:
    """The environment variable (and .env key) holding `service`'s broker password."""
    return f"RABBITMQ_{service.upper()}_PASSWORD"


class BrokerUsersError(RuntimeError):
    """The broker refused a user or its permissions; the message says which and why."""


@dataclass(frozen=True)
class BrokerUser:
    name: str
    service: str
    configure: str
    write: str
    read: str


def planned_users(vhost: str) -> list[BrokerUser]:
    """The users this command makes on `vhost`, with their permissions."""
    return [
        BrokerUser(broker_user(vhost, service), service, *broker_permissions(service))
        for service in BROKER_SERVICES
    ]


@retry(
    retry=retry_if_exception_type(httpx.TransportError),
    stop=stop_after_delay(120),
    wait=wait_fixed(2),
    reraise=True,
)
def _put(client: httpx.Client, path: str, body: Mapping[str, object]) -> None:
    # The broker may still be starting its management listener: connection errors are retried
    # for two minutes; an answer is final.
    response = client.put(path, json=body)
    if response.status_code not in (201, 204):
        raise BrokerUsersError(f"PUT {path}: {response.status_code} {response.text[:300]}")


def apply_broker_users(
    client: httpx.Client, vhost: str, passwords: Mapping[str, str]
) -> list[BrokerUser]:
    """Create or update every service's user and its permissions on `vhost` through the
    management API `client` points at (base URL and admin credentials set)."""
    missing = [password_key(s) for s in BROKER_SERVICES if not passwords.get(s)]
    if missing:
        raise BrokerUsersError(
            f"no password for {', '.join(missing)} (fedmq site init writes them)"
        )
    users = planned_users(vhost)
    for user in users:
        _put(client, f"/api/users/{quote(user.name, safe='')}", {
            "password": passwords[user.service], "tags": ""
        })  # fmt: skip
        _put(
            client,
            f"/api/permissions/{quote(vhost, safe='')}/{quote(user.name, safe='')}",
            {"configure": user.configure, "write": user.write, "read": user.read},
        )
    return users
