"""The policy at the scheduler: a party refuses a proposed job its policy does not allow
before anything runs, naming the rule, and refuses to submit one itself; the same job runs
where the party's policy allows it. Real schedulers on memory brokers, fake workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fedflow.policy import SecurityPolicy
from fedscheduler.rpc import SchedulerCommandFailed

from tests.scheduler.conftest import GUEST, HOST, Federation

from .conftest import PERMISSIVE, REVEAL, SHORT_KEYS, hetero_lr_pipeline

ALL_TYPES = [(HOST, "breast_hetero_host", GUEST, ["*"])]


def start(fed: Federation) -> None:
    for party in (GUEST, HOST):
        fed.schedulers[party].start()


def test_the_host_refuses_the_guests_short_keys_before_any_task_runs(
    federation_factory: Callable[..., Federation], permissive_policy_file: Path
) -> None:
    # Prepare: the guest's operator allows short keys (its policy file); the host keeps the
    # secure defaults.
    fed = federation_factory(grants=ALL_TYPES, policy_file=str(permissive_policy_file), start=())
    fed.schedulers[HOST].ctx.security = SecurityPolicy()
    start(fed)

    # Execute
    fed.client(GUEST).submit(hetero_lr_pipeline(SHORT_KEYS), job_id="job-short")
    failed = fed.wait_state(GUEST, "job-short", "failed")

    # Assert: refused by the host, the rule named; nothing ran anywhere.
    assert failed["reason"].startswith(
        "party 10000 refused the job: policy.min_key_bits: key_bits 256 < 2048 "
        "(party 10000's policy, lr_0)"
    )
    assert "policy.allow_insecure_short_keys" in failed["reason"]
    assert "policy.min_key_bits" in fed.job(HOST, "job-short")["reason"]
    assert fed.workers[HOST].runs == []
    assert fed.workers[GUEST].runs == []


def test_the_host_refuses_the_mode_that_reveals_its_scores(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: default policies at both (the guest loses nothing by the mode)
    fed = federation_factory(grants=ALL_TYPES)

    fed.client(GUEST).submit(hetero_lr_pipeline(REVEAL), job_id="job-reveal")
    failed = fed.wait_state(GUEST, "job-reveal", "failed")

    assert failed["reason"].startswith(
        "party 10000 refused the job: policy.components.hetero_lr.allow_revealing: "
        "reveal_host_scores: true"
    )
    assert fed.workers[HOST].runs == []


@pytest.mark.parametrize("extra", [SHORT_KEYS, REVEAL], ids=["short_keys", "reveal"])
def test_the_same_job_runs_when_the_hosts_policy_allows_it(
    federation_factory: Callable[..., Federation], permissive_policy_file: Path, extra: str
) -> None:
    fed = federation_factory(grants=ALL_TYPES, policy_file=str(permissive_policy_file))

    fed.client(GUEST).submit(hetero_lr_pipeline(extra), job_id="job-allowed")

    fed.wait_state(GUEST, "job-allowed", "success")
    assert "lr_0" in fed.workers[HOST].components_run("job-allowed")


def test_the_guest_refuses_to_submit_what_its_own_policy_forbids(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(grants=ALL_TYPES)
    fed.schedulers[GUEST].ctx.security = PERMISSIVE.model_copy(update={"min_key_bits": 1024})

    fed.client(GUEST).submit(hetero_lr_pipeline(SHORT_KEYS), job_id="job-own")
    failed = fed.wait_state(GUEST, "job-own", "failed")

    assert failed["reason"] == (
        "party 9999 refused the job: policy.min_key_bits: key_bits 256 < 1024 "
        "(party 9999's policy, lr_0)"
    )
    assert fed.relay.crossed == []


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (", learning_rate: .inf", "learning_rate: Input should be a finite number"),
        (", batch_size: 2", "batch_size: Input should be greater than or equal to 64"),
    ],
    ids=["inf_learning_rate", "batch_of_2"],
)
def test_non_finite_and_too_small_params_are_refused_at_submission(
    federation_factory: Callable[..., Federation], extra: str, reason: str
) -> None:
    fed = federation_factory(grants=ALL_TYPES)
    text = hetero_lr_pipeline(extra).replace("batch_size: 128, learning_rate: 0.5, ", "")

    with pytest.raises(SchedulerCommandFailed, match=reason) as info:
        fed.client(GUEST).submit(text, job_id="job-bad")

    assert info.value.kind == "invalid"
    assert fed.relay.crossed == []
