"""Each audit rule catches the malicious message it is about, and an honest run breaks none.

The observing party is the guest (9999) of a two-party hetero_lr job with the host (10000);
tests/audit/traffic.py builds the messages, honest or with one thing wrong, as the guest's
audit receives them (what it sends on out.10000, what it receives on svc.worker)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedaudit.auditor import Auditor, make_record
from fedaudit.rules import RULES, Finding
from fedaudit.rules.state import AuditPolicy, Observation
from fedflow import code_identity
from fedflow.code_identity import component_code
from fedflow.descriptors import protocol_of
from fedschemas import Envelope, FederationData, decode_envelope, decode_payload
from fedschemas.payloads import TaskStatus

from tests.audit.traffic import GUEST, HOST, KEY_BITS, Traffic, key_of, odd_key


def findings(
    auditor: Auditor, traffic: Traffic, envelopes: Iterable[Envelope], now: float = 0.0
) -> list[Finding]:
    """Feed the envelopes to the auditor as the guest's deliveries; every finding, in order."""
    found: list[Finding] = []
    for envelope in envelopes:
        delivery = traffic.delivery(envelope)
        received = decode_envelope(delivery.body)
        payload = decode_payload(received)
        record = make_record(delivery.topic, delivery.body, received, payload, GUEST)
        found += auditor.observe(Observation(record, payload), now)
    return found


def observe(auditor: Auditor, traffic: Traffic, envelopes: Iterable[Envelope]) -> list[str]:
    """The rule ids found above info, in order."""
    return [f.rule for f in findings(auditor, traffic, envelopes) if f.severity != "info"]


HETERO_LR_CODE = component_code("hetero_lr")


def approving(**settings: Any) -> AuditPolicy:
    """The guest's policy, approving the hetero_lr code in this checkout (as the service's
    main does by default: the code the audit is deployed with)."""
    defaults: dict[str, Any] = {
        "party_id": GUEST,
        "min_key_bits": KEY_BITS,
        "approved_code": {"hetero_lr": (HETERO_LR_CODE.sha256,)},
        "approved_versions": (HETERO_LR_CODE.version,),
    }
    return AuditPolicy(**{**defaults, **settings})


@pytest.fixture
def auditor() -> Auditor:
    return Auditor(approving())


@pytest.fixture
def traffic() -> Traffic:
    return Traffic()


def started(traffic: Traffic) -> list[Envelope]:
    """Proposal, task.run and both keys: the honest start every case builds on."""
    return traffic.honest(iterations=0)


def test_an_honest_run_breaks_no_rule(auditor: Auditor, traffic: Traffic) -> None:
    assert observe(auditor, traffic, traffic.honest(iterations=3)) == []


def _status(traffic: Traffic, state: str, **code: str) -> Envelope:
    payload = TaskStatus(
        job_id=traffic.job_id,
        component=traffic.component,
        attempt=0,
        party_id=GUEST,
        state=state,  # type: ignore[arg-type]
        **code,  # type: ignore[arg-type]
    )
    return traffic.envelope(payload, GUEST, GUEST, "task_status")


def _running(traffic: Traffic, sha256: str, version: str = HETERO_LR_CODE.version) -> Envelope:
    """This party's worker claims the task, saying which code it runs."""
    return _status(traffic, "running", code_sha256=sha256, component_version=version)


def _key_2025(t: Traffic) -> list[Envelope]:
    return [t.propose(), t.task_run(), t.public_key(HOST, odd_key(KEY_BITS + 1))]


