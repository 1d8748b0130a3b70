"""RabbitMQ administration for `fedmq local` and the test stacks: vhosts, users, permissions.

One interface (`RabbitAdmin`), two implementations:
- `HttpRabbitAdmin`: the management plugin's HTTP API (one request per operation, a few ms);
- `CtlRabbitAdmin`: `rabbitmqctl`, which boots an Erlang VM per call (1-2 s of CPU each), needs
  root or the rabbitmq user, and acts on the local node (`RABBITMQ_NODENAME` picks another).

`open_admin` picks one for a broker given by its AMQP URL. `mode="auto"` (the default) uses the
HTTP API when it answers on the URL's host and the settings' port, accepts the URL's
credentials, and serves the broker whose AMQP listener is the URL's port; otherwise it uses
rabbitmqctl and logs one line saying why. The listener check matters: a test's own RabbitMQ
node on another AMQP port must never be administered through the shared node's API (the
management port is the same on every node of a host by default).

Permissions are RabbitMQ's (configure, write, read) regexes, passed through unchanged by both.
"""

from __future__ import annotations

import shutil
import subprocess
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal
from urllib.parse import quote, unquote, urlsplit

import httpx
import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = structlog.get_logger(__name__)

AdminMode = Literal["auto", "http", "rabbitmqctl"]


class RabbitAdminSettings(BaseSettings):
    """How the launcher administers RabbitMQ (FEDMQ_RABBIT_ADMIN_MODE, FEDMQ_RABBIT_ADMIN_PORT,
    FEDMQ_RABBIT_ADMIN_TIMEOUT_S)."""

    model_config = SettingsConfigDict(env_prefix="FEDMQ_RABBIT_ADMIN_", extra="ignore")

    mode: AdminMode = "auto"
    """auto: the HTTP API where it serves this broker, else rabbitmqctl; http or rabbitmqctl:
    only that one (http fails clearly when the API does not answer)."""
    port: int = Field(default=15672, ge=1, le=65535)
    """The management plugin's HTTP port on the AMQP URL's host."""
    timeout_s: float = Field(default=30.0, gt=0)
    """Per HTTP request (the broker is slow under load, not absent)."""


class RabbitAdminError(Exception):
    """An administration call failed; the message says which call and what the broker said."""


class RabbitAdmin(ABC):
    """Vhosts, users and permissions of one RabbitMQ broker."""

    kind: ClassVar[str]

    @abstractmethod
    def list_vhosts(self) -> set[str]: ...

    @abstractmethod
    def add_vhost(self, vhost: str) -> None: ...

    @abstractmethod
    def delete_vhost(self, vhost: str) -> None:
        """Delete the vhost with its queues and exchanges (and every user's permissions on it)."""

    @abstractmethod
    def list_users(self) -> set[str]: ...

    @abstractmethod
    def add_user(self, user: str, password: str) -> None:
        """A new user without tags (no management access)."""

    @abstractmethod
    def change_password(self, user: str, password: str) -> None:
        """Of an existing user; its tags are kept."""

    @abstractmethod
    def delete_user(self, user: str) -> None: ...

    @abstractmethod
    def set_permissions(
        self, vhost: str, user: str, configure: str, write: str, read: str
    ) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Release what the admin holds."""


class HttpRabbitAdmin(RabbitAdmin):
    """Through the management plugin's HTTP API (`/api/...`), as an administrator user."""

    kind = "http"

    def __init__(
        self, base_url: str, username: str, password: str, *, timeout_s: float = 30.0
    ) -> None:
        self.base_url = base_url
        # A short connect timeout: a closed or filtered port means "fall back", not a wait.
        timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
        self._client = httpx.Client(base_url=base_url, auth=(username, password), timeout=timeout)

    def _request(
        self, method: str, path: str, *, ok: tuple[int, ...], body: dict[str, Any] | None = None
    ) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise RabbitAdminError(f"{method} {self.base_url}{path}: {exc}") from exc
        if response.status_code not in ok:
            raise RabbitAdminError(
                f"{method} {self.base_url}{path}: {response.status_code} {response.text[:300]}"
            )
        return response

    def _names(self, path: str) -> set[str]:
        rows = self._request("GET", f"{path}?columns=name", ok=(200,)).json()
        return {str(row["name"]) for row in rows}

    def list_vhosts(self) -> set[str]:
        return self._names("/api/vhosts")

    def add_vhost(self, vhost: str) -> None:
        self._request("PUT", f"/api/vhosts/{_q(vhost)}", ok=(201, 204))

    def delete_vhost(self, vhost: str) -> None:
        self._request("DELETE", f"/api/vhosts/{_q(vhost)}", ok=(204,))

    def list_users(self) -> set[str]:
        return self._names("/api/users")

    def add_user(self, user: str, password: str) -> None:
        self._request(
            "PUT", f"/api/users/{_q(user)}", ok=(201, 204), body={"password": password, "tags": ""}
        )

    def change_password(self, user: str, password: str) -> None:
        # PUT replaces the whole user: read its tags first so that only the password changes.
        current = self._request("GET", f"/api/users/{_q(user)}", ok=(200,)).json()
        tags = current.get("tags", [])
        tags = ",".join(tags) if isinstance(tags, list) else str(tags)
        self._request(
            "PUT",
            f"/api/users/{_q(user)}",
            ok=(201, 204),
            body={"password": password, "tags": tags},
        )

    def delete_user(self, user: str) -> None:
        self._request("DELETE", f"/api/users/{_q(user)}", ok=(204,))

    def set_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        self._request(
            "PUT",
            f"/api/permissions/{_q(vhost)}/{_q(user)}",
            ok=(201, 204),
            body={"configure": configure, "write": write, "read": read},
        )

    def amqp_ports(self) -> set[int]:
        """The AMQP (and AMQPS) listener ports of the broker behind this API."""
        overview = self._request("GET", "/api/overview?columns=listeners", ok=(200,)).json()
        return {
            int(listener["port"])
            for listener in overview.get("listeners", [])
            if str(listener.get("protocol", "")).startswith("amqp")
        }

    def close(self) -> None:
        self._client.close()


