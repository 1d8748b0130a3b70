"""Algorithm-flow rules: the component's declared protocol (fedflow.protocol) run as a state
machine per job and component, over sender, receiver, tag, order and iteration.

- algorithm.undeclared: the tag is not declared for this sender's and receiver's roles;
- algorithm.substitution: the tag is not this component's but another algorithm's;
- algorithm.order: a per-iteration message for an iteration lower than one the same sender
  already sent under that tag (a step replayed or sent out of order); a once-message sent again
  with a new id; a masked answer (the key holder's reply to a decryption request) in an
  iteration where no request was made to it;
- algorithm.decrypt_budget: more decryption requests (ciphertexts whose rule names the receiver
  as decrypting party) in one iteration than the rule's max_per_iteration at the key holder, or
  more than one per sender and tag;
- algorithm.stalled: a component running in an open job whose messages stopped crossing and
  whose progress stopped for longer than the stall interval (the operator's stalled_after_s,
  or the pipeline's `audit: stalled_after_s:` up to stalled_after_max_s): a peer that keeps
  its heartbeats going but sends no federation data, or a worker stuck between steps. Armed
  live by the component's first move (a crossing message, or this party's worker reporting it
  running); reported once per stall, re-armed by the next move. Components that declare no
  messages are not watched (a long local step has nothing to wait for). Time-based: the
  service's timer calls `stalled_components`, and the post-hoc audit does not repeat it.
"""

from __future__ import annotations

from dataclasses import replace

from fedflow.descriptors import MessageRule, Protocol

from fedaudit.facts import kind_of
from fedaudit.rules.catalogue import Finding
from fedaudit.rules.control import TERMINAL
from fedaudit.rules.state import AuditPolicy, ComponentView, JobView, Observation, all_protocols


def find_rule(
    obs: Observation, view: JobView, cv: ComponentView, policy: AuditPolicy
) -> tuple[MessageRule | None, list[Finding]]:
    """The declared rule of the message, or the findings that say why there is none."""
    assert cv.protocol is not None
    tag = str(obs.record["tag"])
    sender_role, receiver_role = str(obs.record["source_role"]), str(obs.record["destination_role"])
    rule = cv.protocol.rule(tag, sender_role, receiver_role)
    if rule is not None:
        return rule, []
    if cv.protocol.rules_for(tag):
        directions = ", ".join(r.direction for r in cv.protocol.rules_for(tag))
        detail = (
            f"{cv.type} ({cv.name}) declares tag {tag!r} as {directions}, not "
            f"{sender_role} -> {receiver_role}"
        )
        return None, [policy.finding("algorithm.undeclared", obs.sender, detail)]
    others = sorted(p.component_type for p in all_protocols() if p.rules_for(tag))
    if others:
        detail = (
            f"tag {tag!r} belongs to {', '.join(others)}, not to {cv.type} ({cv.name}): another "
            "algorithm's message in this component"
        )
        return None, [policy.finding("algorithm.substitution", obs.sender, detail)]
    detail = (
        f"{cv.type} ({cv.name}) declares no tag {tag!r} (declared: {', '.join(cv.protocol.tags)})"
    )
    return None, [policy.finding("algorithm.undeclared", obs.sender, detail)]


def check_steps(
    obs: Observation, rule: MessageRule, cv: ComponentView, policy: AuditPolicy
) -> list[Finding]:
    record = obs.record
    tag, iteration, seq = str(record["tag"]), int(record["iteration"]), int(record["seq_no"])
    sender, receiver = obs.sender, obs.receiver
    found: list[Finding] = []
    if not rule.per_iteration:
        key = (sender, receiver, tag, seq)
        first = cv.once.setdefault(key, str(record["message_id"]))
        if first != record["message_id"]:
            found.append(
                policy.finding(
                    "algorithm.order",
                    sender,
                    f"{tag!r} is sent once per run of {cv.name}; party {sender} sent it again "
                    "as another message",
                )
            )
        return found
    last = cv.last_iteration.get((sender, receiver, tag))
    if last is not None and iteration < last and seq == 0:
        found.append(
            policy.finding(
                "algorithm.order",
                sender,
                f"{tag!r} for iteration {iteration} after iteration {last}'s: a step out of order",
            )
        )
    cv.last_iteration[(sender, receiver, tag)] = max(iteration, last if last is not None else -1)
    if (
        "masked_vector" in rule.kinds
        and _answers_decryption(cv.protocol, rule)
        and not cv.asked.get((receiver, sender, iteration))
    ):
        found.append(
            policy.finding(
                "algorithm.order",
                sender,
                f"masked answer {tag!r} in iteration {iteration} without a decryption request "
                f"from party {receiver} in that iteration",
            )
        )
    if rule.decrypt is not None and seq == 0:
        found += _count_decrypt(obs, rule, cv, policy)
    return found


