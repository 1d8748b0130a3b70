"""Scheduler settings, read once in main.py from FEDMQ_SCHEDULER_* environment variables."""

from __future__ import annotations

from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fedcommon.settings import BusServiceSettings, is_placeholder_secret
from fedschemas import MAX_ENVELOPE_BYTES, topics
from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict


class SchedulerSettings(BusServiceSettings):
    service_name: ClassVar[str] = "scheduler"
    model_config = SettingsConfigDict(
        env_prefix="FEDMQ_SCHEDULER_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    topic: str = topics.SCHEDULER
    """The scheduler's inbox: job.* from other parties (via the gateway), task.status from the
    party's worker, job.submit from local users."""
    rpc_topic: str = topics.SCHEDULER_RPC
    """Request/reply commands and read-models for the REST API and CLI (docs/scheduler.md)."""
    worker_topic: str = topics.WORKER
    """Where task.run and task.cancel go (the party's own workers)."""
    out_topic_prefix: str = topics.OUT_PREFIX
    """`<prefix><party>` is drained by the gateway towards remote party <party>."""
    party_timeout_s: float = Field(default=120.0, gt=0)
    """The initiator fails a job when a party of it is silent this long (no heartbeat or status)
    while it runs, or leaves a proposal unanswered this long; a participant fails its side of a
    job when the initiator is silent this long. Longer than the link outages the gateways ride
    out."""
    heartbeat_interval_s: float = Field(default=0.0, ge=0)
    """How often a party sends job.status heartbeats for its open jobs (participants to the
    initiator, the initiator to every participant); 0: party_timeout_s/6 (several beats fit in
    one timeout, so one lost beat never fails a job)."""
    task_timeout_s: float = Field(default=7200.0, ge=0)
    """The initiator fails a job when one of its tasks has not finished this long after it
    started (or became ready to), unless the component sets its own `timeout_s` in the
    pipeline. Two hours by default: a task whose worker is stopped or hung fails its job
    instead of keeping it running for ever; give a longer component its own `timeout_s`.
    0: no limit (a hanging component keeps its job running until stopped)."""
    job_expected_s: float = Field(default=3600.0, gt=0)
    """Expected duration of a pipeline that never succeeded at this party; one that did is
    expected to take at most 3 times its longest of its last 10 successful runs (at least a
    minute). A job open longer fires FedmqJobOverdue (fedscheduler.timeouts.job_age,
    docs/observability.md); nothing is failed because of it."""
    timer_interval_s: float = Field(default=1.0, gt=0)
    """Period of the timer thread that checks timeouts and sends heartbeats."""
    self_grants_implied: bool = True
    policy_file: str = ""
    """This party's security policy, YAML or JSON (fedflow.policy, docs/policy.md): the key
    floor, revealing modes, components and parameter bounds it accepts in any job. Empty: the
    secure defaults (2048-bit keys at least, no revealing mode). A named file that is missing
    or invalid stops the scheduler at start-up."""
    legacy_job_status: bool = True
    """Send job.status for a job's start, end, heartbeats and task reports, as the previous
    version did, so its schedulers read them; false: job.start, job.end, job.heartbeat and
    job.task_report. Both are read either way. Turn it off once every party runs this version
    (docs/scheduler.md, "Message types")."""
    """A party's own tables may be read by jobs it initiates without a grant to itself (the
    submitter is the owner). False: the initiator checks its grants to itself like anyone's."""
    http_host: str = "127.0.0.1"
    http_port: int = 8082
    """/healthz and /metrics. 0 picks a free port; -1 serves no HTTP (tests)."""
    rpc_timeout_s: float = Field(default=10.0, gt=0)
    max_envelope_bytes: int = Field(default=MAX_ENVELOPE_BYTES, gt=0)
    prefetch: int = Field(default=16, gt=0)
    audit_public_key: str = ""
    """The party's audit service's Ed25519 public key, 64 hex digits (its raw 32 bytes): a
    control.audit_stop it signed fails the job (docs/audit.md). Empty: audit stop requests are
    refused (dead-lettered with the reason)."""

    @model_validator(mode="after")
    def _heartbeat_fits_the_timeout(self) -> SchedulerSettings:
        if self.heartbeat_interval_s and self.heartbeat_interval_s * 2 > self.party_timeout_s:
            raise ValueError(
                "heartbeat_interval_s must be at most half of party_timeout_s, or a single "
                "late beat fails the job"
            )
        return self

    @field_validator("audit_public_key")
    @classmethod
    def _audit_key_is_a_key(cls, value: str) -> str:
        # A placeholder ("changeme") is left to _no_placeholder_audit_key, which names it.
        if value.strip() and not is_placeholder_secret(value):
            audit_verify_key(value)
        return value.strip()

    @model_validator(mode="after")
    def _no_placeholder_audit_key(self) -> SchedulerSettings:
        key = self.audit_public_key
        if key and is_placeholder_secret(key) and self.environment != "development":
            raise ValueError(
                "placeholder secret in audit_public_key: set the audit's public key "
                "(refused outside environment=development)"
            )
        return self

    @property
    def audit_key(self) -> Ed25519PublicKey | None:
        key = self.audit_public_key
        return audit_verify_key(key) if key and not is_placeholder_secret(key) else None

    @property
    def heartbeat_every_s(self) -> float:
        return self.heartbeat_interval_s or self.party_timeout_s / 6

    @property
    def inbox_redis_prefix(self) -> str:
        return self.redis_prefix or f"fedmq:{self.party_id}:scheduler:inbox:"


def audit_verify_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from 64 hex digits; ValueError naming the setting otherwise."""
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.strip()))
    except ValueError as exc:
        raise ValueError(
            f"audit_public_key must be 64 hex digits (an Ed25519 key): {exc}"
        ) from None
