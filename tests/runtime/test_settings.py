"""ServiceSettings: one env prefix per service, embedded defaults, secrets masked, and
placeholder secrets refused outside development."""

from __future__ import annotations

import pytest
from fedcommon.settings import ServiceSettings
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict


class DemoSettings(ServiceSettings):
    service_name = "demo"
    model_config = SettingsConfigDict(
        env_prefix="FEDMQ_DEMO_", extra="ignore", frozen=True, hide_input_in_errors=True
    )


def test_defaults_are_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = DemoSettings()

    assert settings.bus_url.get_secret_value() == "memory://local"
    assert settings.database_url.get_secret_value() == "sqlite:///.fedmq/demo.db"
    assert settings.redis_url is None
    assert settings.otlp_endpoint is None
    assert settings.environment == "development"


def test_values_come_from_the_service_prefix_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMQ_DEMO_PARTY_ID", "10000")
    monkeypatch.setenv("FEDMQ_DEMO_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("FEDMQ_OTHER_PARTY_ID", "4242")

    settings = DemoSettings()

    assert settings.party_id == "10000"
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"


def test_connection_urls_are_masked_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMQ_DEMO_BUS_URL", "amqp://fed:s3cr3t@broker:5672/%2F")

    assert "s3cr3t" not in repr(DemoSettings())


def test_empty_redis_url_means_no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMQ_DEMO_REDIS_URL", "")

    assert DemoSettings().redis_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FEDMQ_DEMO_BUS_URL", "amqp://fed:changeme@broker:5672/%2F"),
        ("FEDMQ_DEMO_DATABASE_URL", "postgresql://fed:changeme@db/fedmq"),
        ("FEDMQ_DEMO_BUS_URL", ""),
    ],
)
def test_placeholder_secret_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("FEDMQ_DEMO_ENVIRONMENT", "production")
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError, match="placeholder secret") as err:
        DemoSettings()

    assert "changeme@" not in str(err.value)


def test_placeholder_secret_is_allowed_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMQ_DEMO_BUS_URL", "amqp://fed:changeme@broker:5672/%2F")

    assert DemoSettings().bus_url.get_secret_value().startswith("amqp://fed:changeme@")


def test_real_secrets_pass_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMQ_DEMO_ENVIRONMENT", "production")
    monkeypatch.setenv("FEDMQ_DEMO_BUS_URL", "amqp://fed:Xq8-long-random@broker:5672/%2F")
    monkeypatch.setenv("FEDMQ_DEMO_DATABASE_URL", "postgresql://fed@db/fedmq")

    assert DemoSettings().environment == "production"