CASES = {
    "data.key_below_policy": lambda t: [
        t.propose(),
        t.task_run(),
        t.public_key(HOST, odd_key(512)),
    ],
    "data.key_width": _key_2025,
    "data.key_unreadable": lambda t: [t.propose(), t.task_run(), t.public_key(HOST, b"\x00junk")],
    "data.key_changed": lambda t: [*started(t), _second_key(t)],
    "data.ciphertext_range": lambda t: [
        *started(t),
        # at or above n^2 of either party's key (host_scores may be under either, for the audit)
        t.ciphertexts(
            "host_scores", HOST, 0, values=[max(int(key_of(p).nsquare) for p in (GUEST, HOST)) + 5]
        ),
    ],
    "data.ciphertext_trivial": lambda t: [
        *started(t),
        t.ciphertexts("host_scores", HOST, 0, values=[1]),
    ],
    "data.ciphertext_not_coprime": lambda t: [
        *started(t),
        t.ciphertexts("host_scores", HOST, 0, values=[int(key_of(HOST).n) * 3]),
    ],
    "data.ciphertext_repeated": lambda t: _repeated(t),
    "data.form": lambda t: [
        *started(t),
        t.envelope(_float_array((3, 3)), HOST, GUEST, "host_score_sq", iteration=0),
    ],
    "data.nonfinite": lambda t: [*started(t), t.aggregate("host_score_sq", HOST, 0, float("nan"))],
    "algorithm.undeclared": lambda t: [
        *started(t),
        t.ciphertexts("host_gradient", GUEST, 0, under=HOST),  # declared host -> guest only
    ],
    "algorithm.substitution": lambda t: [*started(t), _psi_message(t)],
    "algorithm.order": lambda t: [
        *started(t),
        t.ciphertexts("host_scores", HOST, 3),
        t.ciphertexts("host_scores", HOST, 1),
    ],
    "algorithm.decrypt_budget": lambda t: [
        *started(t),
        t.ciphertexts("residual", GUEST, 0),
        t.ciphertexts("host_gradient", HOST, 0, under=GUEST),
        _second_request(t),
    ],
    "control.unknown_job": lambda t: [t.public_key(HOST)],
    "control.unknown_component": lambda t: [
        t.propose(),
        Traffic(component="hetero_lr_9").public_key(HOST),
    ],
    "control.foreign_party": lambda t: [
        *started(t),
        t.envelope(_float_array(()), "10001", GUEST, "host_score_sq", iteration=0),
    ],
    "control.illegal_transition": lambda t: [
        t.propose(),
        t.task_run(),
        _status(t, "success"),
        _status(t, "running"),
    ],
    "control.unsigned_inbound": lambda t: [t.propose(), _unsigned(t)],
    "control.component_code": lambda t: [t.propose(), t.task_run(), _running(t, "ab" * 32)],
    "control.component_unreported": lambda t: [t.propose(), t.task_run(), _status(t, "running")],
}


def _float_array(shape: tuple[int, ...]) -> FederationData:
    return FederationData(kind="aggregate", array=np.zeros(shape, dtype=np.float64))


def _psi_message(t: Traffic) -> Envelope:
    # One of psi's tags inside hetero_lr_0: another algorithm's message.
    tag = protocol_of("psi").tags[0]
    return t.envelope(FederationData(kind="id_set"), HOST, GUEST, tag)


def _second_key(t: Traffic) -> Envelope:
    # A second public_key from the host, as another message (attempt 1 gives another id).
    env = t.public_key(HOST, odd_key(KEY_BITS))
    return t.envelope(decode_payload(env), HOST, GUEST, "public_key", attempt=1)


def _repeated(t: Traffic) -> list[Envelope]:
    first = t.ciphertexts("host_scores", HOST, 0)
    values = [int.from_bytes(bytes(row), "little") for row in decode_payload(first).array]
    return [*started(t), first, t.ciphertexts("host_scores", HOST, 1, values=values)]


def _second_request(t: Traffic) -> Envelope:
    # Another host_gradient of iteration 0 from the same host, as another message (attempt 1).
    env = t.ciphertexts("host_gradient", HOST, 0, under=GUEST)
    return t.envelope(decode_payload(env), HOST, GUEST, "host_gradient", iteration=0, attempt=1)


def _unsigned(t: Traffic) -> Envelope:
    env = t.public_key(HOST)
    t.unsigned.add(env.message_id)  # Traffic.delivery leaves it as the peer sent it
    return env


def test_a_worker_running_the_approved_code_breaks_no_rule(traffic: Traffic) -> None:
    # Prepare: the approved release is this checkout's; a second policy approves only 9.9
    honest = [traffic.propose(), traffic.task_run(), _running(traffic, HETERO_LR_CODE.sha256)]
    other_release = Auditor(approving(approved_versions=("9.9",)))

    # Execute
    found = observe(Auditor(approving()), traffic, honest)
    old = findings(
        other_release, Traffic(), [*honest[:2], _running(traffic, HETERO_LR_CODE.sha256)]
    )

    # Assert: the same code under a release the party did not approve is caught, naming both
    assert found == []
    assert [f.rule for f in old] == ["control.component_code"]
    assert f"release {HETERO_LR_CODE.version!r}" in old[0].detail and "9.9" in old[0].detail


