"""The policy in standalone mode: `fedmq standalone run` checks every party's part of the
pipeline against that party's own policy (--policy PARTY=FILE, or the secure defaults)
before anything runs, and exits 2 naming each rule broken."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedflow.pipeline import Pipeline
from fedflow.standalone import PolicyRefused, run_pipeline
from typer.testing import CliRunner

from fedmq.standalone_cli import standalone_app

from .conftest import PERMISSIVE, SHORT_KEYS, hetero_lr_pipeline

ROOT = Path(__file__).resolve().parents[2]
DATA = str(ROOT / "examples" / "data")


def standalone(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(standalone_app, ["run", *args], env={"COLUMNS": "400"})
    return done.exit_code, " ".join(done.output.split())


def test_a_host_with_the_default_policy_refuses_short_keys_before_anything_runs(
    tmp_path: Path, permissive_policy_file: Path
) -> None:
    # Prepare: the guest's operator allows short keys; the host's policy is the default
    pipeline = tmp_path / "lr.yaml"
    pipeline.write_text(hetero_lr_pipeline(SHORT_KEYS))
    workdir = tmp_path / "work"

    # Execute
    code, out = standalone(
        str(pipeline), "--data", DATA, "--workdir", str(workdir),
        "--policy", f"9999={permissive_policy_file}",
    )  # fmt: skip

    # Assert: refused by the host only, each rule named; no party was set up
    assert code == 2
    assert "refused by policy: party 10000 refused the job: policy.min_key_bits: " in out
    assert "policy.allow_insecure_short_keys" in out
    assert "party 9999 refused" not in out
    assert not workdir.exists()


def test_a_policy_for_a_party_not_in_the_pipeline_or_a_bad_file_is_refused(
    tmp_path: Path,
) -> None:
    pipeline = tmp_path / "lr.yaml"
    pipeline.write_text(hetero_lr_pipeline())
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_key_bits: 512\n")

    stranger = standalone(str(pipeline), "--data", DATA, "--policy", f"1={bad}")
    invalid = standalone(str(pipeline), "--data", DATA, "--policy", f"10000={bad}")

    assert stranger[0] == 2
    assert "--policy 1=" in stranger[1] and "not a party of the pipeline" in stranger[1]
    assert invalid[0] == 2 and "min_key_bits 512 is below 2048" in invalid[1]


def test_run_pipeline_given_policies_refuses_before_any_party_starts(tmp_path: Path) -> None:
    pipeline = Pipeline.from_yaml(hetero_lr_pipeline(SHORT_KEYS))

    with pytest.raises(PolicyRefused, match=r"^party 10000 refused the job: policy\.min_key_bits"):
        run_pipeline(pipeline, {}, tmp_path / "work", policies={"9999": PERMISSIVE})

    assert not (tmp_path / "work").exists()