class CtlRabbitAdmin(RabbitAdmin):
    """Through `rabbitmqctl` on this machine (root or the rabbitmq user; the local node, or
    RABBITMQ_NODENAME's). `why`: why the HTTP API is not used, said again if rabbitmqctl is
    missing too."""

    kind = "rabbitmqctl"

    def __init__(self, *, why: str = "") -> None:
        self.why = why

    def _run(self, *args: str) -> str:
        exe = shutil.which("rabbitmqctl")
        if exe is None:
            raise RabbitAdminError(
                "rabbitmqctl not found on PATH: the launcher creates one RabbitMQ vhost per party "
                "and a broker user per service, through the management HTTP API when it answers, "
                "else with rabbitmqctl (install rabbitmq-server, and run as root or the rabbitmq "
                "user, or enable rabbitmq_management)"
                + (f"; the HTTP API was not used: {self.why}" if self.why else "")
            )
        result = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RabbitAdminError(
                f"rabbitmqctl {' '.join(args[:1])} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[:500]}"
            )
        return result.stdout

    def list_vhosts(self) -> set[str]:
        out = self._run("list_vhosts", "--quiet", "--no-table-headers")
        return {line.strip() for line in out.splitlines() if line.strip()}

    def add_vhost(self, vhost: str) -> None:
        self._run("add_vhost", vhost)

    def delete_vhost(self, vhost: str) -> None:
        self._run("delete_vhost", vhost)

    def list_users(self) -> set[str]:
        out = self._run("list_users", "--quiet", "--no-table-headers")
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def add_user(self, user: str, password: str) -> None:
        self._run("add_user", user, password)

    def change_password(self, user: str, password: str) -> None:
        self._run("change_password", user, password)

    def delete_user(self, user: str) -> None:
        self._run("delete_user", user)

    def set_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        self._run("set_permissions", "-p", vhost, user, configure, write, read)

    def close(self) -> None:
        """Nothing to release: each call is its own process."""


def _q(name: str) -> str:
    # Vhost and user names are path segments: "/" (the default vhost) must become %2F.
    return quote(name, safe="")


def management_url(amqp_url: str, port: int) -> str:
    """The management API's base URL for the broker at `amqp_url` (same host)."""
    host = urlsplit(amqp_url).hostname or "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def open_admin(amqp_url: str, settings: RabbitAdminSettings) -> RabbitAdmin:
    """The admin of the broker at `amqp_url` (its credentials are the admin's; its vhost path
    is ignored), chosen by `settings.mode` (module docstring)."""
    if settings.mode == "rabbitmqctl":
        return CtlRabbitAdmin(why="FEDMQ_RABBIT_ADMIN_MODE=rabbitmqctl")
    parsed = urlsplit(amqp_url)
    amqp_port = parsed.port or (5671 if parsed.scheme == "amqps" else 5672)
    api = management_url(amqp_url, settings.port)
    admin = HttpRabbitAdmin(
        api,
        unquote(parsed.username or "guest"),
        unquote(parsed.password or "guest"),
        timeout_s=settings.timeout_s,
    )
    try:
        ports = admin.amqp_ports()
        why = (
            ""
            if amqp_port in ports
            else f"{api} serves the broker with AMQP port(s) {sorted(ports)}, not {amqp_port}"
        )
    except RabbitAdminError as exc:
        why = f"the management API does not answer: {exc}"
    if not why:
        return admin
    admin.close()
    if settings.mode == "http":
        raise RabbitAdminError(f"FEDMQ_RABBIT_ADMIN_MODE=http, but {why}")
    log.warning("rabbit_admin_fallback", using="rabbitmqctl", api=api, reason=why)
    return CtlRabbitAdmin(why=why)
