"""Grants name the parameters they allow: a host that granted its table for hetero_lr with a
list of params refuses, before anything runs, a job whose pipeline sets another for it or
one outside the grant's bounds, naming the grant's rule; the same job runs under a grant that
allows its params. Real schedulers on memory brokers, fake workers (tests/scheduler)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fedflow.pipeline import Pipeline
from fedflow.policy import ParamGrant, check_grant_params, parse_param_spec
from fedscheduler.rpc import SchedulerCommandFailed

from fedmq.data_cli import params_text
from tests.scheduler.conftest import GUEST, HOST, Federation

from .conftest import hetero_lr_pipeline

TABLE = "breast_hetero_host"
LR_SET = ["epochs", "batch_size", "learning_rate", "seed"]
"""What the test pipeline sets for hetero_lr (besides what `extra` adds)."""


def granted(fed: Federation, params: dict[str, Any]) -> None:
    fed.client(HOST).grant_add(TABLE, GUEST, ["*"], params=params)


@pytest.mark.parametrize(
    ("params", "extra", "refusal"),
    [
        (
            {"hetero_lr": {"may_set": LR_SET}},
            ", decay: 0.5",
            "party 10000 refused the job: grant.params.hetero_lr.may_set: party 9999 may not "
            "set decay (the grant lets it set: epochs, batch_size, learning_rate, seed) "
            "(party 10000's grant of table breast_hetero_host to party 9999, lr_0)",
        ),
        (
            {"hetero_lr": {"may_set": LR_SET, "bounds": {"learning_rate": {"max": 0.1}}}},
            "",
            "party 10000 refused the job: grant.params.hetero_lr.bounds.learning_rate: "
            "learning_rate 0.5 > max 0.1 "
            "(party 10000's grant of table breast_hetero_host to party 9999, lr_0)",
        ),
    ],
    ids=["param_not_granted", "out_of_bounds"],
)
def test_the_host_refuses_params_its_grant_does_not_allow_before_any_task_runs(
    federation_factory: Callable[..., Federation],
    params: dict[str, Any],
    extra: str,
    refusal: str,
) -> None:
    # Prepare: the host's grant of its table lists what the guest's pipelines may set
    fed = federation_factory(grants=[])
    granted(fed, params)

    # Execute
    fed.client(GUEST).submit(hetero_lr_pipeline(extra), job_id="job-grant")
    failed = fed.wait_state(GUEST, "job-grant", "failed")

    # Assert: refused by the host's grant, the rule named; nothing ran anywhere
    assert failed["reason"] == refusal
    assert fed.workers[HOST].runs == []
    assert fed.workers[GUEST].runs == []


def test_the_same_job_runs_under_a_grant_that_allows_its_params(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(grants=[])
    granted(fed, {"hetero_lr": {"may_set": LR_SET, "bounds": {"decay": {"min": 0, "max": 1}}}})

    fed.client(GUEST).submit(hetero_lr_pipeline(", decay: 0.5"), job_id="job-granted")

    fed.wait_state(GUEST, "job-granted", "success")
    assert "lr_0" in fed.workers[HOST].components_run("job-granted")
    grant = fed.client(HOST).grant_list(table=TABLE)[0]
    assert grant["params"] == {
        "hetero_lr": {"may_set": LR_SET, "bounds": {"decay": {"min": 0.0, "max": 1.0}}}
    }


def test_a_grant_naming_an_unknown_param_is_refused(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(grants=[])

    with pytest.raises(SchedulerCommandFailed, match="hetero_lr has no parameter 'epoch'"):
        granted(fed, {"hetero_lr": {"may_set": ["epoch"]}})

    assert fed.client(HOST).grant_list(table=TABLE) == []


# --- the pure parts ---------------------------------------------------------------------------


def test_param_specs_parse_as_the_cli_takes_them_and_print_back_the_same() -> None:
    specs = ["hetero_lr.epochs", "hetero_lr.learning_rate=..0.5", "hetero_lr.batch_size=512.."]

    parsed = parse_param_spec(specs)

    assert parsed == {
        "hetero_lr": ParamGrant.model_validate(
            {
                "may_set": ["epochs"],
                "bounds": {"learning_rate": {"max": 0.5}, "batch_size": {"min": 512}},
            }
        )
    }
    dumped = {t: r.model_dump(mode="json", exclude_defaults=True) for t, r in parsed.items()}
    assert params_text(dumped) == ", ".join(specs)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("epochs", "write TYPE.PARAM"),
        ("hetero_lr.epochs=5", "bounds are MIN..MAX"),
        ("hetero_lr.epochs=a..b", "bounds must be numbers"),
        ("hetero_lr.epochs=9..1", "min 9.0 is above max 1.0"),
        ("nope.epochs", "unknown component type 'nope'"),
    ],
)
def test_a_bad_param_spec_is_refused_saying_why(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_param_spec([spec])


def test_grant_params_leave_types_they_do_not_name_and_the_initiators_own_jobs_alone() -> None:
    pipeline = Pipeline.from_yaml(hetero_lr_pipeline(", decay: 0.5"))
    only_psi = {"psi": ParamGrant()}
    strict = {"hetero_lr": ParamGrant(may_set=("epochs",))}

    assert check_grant_params(pipeline, HOST, lambda table: only_psi) == []
    assert check_grant_params(pipeline, GUEST, lambda table: strict) == []
    assert [v.rule for v in check_grant_params(pipeline, HOST, lambda table: strict)] == [
        "grant.params.hetero_lr.may_set"
    ]
