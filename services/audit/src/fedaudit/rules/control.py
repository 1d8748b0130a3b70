"""Control-flow rules: what the party approved, who may take part, task lifecycles, silence.

- control.unknown_job: federation data of a job no proposal or task.run announced here (warn:
  the audit may have been installed while the job ran);
- control.unknown_component: federation data of a component the approved pipeline does not
  have, or a task.run whose component type differs from the approved pipeline's (a swapped
  algorithm);
- control.component_code: this party's worker starts a task (task.status "running" at its
  claim) with code whose SHA-256 or release is not what this party approved;
- control.component_unreported: ...or without saying which code it runs (warn: the hash is the
  worker's own word, so a worker that omits it is no worse than one that lies);
- control.foreign_party: a federation message whose sender or receiver is not a party of the
  job, or claims a role the pipeline does not give it;
- control.illegal_transition: a task (component, attempt, party) reported running or ended
  again after it ended (this party's tasks judged on its worker's reports, not on its
  scheduler's forwards of them, which reach the audit through another queue);
- control.unsigned_inbound: a message from another party that carries no signature;
- control.silent_party: no message from a party of a running job for silent_after_s (the
  service's timer calls `silent_parties`);
- control.service_silent: one of this party's own services stopped showing life in a running
  job for service_silent_after_s: the scheduler (its job.heartbeat to the peers), the workers
  (their task.status and the federation data they send, while a task of this party runs), the
  gateway (what it delivers from the peers). Armed by the service's first sign of life in the
  job, so a job where a service never spoke is not reported (`silent_services`);
- control.worker_silent: this party's worker runs a task of an open job and has shown no life
  in it for worker_silent_after_s (critical: the job cannot progress). Its heartbeat is an
  empty task.metrics every lease/3 (fedworker.tasks, 5 s) from a thread of its own, and its
  status and metrics reports and the federation data it sends count too. Per component, armed
  by the worker's first sign of life in the task, once per silence, re-armed by the next
  (`note_worker`, `silent_workers`). Idle workers send nothing and are not watched.
"""

from __future__ import annotations

from typing import Any

from fedaudit.facts import kind_of
from fedaudit.rules.catalogue import Finding
from fedaudit.rules.state import AuditPolicy, JobView, Observation

TERMINAL = frozenset({"success", "failed", "canceled"})


def check_parties(obs: Observation, view: JobView, policy: AuditPolicy) -> list[Finding]:
    record = obs.record
    found: list[Finding] = []
    for party, role, what in (
        (obs.sender, str(record["source_role"]), "sender"),
        (obs.receiver, str(record["destination_role"]), "receiver"),
    ):
        roles = view.roles.get(party)
        if roles is None:
            found.append(
                policy.finding(
                    "control.foreign_party",
                    obs.sender,
                    f"{what} party {party} is not a party of job {view.job_id}",
                )
            )
        elif role not in roles:
            found.append(
                policy.finding(
                    "control.foreign_party",
                    obs.sender,
                    f"{what} party {party} claims role {role!r} in job {view.job_id}; the "
                    f"pipeline gives it {', '.join(sorted(roles))}",
                )
            )
    return found[:1]


def check_code(obs: Observation, view: JobView, policy: AuditPolicy) -> list[Finding]:
    """A running report of this party's worker against the code this party approved. The
    worker's claim report carries the code's hash and release; later progress reports of the
    same task carry none, so only a task's first report must say which code runs it."""
    facts = obs.facts
    if facts.get("state") != "running" or obs.sender != policy.party_id:
        return []
    name, attempt = str(facts.get("component")), int(facts.get("attempt", 0))
    cv = view.components.get(name)
    approved = policy.approved_code.get(cv.type) if cv is not None else None
    if cv is None or approved is None:
        return []
    code, version = facts.get("code_sha256"), facts.get("component_version")
    first = (name, attempt, str(facts.get("party_id"))) not in view.task_states
    where = f"task {name} (attempt {attempt}, {cv.type}) of job {view.job_id}"
    if code is None:
        if not first:
            return []
        detail = f"{where}: this party's worker started it without saying which code it runs"
        return [policy.finding("control.component_unreported", policy.party_id, detail)]
    if code not in approved:
        problem = (
            f"{where} runs code {str(code)[:16]}..., which this party did not approve "
            f"(approved: {', '.join(h[:16] + '...' for h in approved) or 'none'})"
        )
    elif policy.approved_versions and version not in policy.approved_versions:
        problem = (
            f"{where} runs release {version!r}; this party approved "
            f"{', '.join(policy.approved_versions)}"
        )
    else:
        return []
    return [policy.finding("control.component_code", policy.party_id, problem)]


