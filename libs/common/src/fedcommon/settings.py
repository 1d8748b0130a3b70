"""Settings every fedmq service shares, read from the environment with one prefix per service.

A service subclasses `ServiceSettings`, sets `service_name` and its own `env_prefix`
(`FEDMQ_WORKER_`, `FEDMQ_GATEWAY_`, ...) and reads it once in `main.py`; libraries get plain
values passed down and never read the environment themselves.

Connection URLs are `SecretStr` because they embed passwords (amqp://user:pass@host/...); their
repr is masked, and `.get_secret_value()` is called only where a connection is made. Outside
`environment="development"`, placeholder secrets ("changeme", empty) are refused at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "changethis", "change_me"})

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Environment = Literal["development", "production"]


def default_database_url(service: str, base_dir: Path = Path(".fedmq")) -> str:
    """The embedded default: a SQLite file per service under ./.fedmq/."""
    return f"sqlite:///{base_dir / f'{service}.db'}"


def is_placeholder_secret(value: str) -> bool:
    """True for an empty or well-known placeholder secret, or a URL whose password is one."""
    if value.strip().lower() in PLACEHOLDER_SECRETS:
        return True
    if "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            return False
        # A URL without a password (peer/trust auth, memory://) is not a placeholder.
        return password is not None and password.strip().lower() in PLACEHOLDER_SECRETS
    return False


class ServiceSettings(BaseSettings):
    """Base settings; subclasses set `service_name` and `model_config`'s `env_prefix`."""

    service_name: ClassVar[str] = "service"

    model_config = SettingsConfigDict(
        env_prefix="FEDMQ_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    party_id: str = "9999"
    bus_url: SecretStr = SecretStr("memory://local")
    database_url: SecretStr = SecretStr("")
    """Empty means the embedded default: sqlite file ./.fedmq/<service_name>.db."""
    redis_url: SecretStr | None = None
    """None: no Redis cache in front of the inbox's done markers."""
    log_level: LogLevel = "INFO"
    log_json: bool = True
    otlp_endpoint: str | None = None
    """OTLP/HTTP traces endpoint (e.g. http://otel-collector:4318/v1/traces); None: no export."""
    trace_file: str | None = None
    """Also append every span as a JSON line to this file (what `fedmq job trace` reads);
    None: no file."""
    environment: Environment = "development"
    profile_out: str | None = Field(
        default=None, validation_alias=AliasChoices("FEDMQ_PROFILE_OUT", "profile_out")
    )
    """A folder: profile the process's CPU (every thread, its own CPU clock) and write
    `<service>-<party>-<pid>.prof` there when it stops (fedcommon.profiling). One variable for
    every service, FEDMQ_PROFILE_OUT, without the service's prefix; None: no profiler."""

    @model_validator(mode="before")
    @classmethod
    def _default_database_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("database_url"):
            data = {**data, "database_url": default_database_url(cls.service_name)}
        return data

    @field_validator("redis_url", "otlp_endpoint", "trace_file", "profile_out", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # FEDMQ_X_REDIS_URL= (set but empty) means "no Redis", not "a Redis with an empty URL".
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        if self.environment == "development":
            return self
        bad = [
            name
            for name, value in self
            if isinstance(value, SecretStr) and is_placeholder_secret(value.get_secret_value())
        ]
        if bad:
            raise ValueError(
                f"placeholder secret in {', '.join(sorted(bad))}: set real values "
                f"(refused outside environment=development)"
            )
        return self


class BusServiceSettings(ServiceSettings):
    """Settings of a service that consumes envelopes from its party's broker (the scheduler, the
    worker): who may carry other parties' envelopes, the delivery limit and the inbox's Redis
    cache. Subclasses add their prefetch and envelope bound (their defaults differ)."""

    gateway_broker_users: tuple[str, ...] = ()
    """Broker users whose publishes may carry another party's envelopes (the party's gateway;
    docs/security.md). Empty: derived from bus_url's user ("<site>-<service>" trusts
    "<site>-gateway"; any other user is taken as shared by the site's services); no check
    when bus_url names no user."""
    max_deliveries: int = Field(default=5, gt=0)
    redis_prefix: str = ""
    """Key prefix of cached done markers; empty: "fedmq:<party_id>:<service>:inbox:"."""
    redis_ttl_s: float = Field(default=24 * 3600.0, gt=0)
