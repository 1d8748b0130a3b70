"""The policy at the worker, the last check before a task runs: a task.run its party's policy
refuses fails with the rule as its reason and runs nothing; the same task runs where the
policy allows it. Two parties' workers in-process (tests/worker's Federation2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fedflow.policy import PolicyError, SecurityPolicy
from fedschemas.payloads import TaskRun, TaskStatus
from fedworker.main import Worker
from fedworker.settings import WorkerSettings
from pydantic import SecretStr

from tests.polling import wait_for
from tests.worker.test_worker_tasks import GUEST, HOST, TABLES, Federation2

from .conftest import PERMISSIVE, hetero_lr_pipeline

LR = {"epochs": 1, "batch_size": 128, "learning_rate": 0.5, "seed": 1}
SHORT = {"key_bits": 512, "insecure_short_keys": True}


def run_lr(fed: Federation2, job: str, params: dict[str, Any]) -> None:
    readers = {GUEST: {"table": TABLES[GUEST]}, HOST: {"table": TABLES[HOST]}}
    fed.run(job, "reader_0", "reader", readers, {})
    fed.wait_final("reader_0")
    fed.run(job, "psi_0", "psi", {}, {"data": "reader_0.data"})
    fed.wait_final("psi_0")
    fed.run(job, "lr_0", "hetero_lr", {"common": params}, {"data": "psi_0.data"})


def host_final(fed: Federation2, component: str) -> TaskStatus:
    # Only the host's end: the guest's side waits for a peer that refused.
    return wait_for(lambda: fed.final(HOST, component), 60, f"{component} to end at the host")


@pytest.fixture
def make_fed(unique_name: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Federation2] = []

    def make(guest: SecurityPolicy, host: SecurityPolicy) -> Federation2:
        fed = Federation2(unique_name, tmp_path)
        fed.parties[GUEST].worker.executor.policy = guest
        fed.parties[HOST].worker.executor.policy = host
        fed.start()
        made.append(fed)
        return fed

    yield make
    for fed in made:
        fed.stop()


def test_a_task_with_short_keys_fails_at_a_default_worker_naming_the_rule(make_fed: Any) -> None:
    # Prepare: the guest allows short keys, the host keeps the defaults
    fed = make_fed(PERMISSIVE, SecurityPolicy())

    # Execute
    run_lr(fed, "job-short", {**LR, "key_bits": 256, "insecure_short_keys": True})
    host = host_final(fed, "lr_0")

    # Assert: the host's task failed on its policy and never started the protocol
    assert host.state == "failed"
    assert host.reason is not None
    assert host.reason.startswith(
        "policy.min_key_bits: key_bits 256 < 2048 (party 10000's policy, lr_0)"
    )
    assert "policy.allow_insecure_short_keys" in host.reason
    # (the guest, which allows short keys, may have sent its own key before the job stopped)
    sent_by_host = {c.tag for c in fed.crossings.snapshot() if c.source == HOST}
    assert not sent_by_host & {"public_key", "host_scores"}


def test_a_revealing_task_fails_at_a_host_that_does_not_allow_it(make_fed: Any) -> None:
    fed = make_fed(PERMISSIVE, PERMISSIVE.model_copy(update={"components": {}}))

    run_lr(fed, "job-reveal", {**LR, **SHORT, "reveal_host_scores": True})
    host = host_final(fed, "lr_0")

    assert host.state == "failed"
    assert host.reason == (
        "policy.components.hetero_lr.allow_revealing: reveal_host_scores: true (the host's "
        "per-row partial scores go to the guest in plaintext) is not allowed "
        "(party 10000's policy, lr_0)"
    )


def test_the_same_task_runs_where_the_policy_allows_it(
    unique_name: str, tmp_path: Path, permissive_policy_file: Path
) -> None:
    # Prepare: both workers read the permissive policy from their settings (POLICY_FILE)
    fed = Federation2(unique_name, tmp_path, policy_file=str(permissive_policy_file))
    assert fed.parties[HOST].worker.executor.policy == PERMISSIVE
    fed.start()
    try:
        run_lr(fed, "job-ok", {**LR, **SHORT, "reveal_host_scores": True})
        ended = fed.wait_final("lr_0", timeout=240)
    finally:
        fed.stop()

    assert {p: s.state for p, s in ended.items()} == {GUEST: "success", HOST: "success"}
    assert "host_scores_revealed" in {c.tag for c in fed.crossings.snapshot()}


def test_a_worker_named_a_missing_policy_file_does_not_start(tmp_path: Path) -> None:
    settings = WorkerSettings(
        party_id=HOST,
        bus_url=SecretStr("memory://policy-missing"),
        database_url=SecretStr(f"sqlite:///{tmp_path / 'w.db'}"),
        policy_file=str(tmp_path / "nope.yaml"),
    )

    with pytest.raises(PolicyError, match=r"nope\.yaml"):
        Worker(settings)


def send_lr_to_host(fed: Federation2, job: str, params: dict[str, Any], pipeline: str) -> None:
    # Only the host's task: it is refused before the protocol starts, so no guest is needed.
    fed.send(
        HOST,
        TaskRun(
            job_id=job,
            component="lr_0",
            component_type="hetero_lr",
            attempt=0,
            role="host",
            party_id=HOST,
            parties={"guest": [GUEST], "host": [HOST]},
            params=params,
            inputs={"data": "psi_0.data"},
            pipeline_yaml=pipeline,
        ),
        "lr_0",
        "task.run",
    )


MAY_SET_EPOCHS = SecurityPolicy.model_validate(
    {"components": {"hetero_lr": {"initiator_may_set": ["epochs", "batch_size", "seed"]}}}
)


@pytest.mark.parametrize(
    ("pipeline", "reason"),
    [
        (
            hetero_lr_pipeline(),
            "policy.components.hetero_lr.initiator_may_set: party 9999 may not set "
            "learning_rate for this party (it may set: epochs, batch_size, seed) "
            "(party 10000's policy, lr_0)",
        ),
        (
            "name: forged",
            "policy.components.hetero_lr.initiator_may_set: the task names no initiator, so "
            "its params cannot be checked (party 10000's policy, lr_0)",
        ),
    ],
    ids=["guests_pipeline", "unreadable_pipeline"],
)
def test_a_task_setting_params_the_initiator_may_not_set_fails_at_the_worker(
    make_fed: Any, pipeline: str, reason: str
) -> None:
    # Prepare: the host lets other parties' pipelines set epochs, batch_size and seed only
    fed = make_fed(SecurityPolicy(), MAY_SET_EPOCHS)

    # Execute: a task.run (not through the host's scheduler) with learning_rate 0.5
    send_lr_to_host(fed, "job-may-set", {**LR, "learning_rate": 0.5}, pipeline)
    host = host_final(fed, "lr_0")

    # Assert
    assert host.state == "failed"
    assert host.reason == reason


def test_a_task_given_validate_data_fails_at_a_host_whose_policy_refuses_that_input(
    make_fed: Any,
) -> None:
    # Prepare: the host's policy refuses hetero_lr's validate_data (it would send the host's
    # partial scores of the validation rows to the guest each epoch)
    refusing = SecurityPolicy.model_validate(
        {"components": {"hetero_lr": {"refuse_inputs": ["validate_data"]}}}
    )
    fed = make_fed(SecurityPolicy(), refusing)

    # Execute: the host's task.run with a validate_data input
    fed.send(
        HOST,
        TaskRun(
            job_id="job-validate",
            component="lr_0",
            component_type="hetero_lr",
            attempt=0,
            role="host",
            party_id=HOST,
            parties={"guest": [GUEST], "host": [HOST]},
            params=LR,
            inputs={"data": "psi_0.data", "validate_data": "psi_0.data"},
            pipeline_yaml=hetero_lr_pipeline(),
        ),
        "lr_0",
        "task.run",
    )
    host = host_final(fed, "lr_0")

    # Assert
    assert host.state == "failed"
    assert host.reason == (
        "policy.components.hetero_lr.refuse_inputs: input validate_data (the host's partial "
        "scores of every validation row go to the guest in plaintext, once per epoch) is "
        "refused (party 10000's policy, lr_0)"
    )
