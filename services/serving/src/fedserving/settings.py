"""Serving settings, read once in main.py from FEDMQ_SERVING_* environment variables."""

from __future__ import annotations

from typing import ClassVar, Literal

from fedcommon.settings import ServiceSettings
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict


class ServingSettings(ServiceSettings):
    service_name: ClassVar[str] = "serving"
    model_config = SettingsConfigDict(
        env_prefix="FEDMQ_SERVING_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    tables_dir: str = ".fedmq/tables"
    """Where the party's workers keep its tables (the worker's FEDMQ_WORKER_DATA_DIR): a host
    loads its online features from one of them."""
    redis_prefix: str = ""
    """Key prefix of the feature cache and the rate-limit counters; empty:
    "fedmq:<party_id>:serving:"."""
    accept_models_from: tuple[str, ...] = ()
    """The host's policy: guests whose model publications are accepted at once ("*": any
    peer). Others stay `pending` until the operator accepts them (`fedmq model accept`)."""
    host_timeout_s: float = Field(default=0.5, gt=0, le=60)
    """Default deadline of one call to a host for its partial scores (a request may ask for
    less)."""
    rate_limit_rows_per_s: int = Field(default=5000, gt=0)
    """Guest: rows one caller (API token) may score per second, over all services."""
    host_rate_limit_rows_per_s: int = Field(default=200_000, gt=0)
    """Host: rows one guest party may ask partial scores for per second."""
    max_batch_rows: int = Field(default=10_000, gt=0)
    binding_refresh_s: float = Field(default=1.0, ge=0)
    """How stale a replica's cached service bindings may be (another replica's switch shows
    within this); 0: read the database on every request."""
    threads: int = Field(default=16, gt=0)
    """Requests served in parallel (bus prefetch of the serving topics)."""
    host_call_concurrency: int = Field(default=2, ge=0, le=64)
    """Guest: calls in flight per (host, model version); requests that arrive meanwhile wait
    and go together as the next call (fedserving.coalesce). 0: one call per request."""
    signing_key: SecretStr = SecretStr("")
    """Ed25519 private key (64 hex digits) that signs model exports; empty: `key_file`
    (development only: like every secret, it must be set when environment=production)."""
    key_file: str = ".fedmq/serving.key"
    import_trusted_keys: tuple[str, ...] = ()
    """Public keys (hex) whose model exports this party imports, besides its own."""
    feature_source: Literal["table", "http"] = "table"
    """Where a host reads its online features: "table" (one of its tables loaded into Redis,
    `fedmq serving features TABLE`) or "http" (its own feature service, feature_http_url)."""
    feature_refresh_s: float = Field(default=5.0, ge=0)
    """How often the loaded table is compared with the catalogue: a re-uploaded table is
    loaded again (0: never)."""
    feature_http_url: str = ""
    """The host's feature service (POST {"ids", "features"} -> {"rows": {id: {name: value}}},
    docs/serving.md); required with feature_source = http."""
    feature_http_timeout_s: float = Field(default=0.15, gt=0, le=30)
    """One attempt's timeout."""
    feature_http_retries: int = Field(default=2, ge=0, le=10)
    """More attempts after a connection error, a timeout or a 5xx answer."""
    feature_http_deadline_s: float = Field(default=0.35, gt=0, le=60)
    """All attempts of one lookup together (keep it under the guests' host_timeout_s)."""
    feature_http_headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Headers sent to the feature service (e.g. its API token); never logged."""
    http_host: str = "127.0.0.1"
    http_port: int = 8085
    """/healthz and /metrics. 0 picks a free port; -1 serves no HTTP (tests)."""

    @model_validator(mode="after")
    def _http_source_has_url(self) -> ServingSettings:
        if self.feature_source == "http" and not self.feature_http_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                "FEDMQ_SERVING_FEATURE_SOURCE=http needs FEDMQ_SERVING_FEATURE_HTTP_URL "
                "(an http:// or https:// URL of the party's feature service)"
            )
        return self