def test_a_tasks_later_running_reports_need_not_repeat_its_code(
    auditor: Auditor, traffic: Traffic
) -> None:
    # The claim says which code runs; progress reports after it carry none
    envelopes = [
        traffic.propose(),
        traffic.task_run(),
        _running(traffic, HETERO_LR_CODE.sha256),
        _status(traffic, "running"),
        _status(traffic, "running"),
    ]

    assert observe(auditor, traffic, envelopes) == []


def test_the_code_hash_covers_every_file_of_the_components_package() -> None:
    # Prepare: the files hetero_lr's hash covers, as the worker reads them
    files = code_identity.code_files("hetero_lr")
    contents = {rel: path.read_bytes() for rel, path in files.items()}
    entries = code_identity.entries("hetero_lr")

    # Execute: one byte more in one file, a file more, another entry
    edited = {
        **contents,
        "fedflow/components/hetero_lr/math.py": contents["fedflow/components/hetero_lr/math.py"]
        + b"#",
    }
    added = {**contents, "fedflow/components/hetero_lr/extra.py": b""}
    elsewhere = [e.replace("guest", "host") for e in entries]

    # Assert: the package's every module is covered, and each change moves the hash
    assert {"guest.py", "host.py", "math.py", "protocol.py"} <= {Path(r).name for r in files}
    base = code_identity.digest(entries, contents)
    changed = {
        code_identity.digest(entries, edited),
        code_identity.digest(entries, added),
        code_identity.digest(elsewhere, contents),
    }
    assert len(changed) == 3 and base not in changed
    # hetero_lr and its predict component share a package, not a hash (the entries differ)
    assert component_code("hetero_lr_predict").sha256 != HETERO_LR_CODE.sha256


def test_ciphertexts_are_checked_by_the_receiver_and_by_the_sender_only_if_asked(
    traffic: Traffic,
) -> None:
    # Prepare: the guest's own worker sends a trivial ciphertext (c = 1) to the host
    sent = [*started(traffic), traffic.ciphertexts("residual", GUEST, 0, values=[1, 5])]

    # Execute: the guest's audit by default, then one that checks outgoing values too
    default = observe(Auditor(approving()), traffic, sent)
    both_ends = observe(Auditor(approving(outbound_values=True)), Traffic(), sent)

    # Assert: left to the host's audit (which receives it: test_each_rule...), unless asked
    assert default == []
    assert both_ends == ["data.ciphertext_trivial"]


def test_every_rule_has_a_case() -> None:
    checked_below = {"control.silent_party", "control.service_silent", "data.ciphertext_unchecked"}
    checked_below.add("control.dependency_down")  # test_liveness.py
    checked_below.add("data.decrypted_bounds")  # test_decrypted.py (the worker's report)
    checked_below.add("data.profile_drift")  # test_profiles.py (the worker's report)
    checked_below.add("algorithm.stalled")  # test_stalled.py (the timer)
    checked_below.add("control.worker_silent")  # test_timer_findings.py (the timer)
    checked_in_test_peers = {"control.peer_checkpoint", "control.peer_log_disagrees"}
    checked_below |= checked_in_test_peers
    assert set(CASES) | checked_below == set(RULES)


def test_a_peer_silent_longer_than_the_interval_is_reported_once(traffic: Traffic) -> None:
    # Prepare: the host was last heard at t=100 s
    auditor = Auditor(AuditPolicy(party_id=GUEST, min_key_bits=KEY_BITS, silent_after_s=30))
    findings(auditor, traffic, started(traffic), now=100.0)

    # Execute
    early, late, again = auditor.silent(120.0), auditor.silent(131.0), auditor.silent(200.0)

    # Assert
    assert early == []
    assert [(job, f.rule, f.party) for job, f in late] == [
        (traffic.job_id, "control.silent_party", HOST)
    ]
    assert again == []  # once per silence


