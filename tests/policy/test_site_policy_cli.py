"""`fedmq site policy init|show|check`: an operator writes, reads and tries the party's policy."""

from __future__ import annotations

from pathlib import Path

from fedflow.policy import SecurityPolicy, load_policy
from typer.testing import CliRunner

from fedmq.cli import app

from .conftest import REVEAL, SHORT_KEYS, hetero_lr_pipeline

runner = CliRunner()


def test_init_writes_the_secure_defaults_and_show_prints_them(tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"

    made = runner.invoke(app, ["site", "policy", "init", "--file", str(file)])
    again = runner.invoke(app, ["site", "policy", "init", "--file", str(file)])
    shown = runner.invoke(app, ["site", "policy", "show", "--file", str(file)])

    assert made.exit_code == 0, made.output
    assert load_policy(file) == SecurityPolicy()
    assert again.exit_code == 1 and "exists" in again.output
    assert shown.exit_code == 0, shown.output
    assert "min_key_bits: 2048" in shown.output
    assert "hetero_lr.reveal_host_scores" in shown.output and "refused" in shown.output


def test_check_tells_whether_this_partys_policy_accepts_a_pipeline(tmp_path: Path) -> None:
    short = tmp_path / "short.yaml"
    short.write_text(hetero_lr_pipeline(SHORT_KEYS), encoding="utf-8")
    reveal = tmp_path / "reveal.yaml"
    reveal.write_text(hetero_lr_pipeline(REVEAL), encoding="utf-8")
    allowing = tmp_path / "allowing.yaml"
    allowing.write_text(
        "components: {hetero_lr: {allow_revealing: [reveal_host_scores]}}\n", encoding="utf-8"
    )

    refused = runner.invoke(app, ["site", "policy", "check", str(short), "--party", "10000"])
    accepted = runner.invoke(
        app,
        ["site", "policy", "check", "--file", str(allowing), str(reveal), "--party", "10000"],
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_key_bits: 1024\n", encoding="utf-8")
    invalid = runner.invoke(app, ["site", "policy", "check", "--file", str(bad)])

    assert refused.exit_code == 1
    assert "policy.min_key_bits: key_bits 256 < 2048 (party 10000's policy, lr_0)" in (
        refused.output
    )
    assert accepted.exit_code == 0, accepted.output
    assert "accepted: party 10000's part of lr-policy" in accepted.output
    assert invalid.exit_code == 1
    assert "allow_insecure_short_keys" in invalid.output
