"""`fedmq standalone run` end to end, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def fedmq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedmq.cli", "standalone", "run", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_the_psi_eval_example_runs_and_reports_metrics_and_crossings(tmp_path: Path) -> None:
    # Execute
    done = fedmq(
        "examples/pipelines/psi_eval.yaml",
        "--data",
        "9999=examples/data",
        "--data",
        "10000=examples/data",
        "--workdir",
        str(tmp_path),
    )

    # Assert
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "5 tasks succeeded" in out
    assert "intersection_size │ 569" in out
    assert "auc │ 0.970443" in out
    for tag in ("guest_blinded", "host_blinded", "guest_reblinded", "host_reblinded"):
        assert tag in out
    assert (tmp_path / "party-9999.db").exists() and (tmp_path / "party-10000.db").exists()


def test_a_malformed_pipeline_is_refused_with_exit_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nparties: {guest: '1'}\ncomponents:\n  - {name: a, type: nope}\n")
    done = fedmq(str(bad), "--data", str(tmp_path))
    assert done.returncode == 2
    assert "unknown component type 'nope'" in " ".join(done.stdout.split())


def test_a_failing_task_exits_1_naming_the_party(tmp_path: Path) -> None:
    text = (ROOT / "examples/pipelines/psi_eval.yaml").read_text()
    bad = tmp_path / "p.yaml"
    bad.write_text(text.replace("score_column: x0", "score_column: zz"))
    done = fedmq(str(bad), "--data", "examples/data", "--workdir", str(tmp_path / "w"))
    assert done.returncode == 1
    assert "eval_0 failed at party 9999 (guest)" in " ".join(done.stdout.split())


def test_the_runtime_options_reach_every_party_and_a_bad_one_is_refused(
    tmp_path: Path, monkeypatch: Any
) -> None:
    # Prepare: the CLI in this process, with run_pipeline recording what it is given
    from fedflow import standalone
    from fedflow.context import RuntimeOptions
    from typer.testing import CliRunner

    from fedmq.standalone_cli import standalone_app

    given: list[RuntimeOptions | None] = []
    original = standalone.run_pipeline

    def recording(*args: Any, **kwargs: Any) -> Any:
        given.append(kwargs.get("options"))
        return original(*args, **kwargs)

    monkeypatch.setattr(standalone, "run_pipeline", recording)
    example = str(ROOT / "examples" / "pipelines" / "psi_eval.yaml")
    data = str(ROOT / "examples" / "data")

    # Execute
    options = ["--threads", "3", "--prefetch-threads", "0", "--prefetch-nice", "10"]
    ok = CliRunner().invoke(
        standalone_app, ["run", example, "--data", data, "--workdir", str(tmp_path), *options]
    )
    bad = CliRunner().invoke(standalone_app, ["run", example, "--prefetch-nice", "20"])

    # Assert
    assert ok.exit_code == 0, ok.output
    assert given == [RuntimeOptions(threads=3, prefetch_threads=0, prefetch_nice=10)]
    assert bad.exit_code == 2 and "prefetch-nice" in bad.output
