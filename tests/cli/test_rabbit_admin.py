"""fedmq.rabbit_admin: the launcher administers RabbitMQ through the management HTTP API where
it serves the broker, and falls back to rabbitmqctl where it does not.

Against the real shared RabbitMQ (its management plugin on :15672, scripts/ensure-services):
- through HTTP, the launcher's vhost and service user exist, the user connects with its
  password and is refused outside its permissions, a new password replaces the old one, and
  deleting the vhost removes the user too;
- through rabbitmqctl (the fallback), a user gets exactly the permission regexes asked for;
- the choice: a closed API port or an API that serves another broker (AMQP port) means
  rabbitmqctl, FEDMQ_RABBIT_ADMIN_MODE forces either, and `http` says why it cannot.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import aiormq
import httpx
import pytest
from fedschemas import topics

from fedmq import local
from fedmq.rabbit_admin import (
    CtlRabbitAdmin,
    HttpRabbitAdmin,
    RabbitAdminError,
    RabbitAdminSettings,
    open_admin,
)
from tests.bus.raw_amqp import RawAmqp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _as_user(amqp_url: str, vhost: str, user: str, password: str) -> str:
    parsed = urlsplit(amqp_url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parsed.netloc.rpartition('@')[2]}"
    return urlunsplit(parsed._replace(netloc=netloc, path="/" + quote(vhost, safe="")))


@pytest.fixture
def http_admin(amqp_url: str) -> Iterator[HttpRabbitAdmin]:
    admin = open_admin(amqp_url, RabbitAdminSettings(mode="http"))
    assert isinstance(admin, HttpRabbitAdmin)
    yield admin
    admin.close()


@pytest.fixture
def vhost(http_admin: HttpRabbitAdmin) -> Iterator[str]:
    name = f"fedmqa{uuid.uuid4().hex[:8]}-9999"
    yield name
    local.delete_vhost(name, admin=http_admin)  # no-op once the test deleted it


def test_http_admin_makes_a_service_user_that_gets_only_its_permissions(
    amqp_url: str, http_admin: HttpRabbitAdmin, vhost: str
) -> None:
    # Prepare / Execute: the launcher's vhost and the worker's user, as prepare makes them
    local.ensure_vhost(vhost, admin=http_admin)
    user = local.ensure_broker_user(vhost, "worker", "first-pw", admin=http_admin)

    # Assert: listed, and the user works within its permissions and is refused outside them
    assert vhost in local.existing_vhosts(http_admin)
    assert user in local.existing_users(http_admin)
    raw = RawAmqp(_as_user(amqp_url, vhost, user, "first-pw"))
    try:
        assert raw.queue_declare(topics.WORKER, durable=True).method.queue == topics.WORKER
        with pytest.raises(aiormq.exceptions.AMQPError, match="ACCESS_REFUSED"):
            raw.queue_declare(topics.SCHEDULER_RPC, durable=True)
    finally:
        raw.close()


def test_http_admin_resets_a_password_and_deleting_the_vhost_removes_its_users(
    amqp_url: str, http_admin: HttpRabbitAdmin, vhost: str
) -> None:
    # Prepare
    local.ensure_vhost(vhost, admin=http_admin)
    user = local.ensure_broker_user(vhost, "gateway", "old-pw", admin=http_admin)

    # Execute: up again with a new password (the user exists: its password changes)
    local.ensure_broker_user(vhost, "gateway", "new-pw", admin=http_admin)
    with pytest.raises(aiormq.exceptions.AMQPError, match="ACCESS_REFUSED"):
        RawAmqp(_as_user(amqp_url, vhost, user, "old-pw"))
    RawAmqp(_as_user(amqp_url, vhost, user, "new-pw")).close()
    local.delete_vhost(vhost, admin=http_admin)

    # Assert
    assert vhost not in local.existing_vhosts(http_admin)
    assert user not in local.existing_users(http_admin)
    with pytest.raises(aiormq.exceptions.AMQPError, match="ACCESS_REFUSED"):
        RawAmqp(_as_user(amqp_url, vhost, user, "new-pw"))


def test_rabbitmqctl_admin_gives_a_user_exactly_the_permission_regexes(
    amqp_url: str, http_admin: HttpRabbitAdmin, vhost: str
) -> None:
    # Prepare: the vhost through HTTP (each rabbitmqctl call boots an Erlang VM: seconds)
    http_admin.add_vhost(vhost)
    ctl = CtlRabbitAdmin()
    user = local.broker_user(vhost, "scheduler")

    # Execute
    ctl.add_user(user, "pw")
    ctl.set_permissions(vhost, user, *local.broker_permissions("scheduler"))

    # Assert: what the broker stored (read back through HTTP) and what rabbitmqctl lists
    parsed = urlsplit(amqp_url)
    with httpx.Client(auth=(parsed.username or "", parsed.password or ""), timeout=30) as c:
        stored = c.get(f"{http_admin.base_url}/api/permissions/{vhost}/{user}").json()
    assert (stored["configure"], stored["write"], stored["read"]) == local.broker_permissions(
        "scheduler"
    )
    assert user in ctl.list_users()
    local.delete_broker_users(vhost, admin=http_admin)


def test_auto_falls_back_to_rabbitmqctl_when_the_api_port_is_closed(amqp_url: str) -> None:
    # Prepare: a port nothing listens on
    closed = local.free_port()

    # Execute
    admin = open_admin(amqp_url, RabbitAdminSettings(port=closed))

    # Assert
    assert isinstance(admin, CtlRabbitAdmin)
    assert f"127.0.0.1:{closed}" in admin.why


def test_auto_never_administers_another_broker_through_this_ones_api(amqp_url: str) -> None:
    # Prepare: the URL of a broker on another AMQP port of the same host (a test's own node)
    parsed = urlsplit(amqp_url)
    other = urlunsplit(parsed._replace(netloc=parsed.netloc.replace(":5672", ":5999")))

    # Execute
    admin = open_admin(other, RabbitAdminSettings())

    # Assert
    assert isinstance(admin, CtlRabbitAdmin)
    assert "not 5999" in admin.why


def test_http_mode_says_why_it_cannot_and_rabbitmqctl_mode_asks_nothing(amqp_url: str) -> None:
    with pytest.raises(RabbitAdminError, match="FEDMQ_RABBIT_ADMIN_MODE=http, but"):
        open_admin(amqp_url, RabbitAdminSettings(mode="http", port=local.free_port()))
    assert isinstance(open_admin(amqp_url, RabbitAdminSettings(mode="rabbitmqctl")), CtlRabbitAdmin)


def test_the_launcher_reads_its_admin_settings_from_the_environment(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Execute
    monkeypatch.setenv("FEDMQ_RABBIT_ADMIN_MODE", "rabbitmqctl")
    forced = local.broker_admin(amqp_url)
    monkeypatch.delenv("FEDMQ_RABBIT_ADMIN_MODE")
    default = local.broker_admin(amqp_url)

    # Assert
    assert isinstance(forced, CtlRabbitAdmin)
    assert isinstance(default, HttpRabbitAdmin)