def test_ciphertexts_before_any_key_are_recorded_as_unchecked(
    auditor: Auditor, traffic: Traffic
) -> None:
    envelopes = [traffic.propose(), traffic.task_run(), traffic.ciphertexts("host_scores", HOST, 0)]

    found = [f.rule for f in findings(auditor, traffic, envelopes)]

    assert found == ["data.ciphertext_unchecked"]  # info: recorded, no alert, no stop


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_each_rule_catches_its_malicious_message(
    rule_id: str, auditor: Auditor, traffic: Traffic
) -> None:
    # Prepare
    envelopes = CASES[rule_id](traffic)

    # Execute
    found = observe(auditor, traffic, envelopes)

    # Assert: the rule fired, on the last message
    assert rule_id in found, found


def test_every_rule_has_its_section_in_the_docs() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text()
    for rule_id, rule in RULES.items():
        assert f"### {rule_id} ({rule.severity})" in docs, rule_id


@pytest.mark.parametrize(
    ("component_type", "tag", "sender", "receiver", "is_answer"),
    [
        ("hetero_lr", "host_gradient_masked", "guest", "host", True),
        ("hetero_lr", "guest_gradient_masked", "host", "guest", True),
        ("iter_sum", "masked_sum", "host", "guest", False),
        ("homo_lr", "sa_masked", "host", "arbiter", False),
    ],
)
def test_only_a_key_holders_reply_to_a_decryption_request_counts_as_a_masked_answer(
    component_type: str, tag: str, sender: str, receiver: str, is_answer: bool
) -> None:
    # iter_sum's masked sums and homo_lr's secure-aggregation inputs are masked vectors sent
    # unasked; treating them as answers stopped every clean iter_sum job (algorithm.order).
    from fedaudit.rules.algorithm import _answers_decryption

    protocol = protocol_of(component_type)
    rule = protocol.rule(tag, sender, receiver)
    assert rule is not None and "masked_vector" in rule.kinds
    assert _answers_decryption(protocol, rule) is is_answer


def test_a_pipeline_sets_severities_only_within_the_operators_limits(traffic: Traffic) -> None:
    # Prepare: the operator lets pipelines lower repeats to warn, nothing else; the pipeline
    # lowers repeats and key widths and raises unsigned messages
    from tests.audit.traffic import PIPELINE

    pipeline = PIPELINE + (
        "audit:\n  severities: {data.ciphertext_repeated: warn, data.key_width: info,"
        " control.unsigned_inbound: critical}\n"
    )
    auditor = Auditor(
        AuditPolicy(
            party_id=GUEST,
            min_key_bits=KEY_BITS,
            pipeline_floors={"data.ciphertext_repeated": "warn"},
        )
    )
    repeated = _repeated(traffic)[len(started(traffic)) :]

    # Execute
    found = findings(
        auditor,
        traffic,
        [
            traffic.propose(pipeline),
            traffic.task_run(),
            traffic.public_key(GUEST),
            traffic.public_key(HOST, odd_key(KEY_BITS + 1)),
            *repeated,
            _unsigned(traffic),
        ],
    )

    # Assert
    severity = {f.rule: f.severity for f in found}
    assert severity["data.ciphertext_repeated"] == "warn"  # lowered: allowed
    assert severity["data.key_width"] == "critical"  # lowered below its floor: refused
    assert severity["control.unsigned_inbound"] == "critical"  # raised: always allowed


def _heartbeat(traffic: Traffic) -> Envelope:
    from datetime import UTC, datetime

    from fedschemas.payloads import JobHeartbeat

    beat = JobHeartbeat(
        job_id=traffic.job_id, party_id=GUEST, attempt=0, state="running", at=datetime.now(UTC)
    )
    return traffic.envelope(beat, GUEST, HOST, "heartbeat", component="job")


def test_this_partys_services_silent_in_a_running_job_are_reported_once(traffic: Traffic) -> None:
    # Prepare: at t=100 s the guest's scheduler beat, its worker reported its task running,
    # and its gateway delivered the host's key
    auditor = Auditor(AuditPolicy(party_id=GUEST, min_key_bits=KEY_BITS, service_silent_after_s=60))
    findings(
        auditor,
        traffic,
        [
            traffic.propose(),
            traffic.task_run(),
            _status(traffic, "running"),
            _heartbeat(traffic),
            traffic.public_key(HOST),
        ],
        now=100.0,
    )

    # Execute
    early, late, again = auditor.silent(150.0), auditor.silent(161.0), auditor.silent(200.0)

    # Assert
    assert [f.rule for _, f in early] == []
    silent = sorted(
        f.detail.split(" showed")[0] for _, f in late if f.rule == "control.service_silent"
    )
    assert silent == [
        "this party's gateway",
        "this party's scheduler",
        "this party's worker",
    ]
    assert [f for _, f in again if f.rule == "control.service_silent"] == []


