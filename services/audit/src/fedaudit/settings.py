"""Audit settings, read once in main.py from FEDMQ_AUDIT_* environment variables."""

from __future__ import annotations

from typing import ClassVar

from fedcommon.settings import BusServiceSettings
from fedschemas import topics
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from fedaudit.rules.catalogue import RULES, SEVERITIES, Severity

FANOUT_NAME = "audit"
DEFAULT_NICE = 5
_HEX = "0123456789abcdef"

DEFAULT_PATTERNS: tuple[str, ...] = (
    # What leaves the party: the gateway drains out.<peer>.
    f"{topics.OUT_PREFIX}*",
    # What comes in (the gateway publishes a peer's messages on its area's topic,
    # fedschemas.topics.GATEWAY_ROUTES) and the party's own control events: the scheduler's
    # task.run to the workers, the workers' task.status, job.* to and from the scheduler.
    topics.WORKER,
    topics.SCHEDULER,
)


class AuditSettings(BusServiceSettings):
    service_name: ClassVar[str] = "audit"
    model_config = SettingsConfigDict(
        env_prefix="FEDMQ_AUDIT_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    """Topic patterns of the fan-out subscription (fedbus.fanout syntax)."""
    fanout_name: str = FANOUT_NAME
    signing_key: SecretStr = SecretStr("")
    """The audit's Ed25519 private key, 64 hex digits (its raw 32 bytes): signs checkpoints and
    stop requests; the scheduler's FEDMQ_SCHEDULER_AUDIT_PUBLIC_KEY is its public half. Empty:
    a key file `key_file` (created 0600 on first start)."""
    public_key: str = ""
    """Optional: the public half of signing_key (64 hex digits), as the scheduler is given it;
    the audit refuses to start when its key does not match it (a mismatched pair would have
    every stop request refused)."""
    key_file: str = ".fedmq/audit.key"
    checkpoint_every: int = Field(default=100, gt=0)
    """A signed checkpoint after this many records..."""
    checkpoint_interval_s: float = Field(default=10.0, gt=0)
    """...or this many seconds after the first record it would cover, whichever comes first."""
    statement_settle_s: float = Field(default=5.0, ge=0)
    """A job's traffic is stated to its peers, and a peer's statement compared with this log,
    once the job ended here and none of its messages was recorded for this long: the last
    crossing messages reach the audit through the fan-out queues, behind the job's end
    (0: at the end itself)."""
    stop_on_critical: bool = True
    """Ask the scheduler to stop a job on a critical finding (false: alert only)."""
    min_key_bits: int = Field(default=2048, ge=256)
    """This party's floor for Paillier keys: its security policy's min_key_bits (a test
    stack that runs short keys lowers both)."""
    severities: dict[str, Severity] = Field(default_factory=dict)
    """Operator overrides of rule severities, e.g. {"data.ciphertext_repeated": "warn"}."""
    pipeline_floors: dict[str, Severity] = Field(default_factory=dict)
    """How low a pipeline's `audit: severities:` may set each rule, e.g.
    {"data.ciphertext_repeated": "warn"}; a rule not listed may only be raised by a pipeline."""
    silent_after_s: float = Field(default=120.0, gt=0)
    service_silent_after_s: float = Field(default=300.0, gt=0)
    """How long this party's scheduler (heartbeats every 20 s by default), workers or gateway
    may show no life in a running job before control.service_silent."""
    worker_silent_after_s: float = Field(default=120.0, gt=0)
    """How long this party's worker may show no life in a task it runs (its heartbeat every
    lease/3, 5 s by default) before control.worker_silent, which stops the job: 24
    heartbeats, for a worker descheduled on a loaded machine or killed and resuming once its
    lease (15 s) expired; keep it well above the workers' lease/3; tests lower it."""
    stalled_after_s: float = Field(default=300.0, gt=0)
    """How long a running component may go with no message crossing and no progress reported
    before algorithm.stalled (a pipeline may ask for another interval: `audit:
    stalled_after_s:`)..."""
    stalled_after_max_s: float = Field(default=3600.0, gt=0)
    """...up to this many seconds (a pipeline may ask for less freely)."""
    peer_keys: dict[str, str] = Field(default_factory=dict)
    """Peers' audit public keys (party id -> 64 hex digits), which their checkpoints must be
    signed with; a peer not listed is pinned at its first checkpoint (trust on first use)."""
    peer_checkpoint_interval_s: float = Field(default=10.0, gt=0)
    """At most one checkpoint sent to a peer per this many seconds (and one at each job's end),
    only when the traffic with that peer moved."""
    repeat_memory: int = Field(default=1_000_000, ge=0)
    """Ciphertext digests remembered per open job (data.ciphertext_repeated), kept in the
    database so a restart forgets none; past this many a job's new ciphertexts are checked
    against the remembered ones but not remembered themselves."""
    outbound_values: bool = False
    """Check the values of outgoing ciphertexts too (range, 1, gcd with n, repeats). Off: each
    ciphertext is checked once, by the receiving party's audit (half the audit's CPU on a
    ciphertext-heavy job); on: also here, for a peer that runs no audit."""
    approved_code: dict[str, list[str]] = Field(default_factory=dict)
    """Component type -> the SHA-256s of its code this party approved (`python -m
    fedflow.code_identity` prints them); a type not listed: the code this audit is deployed
    with (control.component_code)."""
    approved_versions: list[str] = Field(default_factory=list)
    """Component releases this party approved; empty: the release this audit is deployed
    with."""
    dependency_down_after_s: float = Field(default=10.0, gt=0)
    """How long the party's broker or database may fail the audit's probes (every
    timer_interval_s) before it is reported down (control.dependency_down)."""
    probe_timeout_s: float = Field(default=3.0, gt=0)
    """A probe with no answer within this counts as failed."""
    alert_webhook_url: str = ""
    """Alertmanager-compatible receiver (POST <url> with a JSON list of alerts, as
    Alertmanager's /api/v2/alerts takes); empty: none."""
    http_host: str = "127.0.0.1"
    http_port: int = 8084
    """/healthz and /metrics. 0 picks a free port; -1 serves no HTTP (tests)."""
    prefetch: int = Field(default=256, gt=0)
    batch_size: int = Field(default=64, gt=0)
    """Deliveries recorded in one transaction when they are already waiting (group commit;
    nothing waits for a group to fill)."""
    timer_interval_s: float = Field(default=1.0, gt=0)
    nice: int = Field(default=DEFAULT_NICE, ge=0, le=19)
    """CPU priority (Linux nice) the audit process takes at start (`python -m fedaudit`; not
    an audit run inside another process): above 0 the party's workers, at 0, come first when
    the cores are busy, and the audit records in their gaps. The trade-off: while the workers
    keep every core busy, the audit's lag grows (its durable queue holds what waits; nothing
    is lost), and so does the time from an offending message to the job's stop. 0: the
    workers' priority. The worker's obfuscator prefetch threads (nice 19) still yield to it."""

    @field_validator("peer_keys")
    @classmethod
    def _hex_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(p for p, k in value.items() if len(k) != 64 or k.strip("0123456789abcdef"))
        if bad:
            raise ValueError(f"peer audit keys must be 64 lower-case hex digits: {bad}")
        return value

    @field_validator("approved_code")
    @classmethod
    def _code_hashes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from fedflow.descriptors import CATALOGUE

        unknown = sorted(set(value) - set(CATALOGUE))
        if unknown:
            raise ValueError(f"approved_code: unknown component types {unknown}")
        bad = sorted(
            t for t, hashes in value.items() for h in hashes if len(h) != 64 or h.strip(_HEX)
        )
        if bad:
            raise ValueError(f"approved_code: hashes must be 64 lower-case hex digits: {bad}")
        return value

    @field_validator("severities", "pipeline_floors")
    @classmethod
    def _known_rules(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(RULES))
        if unknown:
            raise ValueError(f"unknown audit rules {unknown}; known: {sorted(RULES)}")
        bad = {k: v for k, v in value.items() if v not in SEVERITIES}
        if bad:
            raise ValueError(f"severities must be one of {SEVERITIES}: {bad}")
        return value