def check_transition(obs: Observation, view: JobView, policy: AuditPolicy) -> list[Finding]:
    facts = obs.facts
    key = (str(facts.get("component")), int(facts.get("attempt", 0)), str(facts.get("party_id")))
    if kind_of(obs.record) == "job.task_report" and key[2] == policy.party_id:
        # This party's scheduler forwarding its own worker's reports to the initiator: the
        # worker's task.status went through this check already, and the forward reaches the
        # audit through another queue (the fan-out of the peer's out topic), so it can come
        # after a later report of the worker: "running" forwarded once "success" was recorded.
        return []
    state = str(facts.get("state"))
    before = view.task_states.get(key)
    view.task_states[key] = state
    if before in TERMINAL and state != before:
        return [
            policy.finding(
                "control.illegal_transition",
                key[2],
                f"task {key[0]} (attempt {key[1]}) of party {key[2]} went from {before} to {state}",
            )
        ]
    return []


def service_of(record: dict[str, Any], party_id: str) -> str | None:
    """Which of this party's services a record shows alive, if any."""
    kind, direction = kind_of(record), str(record["direction"])
    if direction == "in":
        return "gateway"  # it verified and published what a peer sent
    if record["source_party"] != party_id:
        return None
    if kind == "job.heartbeat":
        return "scheduler"
    if kind in WORKER_KINDS or (kind == "federation.data" and direction == "out"):
        return "worker"
    return None


WORKER_KINDS = ("task.status", "task.metrics")
"""What this party's worker sends its scheduler about a task it runs (task.metrics with no
values is its heartbeat)."""


def note_worker(obs: Observation, view: JobView, policy: AuditPolicy, now: float) -> None:
    """Re-arm control.worker_silent for the component whose task this party's worker just
    showed life in (live only: `now` is 0 in a replay)."""
    record, kind = obs.record, kind_of(obs.record)
    if not now or obs.sender != policy.party_id or record["direction"] == "in":
        return
    if kind == "task.status":
        name = str(obs.facts.get("component", ""))
    elif kind == "task.metrics" or (kind == "federation.data" and record["direction"] == "out"):
        name = str(record["component"])
    else:
        return
    if name:
        view.worker_seen[name] = now


def silent_workers(view: JobView, policy: AuditPolicy, now: float) -> list[Finding]:
    """Components whose task this party's worker still runs and has shown no life in for
    longer than worker_silent_after_s (each once per silence)."""
    me = policy.party_id
    running = {
        (name, attempt)
        for (name, attempt, party), state in view.task_states.items()
        if party == me and state not in TERMINAL
    }
    found: list[Finding] = []
    for name, seen in view.worker_seen.items():
        if seen < 0 or now - seen <= policy.worker_silent_after_s:
            continue
        attempts = sorted(a for n, a in running if n == name)
        if not attempts:
            continue
        found.append(
            policy.finding(
                "control.worker_silent",
                me,
                f"this party's worker running task {name} (attempt {attempts[-1]}) of job "
                f"{view.job_id} showed no life for {now - seen:.0f} s: no heartbeat, report or "
                f"message (worker_silent_after_s={policy.worker_silent_after_s:g})",
            )
        )
        view.worker_seen[name] = -1.0
    return found


def silent_services(view: JobView, policy: AuditPolicy, now: float) -> list[Finding]:
    """This party's services silent in a running job for longer than service_silent_after_s
    (each once per silence). The workers only while a task of this party runs."""
    me = policy.party_id
    running = any(
        party == me and state not in TERMINAL for (_, _, party), state in view.task_states.items()
    )
    found: list[Finding] = []
    for service, seen in view.service_seen.items():
        if seen < 0 or (service == "worker" and not running):
            continue
        if now - seen > policy.service_silent_after_s:
            found.append(
                policy.finding(
                    "control.service_silent",
                    me,
                    f"this party's {service} showed no life in job {view.job_id} for "
                    f"{now - seen:.0f} s (service_silent_after_s="
                    f"{policy.service_silent_after_s:g})",
                )
            )
            view.service_seen[service] = -1.0
    return found


def silent_parties(view: JobView, policy: AuditPolicy, now: float) -> list[Finding]:
    """The peers of a running job not heard from for longer than silent_after_s (each once
    per silence: hearing from the party again re-arms it)."""
    found: list[Finding] = []
    for party, heard in view.last_heard.items():
        if party == policy.party_id or heard < 0:
            continue
        if now - heard > policy.silent_after_s:
            found.append(
                policy.finding(
                    "control.silent_party",
                    party,
                    f"party {party} silent for {now - heard:.0f} s in job {view.job_id} "
                    f"(silent_after_s={policy.silent_after_s:g})",
                )
            )
            view.last_heard[party] = -1.0
    return found
