"""A host's security policy refuses the validate_data input of every model where that input
sends the guest more of the host's data (components.<type>.refuse_inputs), before any
message: hetero_linr, hetero_poisson (the host's partial scores of the validation rows) and
hetero_secureboost (the sides of the host's splits for every validation row)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedflow.components import CATALOGUE
from fedflow.pipeline import Pipeline
from fedflow.policy import SecurityPolicy, task_problem
from fedflow.standalone import PolicyRefused, run_pipeline

GUEST, HOST = "9999", "10000"
SHORT_KEYS = {"key_bits": 512, "insecure_short_keys": True}
REFUSING = {
    "hetero_linr": "the host's partial scores of every validation row go to the guest in "
    "plaintext, once per epoch",
    "hetero_poisson": "the host's partial scores of every validation row go to the guest in "
    "plaintext, once per epoch",
    "hetero_secureboost": "for every validation row, the side of each of the host's split "
    "nodes goes to the guest in plaintext, once per tree",
}


def validating_pipeline(model: str) -> Pipeline:
    """reader, psi, data_split, then `model` trained on train and validated on validate."""
    return Pipeline.from_dict(
        {
            "name": f"{model}-validated",
            "parties": {"guest": GUEST, "host": [HOST]},
            "components": [
                {
                    "name": "reader_0",
                    "type": "reader",
                    "params": {"guest": {"table": "g"}, "host": {"table": "h"}},
                },
                {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
                {
                    "name": "split_0",
                    "type": "data_split",
                    "inputs": {"data": "psi_0.data"},
                    "params": {"common": {"train_fraction": 0.8, "validate_fraction": 0.2}},
                },
                {
                    "name": "model_0",
                    "type": model,
                    "inputs": {"data": "split_0.train", "validate_data": "split_0.validate"},
                    "params": {"common": SHORT_KEYS},
                },
            ],
        }
    )


def refusing(model: str) -> SecurityPolicy:
    return SecurityPolicy.model_validate(
        {
            "allow_insecure_short_keys": True,
            "min_key_bits": 512,
            "components": {model: {"refuse_inputs": ["validate_data"]}},
        }
    )


@pytest.mark.parametrize("model", sorted(REFUSING))
def test_a_host_policy_refusing_validate_data_stops_the_job_before_any_message(
    tmp_path: Path, model: str
) -> None:
    # Prepare: the host refuses the model's validate_data; the guest has the same rule (it
    # does not apply to the guest: the input reveals the host's data, not the guest's)
    pipeline = validating_pipeline(model)
    policies = {GUEST: refusing(model), HOST: refusing(model)}
    workdir = tmp_path / "run"

    # Execute
    with pytest.raises(PolicyRefused) as refused:
        run_pipeline(pipeline, {GUEST: tmp_path, HOST: tmp_path}, workdir, policies=policies)

    # Assert: refused by the host alone, naming the policy key and what the input reveals;
    # no party's world (brokers, databases) was made, so nothing was read or sent
    assert str(refused.value) == (
        f"party {HOST} refused the job: policy.components.{model}.refuse_inputs: input "
        f"validate_data ({REFUSING[model]}) is refused (party {HOST}'s policy, model_0)"
    )
    assert not workdir.exists()


@pytest.mark.parametrize("model", sorted(REFUSING))
def test_the_worker_refuses_a_task_of_it_given_validate_data_at_the_host(model: str) -> None:
    # Prepare: what a host's worker checks before a task.run runs
    policy = refusing(model)

    def problem(role: str, inputs: tuple[str, ...]) -> str | None:
        return task_problem(
            policy,
            party_id=HOST,
            component="model_0",
            component_type=model,
            role=role,
            params=dict(SHORT_KEYS),
            inputs=inputs,
        )

    # Execute
    with_validation = problem("host", ("data", "validate_data"))
    without = problem("host", ("data",))
    as_guest = problem("guest", ("data", "validate_data"))

    # Assert
    assert with_validation is not None
    assert with_validation.startswith(f"policy.components.{model}.refuse_inputs: input ")
    assert without is None and as_guest is None


def test_every_optional_input_that_sends_a_party_s_data_is_declared_so() -> None:
    # Prepare: the optional inputs of the catalogue; those that make a component send more
    # of a party's data are validate_data of the vertical models (the others are a party's
    # own artifacts: a model to apply, its binning model, a reference score table)
    optional = {
        (name, spec.name): spec.reveals
        for name, ctype in CATALOGUE.items()
        for spec in ctype.inputs
        if not spec.required
    }

    # Execute
    revealing = {key for key, role in optional.items() if role}

    # Assert
    assert revealing == {
        ("hetero_linr", "validate_data"),
        ("hetero_lr", "validate_data"),
        ("hetero_poisson", "validate_data"),
        ("hetero_secureboost", "validate_data"),
    }
    assert all(optional[key] == "host" for key in revealing)
