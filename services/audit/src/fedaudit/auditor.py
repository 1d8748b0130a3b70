"""The audit's pure core: a delivery becomes a record; a record (with its payload, live) runs
through the rules, which keep a view per job.

`Auditor.observe` is the same code live (with payloads: every rule) and post-hoc or after a
restart (records only: every rule but the ciphertext and non-finite checks, which need values
the log never keeps). No IO here: the handlers store what it returns.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fedflow.components.statistics import PROFILE_REPORT_TAG
from fedflow.descriptors import Pipeline, PipelineError
from fedschemas import Envelope, FederationData, Payload, canonical_bytes, topics

from fedaudit.facts import component_of, facts_of, is_paillier_key, kind_of
from fedaudit.peers import content_sha256
from fedaudit.rules import algorithm, ciphertexts, control, data
from fedaudit.rules.catalogue import Finding
from fedaudit.rules.state import AuditPolicy, JobView, Observation


def direction_of(topic: str, envelope: Envelope, party_id: str) -> str:
    """ "out" (leaves the party), "in" (came from a peer) or "local"."""
    if topic.startswith(topics.OUT_PREFIX):
        return "out"
    if envelope.source.party_id != party_id:
        return "in"
    return "local"


def signature_state(envelope: Envelope, direction: str) -> str:
    """What the audit can say of the signature: the gateway signs what leaves and verified
    what came in before publishing it (docs/gateway.md); here only its presence is recorded."""
    if envelope.signature is None:
        return "unsigned" if direction == "in" else "none"
    return f"signed:{envelope.signer_key_id or '?'}"


def make_record(
    topic: str,
    body: bytes,
    envelope: Envelope,
    payload: Payload | None,
    party_id: str,
    observed_at: datetime | None = None,
) -> dict[str, Any]:
    """The record of one delivery, before it is numbered and chained (chain.ChainHead).

    The payload (megabytes for a ciphertext vector) is hashed once: its SHA-256 is recorded
    and is what both canonical forms (the envelope's, the crossing's) commit to."""
    direction = direction_of(topic, envelope, party_id)
    facts = facts_of(envelope, payload)
    payload_sha256 = hashlib.sha256(envelope.payload).digest()
    envelope_sha256 = hashlib.sha256(
        canonical_bytes(envelope, payload_sha256=payload_sha256)
    ).hexdigest()
    if direction != "local":
        # What the other end's record of this message carries too (fedaudit.peers).
        facts["content_sha256"] = (
            envelope_sha256
            if envelope.signer_key_id is None
            else content_sha256(envelope, payload_sha256=payload_sha256)
        )
    return {
        "observed_at": (observed_at or datetime.now(UTC)).isoformat(timespec="microseconds"),
        "topic": topic,
        "direction": direction,
        "message_id": envelope.message_id,
        "type": envelope.type,
        "job_id": envelope.job_id,
        "component": component_of(envelope),
        "tag": envelope.tag,
        "iteration": envelope.iteration,
        "seq_no": envelope.seq,
        "source_party": envelope.source.party_id,
        "source_role": envelope.source.role,
        "destination_party": envelope.destination.party_id,
        "destination_role": envelope.destination.role,
        "size": len(body),
        "payload_sha256": payload_sha256.hex(),
        "envelope_sha256": envelope_sha256,
        "signature": signature_state(envelope, direction),
        "facts": facts,
        "findings": [],
    }


class Auditor:
    """The rules over a stream of observations, with a view per job."""

    def __init__(self, policy: AuditPolicy) -> None:
        self.policy = policy
        self.jobs: dict[str, JobView] = {}
        self.profiles: dict[str, data.TableProfile] = {}
        """Table -> its recorded profile: what the last statistics component run on it
        reported, else the column statistics of its first audited read (data.profile_drift
        compares later reads with it)."""
        self.profilers: dict[str, dict[str, dict[str, str]]] = {}
        """Job -> its statistics components -> party -> the table each profiles
        (data.profiled_tables of the job's pipeline)."""
        self.early_profiles: dict[str, list[Observation]] = {}
        """Job -> statistics profiles recorded before the job's pipeline was (the reports
        topic can overtake a lagging fan-out), applied when it comes."""

    def view(self, job_id: str) -> JobView:
        view = self.jobs.get(job_id)
        if view is None:
            view = self.jobs[job_id] = JobView(job_id)
        return view

    def observe(self, obs: Observation, now: float = 0.0) -> list[Finding]:
        found = self._observe(obs, now)
        view = self.jobs.get(str(obs.record["job_id"]))
        if not found or view is None or not view.asked_severities:
            return found
        # The pipeline's severities, within this party's limits (AuditPolicy.bounded).
        severities = self.policy.bounded(view.asked_severities)
        return [
            replace(f, severity=severities[f.rule]) if f.rule in severities else f for f in found
        ]

    def _observe(self, obs: Observation, now: float) -> list[Finding]:
        record = obs.record
        kind = kind_of(record)
        job_id = str(record["job_id"])
        if not job_id:
            return []
        view = self.view(job_id)
        if record["direction"] == "in":
            view.last_heard[obs.sender] = now
        service = control.service_of(record, self.policy.party_id)
        if service is not None and now:
            view.service_seen[service] = now
        found: list[Finding] = []
        if record["direction"] == "in" and record["signature"] == "unsigned":
            found.append(
                self.policy.finding(
                    "control.unsigned_inbound",
                    obs.sender,
                    f"{kind} from party {obs.sender} unsigned",
                )
            )
        facts = obs.facts
        pipeline_yaml = facts.get("pipeline_yaml") if kind in ("job.propose", "task.run") else None
        # The job's pipeline is parsed at most once per message, here, and handed to both
        # readers (the profilers' tables and the job view): parsing it was 12% of a short
        # job's audit CPU when each parsed it. None: no YAML, or it does not parse (each
        # reader then handles the text itself, as before).
        pipeline: Pipeline | None = None
        if pipeline_yaml and (
            job_id not in self.profilers or kind == "job.propose" or not view.known
        ):
            with contextlib.suppress(PipelineError):
                pipeline = Pipeline.from_yaml(str(pipeline_yaml))
        if pipeline_yaml and job_id not in self.profilers:
            self.profilers[job_id] = data.profiled_tables(
                pipeline if pipeline is not None else str(pipeline_yaml)
            )
            for early in self.early_profiles.pop(job_id, []):
                self._profile(early, job_id)
        if kind == "job.propose":
            view.learn_pipeline(
                str(facts.get("initiator", "")),
                pipeline if pipeline is not None else str(facts.get("pipeline_yaml", "")),
            )
        elif kind == "task.run":
            problem = view.learn_task(facts, pipeline)
            if problem is not None:
                found.append(
                    self.policy.finding("control.unknown_component", self.policy.party_id, problem)
                )
        elif kind in ("task.status", "job.task_report"):
            if kind == "task.status":
                found += control.check_code(obs, view, self.policy)
            found += control.check_transition(obs, view, self.policy)
        elif kind in ("job.end", "job.stop"):
            view.ended = True
        elif kind == "federation.data":
            found += self._federation(obs, view)
        elif kind == "report.decrypt_check":
            found += data.check_decrypted(obs, self.policy)
        elif kind == "report.column_stats":
            if not str(record["tag"]).startswith(f"{PROFILE_REPORT_TAG}."):
                found += data.check_profile(obs, self.profiles, self.policy)
            elif job_id in self.profilers:
                self._profile(obs, job_id)
            else:
                self.early_profiles.setdefault(job_id, []).append(obs)
        if now:
            algorithm.note_move(obs, view, self.policy, now)
            control.note_worker(obs, view, self.policy, now)
        return found

    def _profile(self, obs: Observation, job_id: str) -> None:
        tables = self.profilers[job_id].get(str(obs.record["component"]), {})
        data.record_profile(obs, tables, self.profiles, self.policy)

    def _federation(self, obs: Observation, view: JobView) -> list[Finding]:
        policy = self.policy
        if not view.known:
            return [
                policy.finding(
                    "control.unknown_job",
                    obs.sender,
                    f"federation data of job {view.job_id}, which no proposal or task announced "
                    "here",
                )
            ]
        found = control.check_parties(obs, view, policy)
        name = str(obs.record["component"])
        cv = view.components.get(name)
        if cv is None:
            return [
                *found,
                policy.finding(
                    "control.unknown_component",
                    obs.sender,
                    f"federation data for component {name!r}, which job {view.job_id}'s approved "
                    "pipeline does not have",
                ),
            ]
        if cv.protocol is None:
            return found
        rule, problems = algorithm.find_rule(obs, view, cv, policy)
        if rule is None:
            return found + problems
        found += data.check_form(obs, rule, cv, policy)
        if is_paillier_key(obs.facts):
            found += data.check_key(obs, view, cv, policy)
        found += algorithm.check_steps(obs, rule, cv, policy)
        if isinstance(obs.payload, FederationData):
            # Each ciphertext's values are checked once, by the party that receives it (whose
            # worker would decrypt or compute on them); what this party sends the peer's audit
            # checks, unless the operator asks for both ends (outbound_values).
            inbound = obs.record["direction"] != "out"
            if obs.payload.kind == "ciphertext_vector" and (inbound or policy.outbound_values):
                found += ciphertexts.check_ciphertexts(obs, rule, view, cv, policy)
            found += data.check_finite(obs, policy, cv.name)
        return found

    def silent(self, now: float, *, workers: bool = True) -> list[tuple[str, Finding]]:
        """(job, finding) for each party of an open job silent too long, each of this party's
        services silent too long, each of its workers silent too long in a task it runs
        (`workers`: False while the broker is down, when no worker could be heard), each
        component stalled too long; at the severities the job's pipeline asks for, within
        this party's limits (as a message's findings)."""
        out: list[tuple[str, Finding]] = []
        for job_id, view in self.jobs.items():
            if view.ended:
                continue
            found = control.silent_parties(view, self.policy, now)
            found += control.silent_services(view, self.policy, now)
            if workers:
                found += control.silent_workers(view, self.policy, now)
            found += algorithm.stalled_components(view, self.policy, now)
            severities = self.policy.bounded(view.asked_severities)
            out += [
                (job_id, replace(f, severity=severities[f.rule]) if f.rule in severities else f)
                for f in found
            ]
        return out
