"""Params that name code to import (homo_nn's and homo_nn_predict's `model`): a party imports
a path another party's pipeline names only when its own policy lists it
(`components.<type>.allow_code`), checked by its scheduler before it accepts the job and by its
worker before the task runs; its own pipelines' paths are its operator's. A path whose module is
not there is refused before anything along it runs."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedflow.components.homo_nn.torch_learner import ModelError, factory_of
from fedflow.import_path import find_module
from fedflow.pipeline import Pipeline
from fedflow.policy import (
    PolicyError,
    SecurityPolicy,
    initiator_matters,
    parse_policy,
    pipeline_problem,
    task_problem,
)
from fedflow.standalone import PolicyRefused, run_pipeline
from fedschemas.payloads import TaskRun

from tests.homo.conftest import EXAMPLE_DATA
from tests.homo.test_homo_nn import nn_pipeline
from tests.polling import wait_for
from tests.scheduler.conftest import GUEST, HOST, Federation
from tests.worker.test_worker_tasks import Federation2

HAVE_TORCH = importlib.util.find_spec("torch") is not None
ABORT = "os:abort"
MLP = "tests.homo.nets:mlp"
SET_BY_NN_SPEC = ["rounds", "batch_size", "learning_rate", "seed"]


def nn_spec(model: str, tables: tuple[str, str] = ("breast_homo_guest", "breast_homo_host")) -> Any:
    """The guest's (9999's) homo_nn pipeline over two parties reading `tables` (predict
    scores them again), `model` in training and predict; the guest aggregates."""
    params = {"rounds": 1, "batch_size": 32, "learning_rate": 0.2, "seed": 1, "model": model}
    assert sorted(params) == sorted([*SET_BY_NN_SPEC, "model"])
    spec = nn_pipeline(list(tables), params)
    if tables != ("breast_homo_guest", "breast_homo_host"):
        spec["components"][2]["params"] = {GUEST: {"table": tables[0]}, HOST: {"table": tables[1]}}
    spec["components"][3]["params"] = {"common": {"model": model}}
    return spec


def allowing(*paths: str) -> SecurityPolicy:
    return SecurityPolicy.model_validate(
        {
            "components": {
                "homo_nn": {"allow_code": list(paths)},
                "homo_nn_predict": {"allow_code": list(paths)},
            }
        }
    )


# --- the rule (pure) --------------------------------------------------------------------------


def test_another_partys_pipeline_naming_code_is_refused_naming_the_policy_key() -> None:
    pipeline = Pipeline.from_dict(nn_spec(ABORT))

    problem = pipeline_problem(SecurityPolicy(), pipeline, HOST)

    assert problem is not None
    assert problem.split("; ") == [
        "policy.components.homo_nn.allow_code: party 9999's pipeline names code for this party "
        "to import and run: model 'os:abort' is imported only where this party's policy lists "
        "it in components.homo_nn.allow_code (it lists none) (party 10000's policy, homo_lr_0)",
        "policy.components.homo_nn_predict.allow_code: party 9999's pipeline names code for "
        "this party to import and run: model 'os:abort' is imported only where this party's "
        "policy lists it in components.homo_nn_predict.allow_code (it lists none) "
        "(party 10000's policy, predict_0)",
    ]


def test_the_initiators_own_path_and_a_listed_path_pass_and_only_that_exact_string() -> None:
    pipeline = Pipeline.from_dict(nn_spec(MLP))

    own = pipeline_problem(SecurityPolicy(), pipeline, GUEST)
    listed = pipeline_problem(allowing(MLP), pipeline, HOST)
    other = pipeline_problem(allowing("tests.homo.nets:two_outputs"), pipeline, HOST)
    training_only = pipeline_problem(
        SecurityPolicy.model_validate({"components": {"homo_nn": {"allow_code": [MLP]}}}),
        pipeline,
        HOST,
    )

    assert own is None
    assert listed is None
    assert other is not None
    assert "(it lists: tests.homo.nets:two_outputs)" in other
    assert training_only is not None
    assert training_only.startswith("policy.components.homo_nn_predict.allow_code:")
    assert "homo_lr_0" not in training_only


def test_letting_the_initiator_set_model_does_not_list_its_code() -> None:
    may_set = SecurityPolicy.model_validate(
        {"components": {"homo_nn": {"initiator_may_set": [*SET_BY_NN_SPEC, "model"]}}}
    )
    pipeline = Pipeline.from_dict(nn_spec(ABORT))

    problem = pipeline_problem(may_set, pipeline, HOST)

    assert problem is not None
    assert [p.split(":")[0] for p in problem.split("; ")] == [
        "policy.components.homo_nn.allow_code",
        "policy.components.homo_nn_predict.allow_code",
    ]


def test_a_task_that_names_no_initiator_is_refused_only_when_it_names_code() -> None:
    def check(params: dict[str, Any]) -> str | None:
        return task_problem(
            SecurityPolicy(),
            party_id=HOST,
            component="nn_0",
            component_type="homo_nn",
            role="host",
            params=params,
            initiator=None,
        )

    assert check({"model": ABORT}) == (
        "policy.components.homo_nn.allow_code: the task names no initiator, so model "
        "'os:abort' is imported only where this party's policy lists it in "
        "components.homo_nn.allow_code (it lists none) (party 10000's policy, nn_0)"
    )
    assert check({"model": None, "hidden_units": 4}) is None
    assert not initiator_matters(SecurityPolicy(), "homo_nn", "host", {"model": None})
    assert initiator_matters(SecurityPolicy(), "homo_nn", "host", {"model": ABORT})


def test_even_the_partys_own_task_must_name_an_import_path() -> None:
    problem = task_problem(
        SecurityPolicy(),
        party_id=GUEST,
        component="nn_0",
        component_type="homo_nn",
        role="guest",
        params={"model": "os.abort"},
        initiator=GUEST,
    )

    assert problem == (
        "policy.components.homo_nn.allow_code: model 'os.abort' is not an import path "
        "'package.module:attr' (party 9999's policy, nn_0)"
    )


@pytest.mark.parametrize(
    ("rules", "reason"),
    [
        ({"homo_nn": {"allow_code": ["os"]}}, "'os' is not an import path"),
        ({"homo_lr": {"allow_code": [ABORT]}}, "homo_lr has no parameter that names code"),
    ],
    ids=["not_an_import_path", "type_without_code_params"],
)
def test_a_policy_file_with_a_bad_allow_code_is_refused(rules: Any, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        parse_policy(yaml.safe_dump({"components": rules}))


# --- the import itself --------------------------------------------------------------------------


def test_a_path_whose_module_is_not_there_is_refused_before_its_package_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a package whose __init__ leaves a mark when it runs
    package = tmp_path / "marking_pkg"
    package.mkdir()
    mark = tmp_path / "ran"
    (package / "__init__.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    (package / "nets.py").write_text("def make(features):\n    return features\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    # Execute
    with pytest.raises(ModelError, match=r"no module 'marking_pkg\.absent'") as info:
        factory_of("marking_pkg.absent:make", "at party 10000")
    found = find_module("marking_pkg.nets")

    # Assert: the missing module refused, the existing one found, and the package never ran
    assert "nothing was imported" in str(info.value)
    assert found is not None
    assert found.origin == str(package / "nets.py")
    assert not mark.exists()
    assert "marking_pkg" not in sys.modules


# --- at the scheduler (real schedulers on memory brokers, fake workers) ---------------------------

HOMO_TABLES = ("breast_hetero_guest", "breast_hetero_host")
ALL_TYPES = [(HOST, "breast_hetero_host", GUEST, ["*"])]


def test_the_host_scheduler_refuses_a_job_whose_pipeline_names_code_it_does_not_list(
    federation_factory: Callable[..., Federation],
) -> None:
    # Prepare: default policies at both parties
    fed = federation_factory(grants=ALL_TYPES)
    text = yaml.safe_dump(nn_spec(ABORT, HOMO_TABLES))

    # Execute
    fed.client(GUEST).submit(text, job_id="job-abort")
    failed = fed.wait_state(GUEST, "job-abort", "failed")

    # Assert: the host refused before anything ran anywhere; the guest's own path passed its
    # own check (the job reached the host)
    assert failed["reason"].startswith(
        "party 10000 refused the job: policy.components.homo_nn.allow_code: party 9999's "
        "pipeline names code for this party to import and run: model 'os:abort'"
    )
    assert fed.workers[HOST].runs == []
    assert fed.workers[GUEST].runs == []


def test_the_host_scheduler_accepts_a_job_naming_code_its_policy_lists(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(grants=ALL_TYPES, start=())
    fed.schedulers[HOST].ctx.security = allowing(MLP)
    for party in (GUEST, HOST):
        fed.schedulers[party].start()

    fed.client(GUEST).submit(yaml.safe_dump(nn_spec(MLP, HOMO_TABLES)), job_id="job-mlp")

    fed.wait_state(GUEST, "job-mlp", "success")
    assert "homo_lr_0" in fed.workers[HOST].components_run("job-mlp")


# --- at the worker (two parties' real workers in-process) -----------------------------------------


def host_task(
    job: str, component: str, ctype: str, params: dict[str, Any], pipeline: str = "name: test"
) -> TaskRun:
    return TaskRun(
        job_id=job,
        component=component,
        component_type=ctype,
        attempt=0,
        role="host",
        party_id=HOST,
        parties={"guest": [GUEST], "host": [HOST]},
        params=params,
        inputs={"data": "reader_0.data"} if ctype != "reader" else {},
        pipeline_yaml=pipeline,
    )


def send_nn_to_host(fed: Federation2, job: str, model: str, pipeline: str) -> None:
    # Only the host's task: it fails before the protocol starts, so no guest is needed.
    params = {"rounds": 1, "batch_size": 32, "model": model}
    fed.send(HOST, host_task(job, "nn_0", "homo_nn", params, pipeline), "nn_0", "task.run")


def host_end(fed: Federation2) -> Any:
    return wait_for(lambda: fed.final(HOST, "nn_0"), 60, "nn_0 to end at the host")


@pytest.mark.parametrize(
    ("pipeline", "reason"),
    [
        (
            "guest",
            "policy.components.homo_nn.allow_code: party 9999's pipeline names code for this "
            "party to import and run: model 'os:abort' is imported only where this party's "
            "policy lists it in components.homo_nn.allow_code (it lists none) "
            "(party 10000's policy, nn_0)",
        ),
        (
            "name: forged",
            "policy.components.homo_nn.allow_code: the task names no initiator, so model "
            "'os:abort' is imported only where this party's policy lists it in "
            "components.homo_nn.allow_code (it lists none) (party 10000's policy, nn_0)",
        ),
    ],
    ids=["guests_pipeline", "unreadable_pipeline"],
)
def test_a_task_naming_code_the_host_does_not_list_fails_at_its_worker(
    unique_name: str, tmp_path: Path, pipeline: str, reason: str
) -> None:
    # Prepare: default policies (the secure ones) at both workers
    fed = Federation2(unique_name, tmp_path)
    fed.start()
    try:
        text = yaml.safe_dump(nn_spec(ABORT, HOMO_TABLES)) if pipeline == "guest" else pipeline

        # Execute: a task.run that did not come through the host's scheduler
        send_nn_to_host(fed, "job-abort", ABORT, text)
        host = host_end(fed)
    finally:
        fed.stop()

    # Assert: refused on the policy (this process is alive: os.abort was never called)
    assert host.state == "failed"
    assert host.reason == reason


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed (fedmq-flow[torch])")
def test_a_listed_path_gets_past_the_workers_policy_and_must_build_a_torch_module(
    unique_name: str, tmp_path: Path
) -> None:
    # Prepare: the host lists a factory that returns a list, not a module
    path = "tests.homo.nets:not_a_module"
    fed = Federation2(unique_name, tmp_path)
    fed.parties[HOST].worker.executor.policy = allowing(path)
    fed.parties[HOST].worker.tables.upload(
        "breast_homo_host", EXAMPLE_DATA / "breast_homo_host.csv", label_column="y"
    )
    fed.start()
    try:
        fed.send(
            HOST,
            host_task("job-listed", "reader_0", "reader", {"table": "breast_homo_host"}),
            "reader_0",
            "task.run",
        )
        wait_for(lambda: fed.final(HOST, "reader_0"), 60, "reader_0 to end at the host")

        # Execute
        send_nn_to_host(fed, "job-listed", path, yaml.safe_dump(nn_spec(path, HOMO_TABLES)))
        host = host_end(fed)
    finally:
        fed.stop()

    # Assert: imported and called (not refused by the policy), then refused clearly
    assert host.state == "failed"
    assert host.reason is not None
    assert "policy." not in host.reason
    assert f"homo_nn: model {path!r} returned list, not a torch.nn.Module" in host.reason


# --- end to end in standalone mode ----------------------------------------------------------------


def test_standalone_refuses_code_the_host_does_not_list(tmp_path: Path) -> None:
    # (the path listed runs: tests/homo/test_homo_nn_torch's end-to-end run gives the host a
    # policy that lists its module)
    folders = {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}

    with pytest.raises(PolicyRefused, match=r"party 10000 refused the job: .*allow_code"):
        run_pipeline(
            Pipeline.from_dict(nn_spec(ABORT)),
            folders,
            tmp_path / "run",
            policies={GUEST: SecurityPolicy(), HOST: SecurityPolicy()},
        )
