"""What the rules know about each job, built only from what the audit has seen (the job's
proposal, this party's task.run messages, earlier messages of the job). The same view is
rebuilt from the recorded log after a restart and by the post-hoc audit, so it holds facts,
never payloads; the one exception is the set of ciphertext digests (repeats), which the
handlers keep in their own table for the open jobs and load back after a restart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fedflow.descriptors import Pipeline, PipelineError, Protocol, protocol_of

from fedaudit.rules.catalogue import RULES, SEVERITIES, Finding, Severity

RANK: Final[Mapping[str, int]] = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class AuditPolicy:
    """This party's settings for the rules."""

    party_id: str
    min_key_bits: int = 2048
    severities: Mapping[str, Severity] = field(default_factory=dict)
    """Operator overrides of rule severities (rule id -> severity)."""
    silent_after_s: float = 120.0
    service_silent_after_s: float = 300.0
    worker_silent_after_s: float = 120.0
    """How long this party's worker may show no life in a task it runs (its heartbeat every
    lease/3, 5 s by default) before control.worker_silent: 24 heartbeats, for a worker
    descheduled on a loaded machine, or killed and resuming (its lease, 15 s, expires first;
    docs/audit.md, control.worker_silent)."""
    stalled_after_s: float = 300.0
    """How long a running component may go without a crossing message or progress before
    algorithm.stalled..."""
    stalled_after_max_s: float = 3600.0
    """...and the longest a pipeline may ask for (`audit: stalled_after_s:`); it may ask for
    less freely (only its own jobs are watched closer)."""
    repeat_memory: int = 1_000_000
    """Ciphertext digests remembered per job (data.ciphertext_repeated)."""
    pipeline_floors: Mapping[str, Severity] = field(default_factory=dict)
    """The lowest severity a pipeline may give each rule (rule id -> severity); a rule not
    listed may only be raised by a pipeline, never lowered below the operator's severity."""

    outbound_values: bool = False
    """Also check the values of the ciphertexts this party sends (range, 1, coprimality,
    repeats); by default the receiving party's audit checks them, once."""
    approved_code: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Component type -> the code SHA-256s this party approved (control.component_code; main
    fills every type of the catalogue: the operator's list, else the audit's own code). A type
    missing here is not checked."""
    approved_versions: tuple[str, ...] = ()
    """Component releases this party approved (empty: not checked)."""

    def severity(self, rule_id: str) -> Severity:
        return self.severities.get(rule_id, RULES[rule_id].severity)

    def finding(self, rule_id: str, party: str, detail: str) -> Finding:
        return Finding(rule_id, self.severity(rule_id), detail, party)

    def stall_limit(self, asked: float | None) -> float:
        """The stall interval of a job whose pipeline asks for `asked` seconds (None: not)."""
        return self.stalled_after_s if asked is None else min(asked, self.stalled_after_max_s)

    def bounded(self, asked: Mapping[str, str]) -> dict[str, Severity]:
        """A pipeline's `audit: severities:` within this party's limits: each rule gets the
        severity asked, or its floor when the pipeline asks for less (unknown rules ignored)."""
        out: dict[str, Severity] = {}
        for rule_id, severity in asked.items():
            if rule_id not in RULES or severity not in RANK:
                continue
            floor = self.pipeline_floors.get(rule_id, self.severity(rule_id))
            out[rule_id] = severity if RANK[severity] >= RANK[floor] else floor  # type: ignore[assignment]
        return out


@dataclass
class Observation:
    """One recorded message: its record (envelope fields and facts) and, live, its payload."""

    record: dict[str, Any]
    payload: Any = None

    @property
    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = self.record["facts"]
        return facts

    @property
    def sender(self) -> str:
        return str(self.record["source_party"])

    @property
    def receiver(self) -> str:
        return str(self.record["destination_party"])


@dataclass
class ComponentView:
    name: str
    type: str
    protocol: Protocol | None
    key_bits: dict[str, int] = field(default_factory=dict)
    """party -> the key length the pipeline gives it (its key_bits param), when it has one."""
    keys: dict[str, str] = field(default_factory=dict)
    """party -> fingerprint of the Paillier key it announced (pinned)."""
    key_widths: dict[str, int] = field(default_factory=dict)
    """party -> the width in bits of the key it announced."""
    moduli: dict[str, int] = field(default_factory=dict)
    """party -> its key's n (live only; never stored)."""
    dims: dict[tuple[str, str], int] = field(default_factory=dict)
    """(sender, dim name) -> the length first seen."""
    last_iteration: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(sender, receiver, tag) -> the highest iteration seen."""
    once: dict[tuple[str, str, str, int], str] = field(default_factory=dict)
    """(sender, receiver, tag, seq) of a once-message -> its message id."""
    asked: dict[tuple[str, str, int], set[str]] = field(default_factory=dict)
    """(asker, key holder, iteration) -> tags of decryption requests seen."""
    decrypts: dict[tuple[str, int, str], set[str]] = field(default_factory=dict)
    """(tag, iteration, receiver) -> message ids of decryption requests."""
    decrypts_by: dict[tuple[str, int, str, str], set[str]] = field(default_factory=dict)
    """(tag, iteration, sender, receiver) -> message ids of decryption requests."""
    moved_at: float = 0.0
    """When (live) a message of the component last crossed, or this party's worker last
    reported it running (its claim, its progress); 0: not yet (algorithm.stalled)."""
    last_crossing: tuple[str, str] = ("", "")
    """(sender, receiver) of the component's last crossing message."""
    stall_reported: bool = False
    """This stall was reported; the component's next move re-arms the rule."""


