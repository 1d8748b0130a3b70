"""Worker settings, read once in main.py from FEDMQ_WORKER_* environment variables."""

from __future__ import annotations

from fedcommon.settings import ServiceSettings
from fedschemas import MAX_ENVELOPE_BYTES
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict


class WorkerSettings(ServiceSettings):
    service_name = "worker"
    model_config = SettingsConfigDict(
        env_prefix="FEDMQ_WORKER_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    topic: str = "svc.worker"
    """The queue this worker consumes (shared by all replicas of the party's worker)."""
    reply_topic: str = "svc.worker.replies"
    """Where demo.pong answers go."""
    max_envelope_bytes: int = Field(default=MAX_ENVELOPE_BYTES, gt=0)
    prefetch: int = Field(default=64, gt=0)
    max_deliveries: int = Field(default=5, gt=0)
    redis_prefix: str = ""
    """Key prefix of cached done markers; empty: "fedmq:<party_id>:worker:inbox:"."""
    redis_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    crash_after_effect: str | None = None
    """TEST ONLY: exit abruptly right after the inbox transaction of this message id committed,
    before the ack (the crash test). Refused outside development."""

    @model_validator(mode="after")
    def _no_crash_hook_in_production(self) -> WorkerSettings:
        if self.crash_after_effect and self.environment != "development":
            raise ValueError("crash_after_effect is a test hook, refused outside development")
        return self

    @property
    def inbox_redis_prefix(self) -> str:
        return self.redis_prefix or f"fedmq:{self.party_id}:worker:inbox:"
