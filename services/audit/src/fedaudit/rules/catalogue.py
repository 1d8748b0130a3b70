"""The audit rules: id, family, severity and one line on what each catches.

docs/audit.md has a section per rule saying what it catches and what it cannot; a test checks
that every id here has one. Severity: "info" is recorded only, "warn" raises an alert,
"critical" also asks this party's scheduler to stop the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

Family = Literal["control", "algorithm", "data"]
Severity = Literal["info", "warn", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = ("info", "warn", "critical")


@dataclass(frozen=True)
class Rule:
    id: str
    family: Family
    severity: Severity
    catches: str


@dataclass(frozen=True)
class Finding:
    """One rule broken by one message (or by the lack of one)."""

    rule: str
    severity: Severity
    detail: str
    party: str
    """The party held responsible (the message's sender, or the silent party)."""

    def to_dict(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "party": self.party,
            "detail": self.detail,
        }


_RULES = (
    # data flow
    Rule(
        "data.key_below_policy",
        "data",
        "critical",
        "a Paillier public key shorter than this party's policy floor",
    ),
    Rule(
        "data.key_width",
        "data",
        "critical",
        "a Paillier key whose width is not the one the job declared (e.g. 2025 for 2048)",
    ),
    Rule(
        "data.key_unreadable",
        "data",
        "critical",
        "a public_key message that is not a Paillier public key",
    ),
    Rule(
        "data.key_changed",
        "data",
        "critical",
        "a party announcing a second, different key for the same component of a job",
    ),
    Rule(
        "data.ciphertext_range",
        "data",
        "critical",
        "a ciphertext outside (0, n^2) for every key it could be under",
    ),
    Rule(
        "data.ciphertext_trivial",
        "data",
        "critical",
        "a ciphertext equal to 1 (an unobfuscated encryption of 0)",
    ),
    Rule(
        "data.ciphertext_not_coprime",
        "data",
        "critical",
        "a ciphertext sharing a factor with n (not a valid Paillier ciphertext; leaks the key)",
    ),
    Rule(
        "data.ciphertext_repeated",
        "data",
        "critical",
        "the same ciphertext twice in a job (replay, or no fresh randomness)",
    ),
    Rule(
        "data.ciphertext_unchecked",
        "data",
        "info",
        "ciphertexts that came before any key of their job (their range could not be checked)",
    ),
    Rule(
        "data.form",
        "data",
        "critical",
        "a payload whose kind, shape, dtype, blob format, seq or iteration breaks its "
        "declared rule",
    ),
    Rule(
        "data.nonfinite",
        "data",
        "critical",
        "NaN or infinite values in a plaintext (aggregate, metric, score) array",
    ),
    Rule(
        "data.decrypted_bounds",
        "data",
        "critical",
        "plaintexts a key holder decrypted for a peer that are NaN, infinite or outside the "
        "agreed bound (reported by this party's worker)",
    ),
    Rule(
        "data.profile_drift",
        "data",
        "warn",
        "a table read for a job whose column is far more missing, or far wider in range, than "
        "the table's recorded profile, or lacks a recorded column",
    ),
    # algorithm flow
    Rule(
        "algorithm.undeclared",
        "algorithm",
        "critical",
        "a tag the component's protocol does not declare, or declares for another direction",
    ),
    Rule(
        "algorithm.substitution",
        "algorithm",
        "critical",
        "a message of another algorithm's protocol inside this component",
    ),
    Rule(
        "algorithm.order",
        "algorithm",
        "critical",
        "a step out of order: an iteration going back, an answer without its request, a "
        "once-message sent twice",
    ),
    Rule(
        "algorithm.decrypt_budget",
        "algorithm",
        "critical",
        "more ciphertexts sent to the key holder for decryption in one iteration than the "
        "protocol allows",
    ),
    Rule(
        "algorithm.stalled",
        "algorithm",
        "warn",
        "a running component with no message crossing and no progress reported for longer "
        "than the stall interval (training that stops progressing)",
    ),
    # control flow
    Rule(
        "control.unknown_job",
        "control",
        "warn",
        "federation traffic for a job this party never saw proposed",
    ),
    Rule(
        "control.unknown_component",
        "control",
        "critical",
        "traffic or a task for a component, or component type, the approved pipeline does not have",
    ),
    Rule(
        "control.component_code",
        "control",
        "critical",
        "this party's worker running a component whose code hash or release is not the one "
        "this party approved",
    ),
    Rule(
        "control.component_unreported",
        "control",
        "warn",
        "this party's worker starting a task without saying which code it runs",
    ),
    Rule(
        "control.foreign_party",
        "control",
        "critical",
        "a message to or from a party, or in a role, that the approved pipeline does not give it",
    ),
    Rule(
        "control.illegal_transition",
        "control",
        "warn",
        "a task state change its lifecycle does not allow (e.g. running after success)",
    ),
    Rule(
        "control.unsigned_inbound",
        "control",
        "warn",
        "a message from another party without a signature",
    ),
    Rule(
        "control.peer_checkpoint",
        "control",
        "warn",
        "a peer's checkpoint that is not its own, not signed by its audit key, or that signs "
        "another chain head at a record it signed before",
    ),
    Rule(
        "control.peer_log_disagrees",
        "control",
        "warn",
        "a peer's signed statement of a job's traffic that differs from this party's log of it",
    ),
    Rule(
        "control.service_silent",
        "control",
        "warn",
        "this party's scheduler, workers or gateway silent in a running job for longer than "
        "the service silence interval",
    ),
    Rule(
        "control.worker_silent",
        "control",
        "critical",
        "this party's worker running a task of an open job silent (no heartbeat, status, "
        "metrics or federation data of the task) for longer than the worker silence interval",
    ),
    Rule(
        "control.dependency_down",
        "control",
        "warn",
        "this party's broker or database not answering the audit's probes for longer than "
        "the down interval",
    ),
    Rule(
        "control.silent_party",
        "control",
        "warn",
        "a party of a running job silent for longer than the audit's silence interval",
    ),
)

RULES: Final[Mapping[str, Rule]] = {rule.id: rule for rule in _RULES}


def rule(rule_id: str) -> Rule:
    return RULES[rule_id]