@dataclass
class JobView:
    job_id: str
    initiator: str = ""
    roles: dict[str, set[str]] = field(default_factory=dict)
    """party -> its roles in the approved pipeline."""
    components: dict[str, ComponentView] = field(default_factory=dict)
    known: bool = False
    """A proposal or a task.run of the job was seen (the rules know what was approved)."""
    task_states: dict[tuple[str, int, str], str] = field(default_factory=dict)
    last_heard: dict[str, float] = field(default_factory=dict)
    service_seen: dict[str, float] = field(default_factory=dict)
    """This party's service ("scheduler", "worker", "gateway") -> when it last showed life in
    the job (-1: reported silent; re-armed by its next sign of life)."""
    worker_seen: dict[str, float] = field(default_factory=dict)
    """Component -> when (live) this party's worker last showed life in its task: a
    heartbeat, a status or metrics report, federation data it sent (-1: reported silent;
    re-armed by its next sign of life). control.worker_silent."""
    ended: bool = False
    ciphertexts: dict[bytes, str] = field(default_factory=dict)
    """Digest of each ciphertext seen in the job -> the message that carried it first."""
    unsaved: list[tuple[str, bytes]] = field(default_factory=list)
    """(message id, its new digests concatenated) not yet in the database."""
    unchecked_reported: bool = False
    asked_severities: dict[str, str] = field(default_factory=dict)
    """What the approved pipeline's `audit: severities:` asks (bounded by AuditPolicy)."""
    asked_stalled_after_s: float | None = None
    """What the approved pipeline's `audit: stalled_after_s:` asks (bounded by AuditPolicy)."""

    def take_unsaved(self) -> list[tuple[str, bytes]]:
        taken, self.unsaved = self.unsaved, []
        return taken

    def learn_pipeline(self, initiator: str, pipeline_yaml: str | Pipeline) -> str | None:
        """Take the approved pipeline in (its YAML, or the Pipeline the caller already parsed
        from it); the problem when it does not parse."""
        try:
            pipeline = (
                pipeline_yaml
                if isinstance(pipeline_yaml, Pipeline)
                else Pipeline.from_yaml(pipeline_yaml)
            )
        except PipelineError as exc:
            return str(exc)
        self.initiator, self.known = initiator, True
        self.asked_severities = dict(pipeline.audit_severities)
        self.asked_stalled_after_s = pipeline.audit_stalled_after_s
        for role, ids in pipeline.parties.by_role().items():
            for party in ids:
                self.roles.setdefault(party, set()).add(role)
        for spec in pipeline.components_in_order():
            view = self.component(spec.name, spec.type)
            for task in spec.tasks:
                params = spec.params_for(task.role, task.party_id)
                bits = params.get("key_bits")
                if isinstance(bits, int):
                    view.key_bits[task.party_id] = bits
        return None

    def learn_task(self, facts: Mapping[str, Any], pipeline: Pipeline | None = None) -> str | None:
        """A task.run of this party: its component must be the approved one; None if it is.
        `pipeline`: facts' pipeline_yaml, already parsed by the caller (else parsed here)."""
        if not self.known and facts.get("pipeline_yaml"):
            self.learn_pipeline(
                str(facts.get("initiator", "")),
                pipeline if pipeline is not None else str(facts["pipeline_yaml"]),
            )
        self.known = True
        for role, ids in facts.get("parties", {}).items():
            for party in ids:
                self.roles.setdefault(party, set()).add(role)
        name, ctype = str(facts.get("component", "")), str(facts.get("component_type", ""))
        existing = self.components.get(name)
        if existing is not None and existing.type != ctype:
            return (
                f"task.run runs component {name} as {ctype!r}; the approved pipeline has "
                f"{existing.type!r}"
            )
        self.component(name, ctype)
        return None

    def component(self, name: str, ctype: str) -> ComponentView:
        view = self.components.get(name)
        if view is None:
            try:
                protocol: Protocol | None = protocol_of(ctype)
            except KeyError:
                protocol = None
            view = self.components[name] = ComponentView(name, ctype, protocol)
        return view


def all_protocols() -> list[Protocol]:
    from fedflow.descriptors import CATALOGUE

    return [d.declared_protocol() for d in CATALOGUE.values()]