def _answers_decryption(protocol: Protocol | None, rule: MessageRule) -> bool:
    """Whether a masked vector under `rule` is the key holder's answer to a decryption request:
    the protocol declares ciphertexts that the rule's receiver sends for the rule's sender to
    decrypt. Components whose masked vectors are sent unasked (iter_sum's masked sums,
    homo_lr's secure-aggregation inputs) declare no such request, and their masked vectors
    are not answers."""
    if protocol is None:
        return False
    return any(
        r.decrypt is not None and r.decrypt.by == rule.sender and r.sender == rule.receiver
        for r in protocol.messages
    )


def _count_decrypt(
    obs: Observation, rule: MessageRule, cv: ComponentView, policy: AuditPolicy
) -> list[Finding]:
    assert rule.decrypt is not None
    record = obs.record
    tag, iteration, message_id = (
        str(record["tag"]),
        int(record["iteration"]),
        str(record["message_id"]),
    )
    sender, receiver = obs.sender, obs.receiver
    cv.asked.setdefault((sender, receiver, iteration), set()).add(tag)
    at_holder = cv.decrypts.setdefault((tag, iteration, receiver), set())
    # One request per sender and key holder: with several hosts the guest asks each host's
    # key to decrypt its own guest_gradient, one request each.
    by_sender = cv.decrypts_by.setdefault((tag, iteration, sender, receiver), set())
    at_holder.add(message_id)
    by_sender.add(message_id)
    found: list[Finding] = []
    if len(by_sender) > 1:
        found.append(
            policy.finding(
                "algorithm.decrypt_budget",
                sender,
                f"party {sender} asked party {receiver} to decrypt {tag!r} {len(by_sender)} "
                f"times in iteration {iteration}; the protocol allows one request per sender",
            )
        )
    elif len(at_holder) > rule.decrypt.max_per_iteration:
        found.append(
            policy.finding(
                "algorithm.decrypt_budget",
                sender,
                f"{len(at_holder)} decryptions of {tag!r} asked of party {receiver} in iteration "
                f"{iteration}; the protocol allows {rule.decrypt.max_per_iteration}",
            )
        )
    return found


def note_move(obs: Observation, view: JobView, policy: AuditPolicy, now: float) -> None:
    """Re-arm algorithm.stalled for the component a crossing message or this party's running
    report (the worker's claim, or its progress) belongs to."""
    record, kind = obs.record, kind_of(obs.record)
    if kind == "federation.data" and record["direction"] != "local":
        name = str(record["component"])
    elif (
        kind == "task.status"
        and obs.sender == policy.party_id
        and obs.facts.get("state") == "running"
    ):
        name = str(obs.facts.get("component"))
    else:
        return
    cv = view.components.get(name)
    if cv is None:
        return
    if kind == "federation.data":
        cv.last_crossing = (obs.sender, obs.receiver)
    cv.moved_at, cv.stall_reported = now, False


def stalled_components(view: JobView, policy: AuditPolicy, now: float) -> list[Finding]:
    """The components of an open job with a task still running that have not moved for longer
    than the job's stall interval (each once per stall)."""
    limit = policy.stall_limit(view.asked_stalled_after_s)
    severity = policy.bounded(view.asked_severities).get("algorithm.stalled")
    found: list[Finding] = []
    for cv in view.components.values():
        if not cv.moved_at or cv.stall_reported or cv.protocol is None:
            continue
        if not cv.protocol.messages or now - cv.moved_at <= limit:
            continue
        running = any(
            name == cv.name and state not in TERMINAL
            for (name, _, _), state in view.task_states.items()
        )
        if not running:
            continue
        cv.stall_reported = True
        sender, receiver = cv.last_crossing
        me = policy.party_id
        if receiver:
            # The last message went to `receiver`: the next step is most likely its.
            party, last = receiver, f"the last message crossed from party {sender} to {receiver}"
        else:
            peers = sorted(p for p in view.roles if p != me)
            party, last = ",".join(peers) or me, "no message of it has crossed"
        finding = policy.finding(
            "algorithm.stalled",
            party,
            f"component {cv.name} ({cv.type}) of job {view.job_id} still running with no "
            f"message crossing and no progress for {now - cv.moved_at:.0f} s "
            f"(stalled_after_s={limit:g}); {last}",
        )
        found.append(finding if severity is None else replace(finding, severity=severity))
    return found