def test_workers_are_not_expected_to_speak_once_this_partys_task_ended(traffic: Traffic) -> None:
    auditor = Auditor(AuditPolicy(party_id=GUEST, min_key_bits=KEY_BITS, service_silent_after_s=60))
    envelopes = [traffic.propose(), traffic.task_run(), _status(traffic, "running")]
    findings(auditor, traffic, envelopes, now=100.0)
    findings(auditor, traffic, [_status(traffic, "success")], now=101.0)

    late = auditor.silent(200.0)

    assert [f for _, f in late if f.rule == "control.service_silent"] == []


def test_the_schedulers_legacy_job_status_is_read_as_its_successor(
    auditor: Auditor, traffic: Traffic
) -> None:
    # The schedulers still send job.status by default (legacy_job_status): its "success" is
    # the job's end, its beats are the scheduler's heartbeats
    from datetime import UTC, datetime

    from fedschemas.payloads import JobStatus

    def status(state: str) -> Envelope:
        payload = JobStatus(
            job_id=traffic.job_id, party_id=GUEST, attempt=0, state=state, at=datetime.now(UTC)
        )
        return traffic.envelope(payload, GUEST, HOST, f"status-{state}", component="job")

    findings(auditor, traffic, [traffic.propose(), status("running")], now=5.0)
    view = auditor.jobs[traffic.job_id]
    assert view.service_seen.get("scheduler") == 5.0 and not view.ended

    findings(auditor, traffic, [status("success")], now=6.0)

    assert view.ended


HARNESS = {
    "key_1024": ("public_key", -1, "data.key_below_policy"),
    "key_2025": ("public_key", -1, "data.key_width"),
    "ciphertext_out_of_range": ("host_scores", 0, "data.ciphertext_range"),
    "ciphertext_one": ("host_scores", 0, "data.ciphertext_trivial"),
    "ciphertext_not_coprime": ("host_scores", 0, "data.ciphertext_not_coprime"),
    "nan": ("host_score_sq", 0, "data.nonfinite"),
}


@pytest.mark.parametrize("attack", sorted(HARNESS))
def test_the_services_malicious_party_harness_is_caught_with_its_rule(
    attack: str, traffic: Traffic
) -> None:
    # Prepare: the attack as fedaudit.test_hooks builds it, from the host, after an honest start
    from fedaudit import test_hooks
    from fedschemas import PartyRef

    # (a 2048-bit floor for the short key; the pipeline's 1024-bit keys for the others)
    floor = 2048 if attack == "key_1024" else KEY_BITS
    auditor = Auditor(AuditPolicy(party_id=GUEST, min_key_bits=floor))
    tag, iteration, rule_id = HARNESS[attack]
    key = max((key_of(p) for p in (GUEST, HOST)), key=lambda k: int(k.nsquare))
    envelope = test_hooks.forged(
        test_hooks.ATTACKS[attack](key=key),
        job_id=traffic.job_id,
        component=traffic.component,
        sender=PartyRef(party_id=HOST, role="host"),
        receiver=PartyRef(party_id=GUEST, role="guest"),
        tag=tag,
        iteration=iteration,
        attempt=1,
    )
    honest = [traffic.propose(), traffic.task_run()]
    if tag != "public_key":
        honest += [traffic.public_key(GUEST), traffic.public_key(HOST)]

    # Execute
    found = observe(auditor, traffic, [*honest, envelope])

    # Assert
    assert rule_id in found, found


def test_the_harness_is_off_unless_explicitly_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedaudit import test_hooks

    monkeypatch.delenv(test_hooks.ENABLE_VARIABLE)
    with pytest.raises(test_hooks.HooksDisabled, match="FEDMQ_AUDIT_TEST_HOOKS=1"):
        test_hooks.odd_key(2025)
    monkeypatch.setenv(test_hooks.ENABLE_VARIABLE, "1")
    monkeypatch.setenv("FEDMQ_ENVIRONMENT", "production")
    with pytest.raises(test_hooks.HooksDisabled):
        test_hooks.nan_aggregate()
