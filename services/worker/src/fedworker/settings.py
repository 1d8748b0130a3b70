"""Worker settings, read once in main.py from FEDMQ_WORKER_* environment variables."""

from __future__ import annotations

from pathlib import Path

from fedcommon.settings import BusServiceSettings, is_placeholder_secret
from fedflow.context import LOWEST_NICE, RuntimeOptions
from fedflow.sealing import MIN_SECRET_BYTES
from fedflow.tables import default_tables_dir
from fedschemas import MAX_ENVELOPE_BYTES, topics
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict


class WorkerSettings(BusServiceSettings):
    service_name = "worker"
    model_config = SettingsConfigDict(
        env_prefix="FEDMQ_WORKER_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    topic: str = topics.WORKER
    """The queue this worker consumes (shared by all replicas of the party's worker)."""
    reply_topic: str = topics.WORKER_REPLIES
    """Where demo.pong answers go (with `test_hooks`)."""
    scheduler_topic: str = topics.SCHEDULER
    """Where task.status reports go (this party's scheduler)."""
    outbound_prefix: str = topics.OUT_PREFIX
    """Federation data for remote party P is published to <outbound_prefix><P> (the gateway
    drains it)."""
    data_dir: Path | None = None
    """This party's uploaded tables (the TableStore's files); None: next to a SQLite database
    ("<db>-tables"), else .fedmq/worker-<party>-tables. Every replica of the party's worker
    must see the same directory (one volume): any of them stores an upload, any reads it."""
    data_topic: str = topics.DATA_RPC
    """Where this worker answers the data service's commands (tables: upload, list, show),
    request/reply from the REST API; every replica consumes it (fedworker.data)."""
    upload_ttl_s: float = Field(default=3600.0, gt=0)
    """A table upload session with no part for this long is abandoned (its staging deleted)."""
    task_threads: int = Field(default=4, gt=0)
    """Tasks this worker runs at the same time."""
    task_lease_s: float = Field(default=15.0, gt=0)
    """A running task's claim is renewed every third of this; a task whose claim expired (its
    worker died) is resumed from its checkpoint by any worker of the party."""
    task_poll_s: float = Field(default=0.5, gt=0)
    recv_timeout_s: float = Field(default=0.0, ge=0)
    """How long a task waits for a message; 0: until the task is canceled (only the scheduler
    fails a job, after its party timeout)."""
    progress_interval_s: float = Field(default=2.0, ge=0)
    """At most one running task.status with progress per task per this many seconds."""
    max_envelope_bytes: int = Field(default=MAX_ENVELOPE_BYTES, gt=0)
    prefetch: int = Field(default=64, gt=0)
    crypto_serve: bool = False
    """Serve crypto jobs from `crypto_topic`: this process is one replica of the party's crypto
    job pool (fedflow.cryptopool), one chunk at a time (prefetch 1)."""
    crypto_only: bool = False
    """Run only a crypto replica: no task queue, no database (an extra replica for heavy
    homomorphic work). Implies crypto_serve."""
    crypto_topic: str = topics.CRYPTO
    """The party-local queue of crypto jobs (never relayed to other sites)."""
    crypto_replicas: int = Field(default=0, ge=0)
    """How many replicas serve `crypto_topic`. > 0: components get a BusExecutor over them as
    ctx.executor; 0: this process's thread pool."""
    crypto_chunks_per_replica: int = Field(default=2, gt=0)
    """How finely a batch is cut per replica (more chunks: better balance, more messages)."""
    crypto_timeout_s: float = Field(default=0.0, ge=0)
    """A crypto chunk nobody answered within this many seconds fails; 0: wait (the broker
    redelivers the chunks of a replica that died)."""
    component_threads: int = Field(default=2, ge=0, le=64)
    """Threads a component may use for homomorphic batch work when it has no crypto executor
    (ctx.runtime.threads); 0: the task's own thread. The party's decision, never a pipeline's."""
    prefetch_threads: int = Field(default=2, ge=0, le=64)
    """Threads per task that precompute encryption obfuscators in the background while the
    party waits for its peer (hetero_lr); 0: none."""
    prefetch_nice: int = Field(default=LOWEST_NICE, ge=0, le=LOWEST_NICE)
    """CPU priority (Linux nice) of those threads: the lowest by default, so they use only
    cores the protocol leaves idle."""
    policy_file: str = ""
    """This party's security policy, YAML or JSON (fedflow.policy, docs/policy.md), checked
    before every task runs (the scheduler checks it before accepting the job too); the same
    file as the scheduler's. Empty: the secure defaults. A named file that is missing or
    invalid stops the worker at start-up."""
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8083, ge=0, le=65535)
    """/healthz and /metrics (Prometheus); 0 serves no HTTP."""
    checkpoint_key: SecretStr | None = None
    """The party's secret (at least 32 characters, e.g. `openssl rand -hex 32`) from which a
    key per task is derived to seal what components keep secret in checkpoints (hetero_lr's
    Paillier private key and mask seed; fedflow.sealing): the same at every replica of the
    party's worker, never stored in the database. Required outside development. None (development
    only): a random secret per process, so a task resumed by another process (its worker died)
    cannot open its sealed secrets and fails."""
    test_hooks: bool = False
    """TEST ONLY (FEDMQ_WORKER_TEST_HOOKS): load fedworker.testing, the worker's test hooks:
    the demo.ping handler (records the ping in worker_pings, answers demo.pong on `reply_topic`)
    and `crash_after_effect`. Off, demo.ping has no handler here (it is dead-lettered like any
    type the worker does not handle). Refused in production."""
    crash_after_effect: str | None = None
    """TEST ONLY, with `test_hooks`: exit abruptly right after the inbox transaction of this
    message id committed, before the ack (the crash test). Refused outside development."""

    @field_validator("checkpoint_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("checkpoint_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or is_placeholder_secret(value.get_secret_value()):
            return value  # a placeholder is refused, by name, outside development
        if len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"checkpoint_key needs at least {MIN_SECRET_BYTES} characters")
        return value

    @model_validator(mode="after")
    def _no_test_hooks_in_production(self) -> WorkerSettings:
        if self.crash_after_effect and self.environment != "development":
            raise ValueError("crash_after_effect is a test hook, refused outside development")
        if self.test_hooks and self.environment == "production":
            raise ValueError("test_hooks loads test-only code, refused in production")
        if self.crash_after_effect and not self.test_hooks:
            raise ValueError("crash_after_effect is a test hook: it needs test_hooks=true")
        if self.checkpoint_key is None and self.environment != "development":
            # Without it a task cannot resume on another replica after its worker died: the
            # checkpoints exist precisely for that, so production does not start without it.
            raise ValueError(
                "checkpoint_key is required outside development (a shared secret of the party's "
                "workers, e.g. `openssl rand -hex 32`; fedmq site init writes one)"
            )
        return self

    @property
    def runtime_options(self) -> RuntimeOptions:
        """What components of this party may use (ctx.runtime)."""
        return RuntimeOptions(
            threads=self.component_threads,
            prefetch_threads=self.prefetch_threads,
            prefetch_nice=self.prefetch_nice,
        )

    @property
    def tables_dir(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir
        return default_tables_dir(self.database_url.get_secret_value(), self.party_id)

    @property
    def inbox_redis_prefix(self) -> str:
        return self.redis_prefix or f"fedmq:{self.party_id}:worker:inbox:"
