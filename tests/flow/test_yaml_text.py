"""Hand-written YAML read strictly (fedflow.yaml_text): a key given twice in one mapping is an
error at its line, not a silently dropped first value; a security policy is read that way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fedflow.policy import PolicyError, load_policy, parse_policy
from fedflow.yaml_text import load_yaml


def test_a_repeated_key_is_refused_at_its_line_in_block_and_flow_mappings() -> None:
    # Prepare
    block = "name: a\nparties:\n  guest: '9999'\n  guest: '10000'\n"
    flow = "bounds: {epochs: {max: 5}, epochs: {max: 500}}\n"

    # Execute / Assert
    with pytest.raises(yaml.YAMLError) as caught:
        load_yaml(block)
    assert caught.value.problem == "key 'guest' given twice (first on line 3)"  # type: ignore[attr-defined]
    assert caught.value.problem_mark.line + 1 == 4  # type: ignore[attr-defined]
    with pytest.raises(yaml.YAMLError, match="key 'epochs' given twice"):
        load_yaml(flow)


def test_documents_without_repeats_read_as_safe_load_reads_them() -> None:
    # Prepare: nested mappings, the same key in different mappings, a merge key overridden.
    text = (
        "a: {x: 1, y: [1, 2]}\nb: {x: 2}\n"
        "base: &base {epochs: 5, seed: 1}\nrun:\n  <<: *base\n  epochs: 9\n"
    )

    # Execute
    got = load_yaml(text)

    # Assert
    assert got == yaml.safe_load(text)
    assert got["run"] == {"epochs": 9, "seed": 1}
    with pytest.raises(yaml.YAMLError, match="could not determine a constructor"):
        load_yaml("a: !!python/name:os.system x\n")


def test_a_policy_naming_a_component_twice_is_refused_not_half_applied() -> None:
    # Prepare: the strict block first, a loose one after it (safe_load kept only the loose one).
    text = (
        "min_key_bits: 3072\n"
        "components:\n"
        "  hetero_lr:\n"
        "    bounds: {epochs: {max: 10}}\n"
        "  hetero_lr:\n"
        "    initiator_may_set: [epochs]\n"
    )

    # Execute / Assert
    with pytest.raises(PolicyError, match=r"key 'hetero_lr' given twice \(first on line 3\)"):
        parse_policy(text, "policy.yaml")
    assert parse_policy(
        text.replace("  hetero_lr:\n    initiator", "  hetero_linr:\n    initiator"), "ok"
    )


def test_a_policy_file_that_is_not_text_is_a_policy_error(tmp_path: Path) -> None:
    # Prepare: a binary file named as the policy (a key, an archive: the wrong path).
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"\xf9\x00\x13binary")

    # Execute / Assert
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value) == f"policy file {path}: not UTF-8 text (is it the policy file?)"
