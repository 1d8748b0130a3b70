"""A party's security policy (fedflow.policy): what it refuses in a pipeline the initiator
wrote, how each refusal names its rule, and how an operator's policy file is read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fedflow.descriptors import Pipeline, PipelineError
from fedflow.policy import (
    PolicyError,
    SecurityPolicy,
    check_pipeline,
    load_policy,
    parse_policy,
    pipeline_problem,
    policy_yaml,
    revealing_modes,
    task_problem,
)

from .conftest import PERMISSIVE, REVEAL, SHORT_KEYS, hetero_lr_pipeline

GUEST, HOST = "9999", "10000"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"


def test_the_host_refuses_short_keys_the_guest_wrote_naming_the_rule() -> None:
    pipeline = Pipeline.from_yaml(hetero_lr_pipeline(SHORT_KEYS))

    problem = pipeline_problem(SecurityPolicy(), pipeline, HOST)

    assert problem is not None
    assert "policy.min_key_bits: key_bits 256 < 2048 (party 10000's policy, lr_0)" in problem
    assert (
        "policy.allow_insecure_short_keys: insecure_short_keys: true is refused "
        "(party 10000's policy, lr_0)"
    ) in problem


def test_the_host_refuses_the_mode_that_reveals_its_scores_but_the_guest_does_not_mind() -> None:
    pipeline = Pipeline.from_yaml(hetero_lr_pipeline(REVEAL))

    at_host = pipeline_problem(SecurityPolicy(), pipeline, HOST)
    at_guest = pipeline_problem(SecurityPolicy(), pipeline, GUEST)

    assert at_host == (
        "policy.components.hetero_lr.allow_revealing: reveal_host_scores: true (the host's "
        "per-row partial scores go to the guest in plaintext) is not allowed "
        "(party 10000's policy, lr_0)"
    )
    # Only the host's data is revealed by this mode: the guest's own floor is not at stake.
    assert at_guest is None


def test_the_same_pipelines_pass_where_the_partys_policy_allows_them() -> None:
    for extra in (SHORT_KEYS, REVEAL, SHORT_KEYS + REVEAL):
        pipeline = Pipeline.from_yaml(hetero_lr_pipeline(extra))
        assert pipeline_problem(PERMISSIVE, pipeline, HOST) is None
        assert pipeline_problem(PERMISSIVE, pipeline, GUEST) is None


def test_a_policy_allowing_short_keys_still_holds_its_own_floor() -> None:
    policy = SecurityPolicy(min_key_bits=1024, allow_insecure_short_keys=True)
    pipeline = Pipeline.from_yaml(hetero_lr_pipeline(", key_bits: 512, insecure_short_keys: true"))

    problem = pipeline_problem(policy, pipeline, HOST)

    assert problem == "policy.min_key_bits: key_bits 512 < 1024 (party 10000's policy, lr_0)"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_pipeline_passes_the_default_policy_at_every_party(path: Path) -> None:
    pipeline = Pipeline.from_yaml(path.read_text(encoding="utf-8"))

    for party in pipeline.party_ids():
        assert check_pipeline(SecurityPolicy(), pipeline, party) == []


def test_components_bounds_and_what_the_initiator_may_set() -> None:
    policy = parse_policy(
        """
        allowed_components: [reader, psi, hetero_lr]
        components:
          hetero_lr:
            bounds: {epochs: {max: 5}, learning_rate: {min: 0.01, max: 1}}
            initiator_may_set: [epochs, batch_size, learning_rate, seed]
        """
    )
    pipeline = Pipeline.from_yaml(
        hetero_lr_pipeline(", decay: 0.5").replace("epochs: 1", "epochs: 9")
    )
    with_eval = Pipeline.from_yaml((EXAMPLES / "psi_eval.yaml").read_text(encoding="utf-8"))

    at_host = pipeline_problem(policy, pipeline, HOST)
    own = pipeline_problem(policy, Pipeline.from_yaml(hetero_lr_pipeline(", decay: 0.5")), GUEST)

    assert at_host == (
        "policy.components.hetero_lr.bounds.epochs: epochs 9 > max 5 (party 10000's policy, "
        "lr_0); policy.components.hetero_lr.initiator_may_set: party 9999 may not set decay "
        "for this party (it may set: epochs, batch_size, learning_rate, seed) "
        "(party 10000's policy, lr_0)"
    )
    # The initiator's own operator writes its pipelines: initiator_may_set is about others.
    assert own is None
    # evaluation runs at the guest only: the guest refuses it, the host has no task of it.
    assert pipeline_problem(policy, with_eval, GUEST) == (
        "policy.allowed_components: component type evaluation is not allowed (allowed: "
        "reader, psi, hetero_lr) (party 9999's policy, eval_0)"
    )
    assert pipeline_problem(policy, with_eval, HOST) is None


def test_a_task_is_checked_alone_as_the_worker_does() -> None:
    params = Pipeline.from_yaml(hetero_lr_pipeline(SHORT_KEYS)).params_for("lr_0", "host", HOST)

    refused = task_problem(
        SecurityPolicy(),
        party_id=HOST,
        component="lr_0",
        component_type="hetero_lr",
        role="host",
        params=params,
    )
    allowed = task_problem(
        PERMISSIVE,
        party_id=HOST,
        component="lr_0",
        component_type="hetero_lr",
        role="host",
        params=params,
    )

    assert refused is not None and refused.startswith("policy.min_key_bits: key_bits 256 < 2048")
    assert allowed is None


def test_the_defaults_are_the_secure_floor() -> None:
    policy = load_policy(None)

    assert policy == SecurityPolicy()
    assert policy.min_key_bits == 2048
    assert policy.allow_insecure_short_keys is False
    assert policy.rules_for("hetero_lr").allow_revealing == ()
    assert [m.param for m in revealing_modes("hetero_lr")] == ["reveal_host_scores"]


def test_a_policy_file_round_trips_and_bad_ones_are_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    good = tmp_path / "policy.yaml"
    good.write_text(policy_yaml(PERMISSIVE), encoding="utf-8")
    as_json = tmp_path / "policy.json"
    as_json.write_text(PERMISSIVE.model_dump_json(), encoding="utf-8")

    assert load_policy(good) == PERMISSIVE
    assert load_policy(as_json) == PERMISSIVE
    with pytest.raises(PolicyError, match="No such file"):
        load_policy(tmp_path / "missing.yaml")
    cases = {
        "min_key_bits: 512\n": "allow_insecure_short_keys: true as well",
        "min_key_bits: 2048\ncolour: red\n": "colour: Extra inputs are not permitted",
        "components: {hetero_lr: {allow_revealing: [epochs]}}\n": "not a revealing parameter",
        "components: {hetero_lr: {bounds: {speed: {max: 1}}}}\n": "has no parameter 'speed'",
        "allowed_components: [psy]\n": "unknown component type 'psy'",
        "components: {hetero_lr: {bounds: {epochs: {max: .inf}}}}\n": "finite number",
        "[1, 2]\n": "a policy is a mapping",
    }
    for text, reason in cases.items():
        with pytest.raises(PolicyError, match=reason):
            parse_policy(text, "test")


def test_inf_learning_rates_and_tiny_batches_are_refused_when_the_pipeline_is_read() -> None:
    cases = {
        ", learning_rate: .inf": "learning_rate: Input should be a finite number",
        ", alpha: .nan": "alpha: Input should be a finite number",
        ", batch_size: 2": "batch_size: Input should be greater than or equal to 64",
        ", key_bits: 1024": "key_bits 1024 is below 2048",
    }
    for extra, reason in cases.items():
        text = hetero_lr_pipeline(extra).replace("batch_size: 128, learning_rate: 0.5, ", "")
        with pytest.raises(PipelineError, match=reason):
            Pipeline.from_yaml(text)


def test_the_policy_module_imports_no_numpy_or_fedcrypto() -> None:
    code = (
        "import sys, fedflow.policy; "
        "print(sorted(m for m in ('numpy', 'fedcrypto') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_a_host_policy_may_refuse_the_validation_input_that_reveals_its_scores() -> None:
    # Prepare: hetero_lr with validate_data (the host's partial scores of the validation rows
    # go to the guest each epoch), and a host policy that refuses that input
    with_validation = hetero_lr_pipeline().replace(
        "inputs: {data: psi_0.data}\n    params",
        "inputs: {data: psi_0.data, validate_data: psi_0.data}\n    params",
    )
    refusing = parse_policy("components: {hetero_lr: {refuse_inputs: [validate_data]}}")

    # Execute
    at_host = pipeline_problem(refusing, Pipeline.from_yaml(with_validation), HOST)
    at_guest = pipeline_problem(refusing, Pipeline.from_yaml(with_validation), GUEST)
    without = pipeline_problem(refusing, Pipeline.from_yaml(hetero_lr_pipeline()), HOST)
    by_default = pipeline_problem(SecurityPolicy(), Pipeline.from_yaml(with_validation), HOST)
    worker = task_problem(
        refusing,
        party_id=HOST,
        component="lr_0",
        component_type="hetero_lr",
        role="host",
        params={},
        inputs=("data", "validate_data"),
    )

    # Assert: refused at the host only, naming the rule and what the input reveals
    assert at_host == (
        "policy.components.hetero_lr.refuse_inputs: input validate_data (the host's partial "
        "scores of every validation row go to the guest in plaintext, once per epoch) is "
        "refused (party 10000's policy, lr_0)"
    )
    assert worker == at_host
    assert at_guest is None and without is None and by_default is None
    with pytest.raises(PolicyError, match=r"refuse_inputs: 'data' is not an input of hetero_lr"):
        parse_policy("components: {hetero_lr: {refuse_inputs: [data]}}")
