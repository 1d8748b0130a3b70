"""A pipeline file that is not UTF-8 text (a binary file passed by mistake) is refused by
`fedmq job submit` and `fedmq standalone run` with exit 2 and the file's name, before anything
connects or runs (both printed a UnicodeDecodeError traceback)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fedmq.job_cli import job_app
from fedmq.standalone_cli import standalone_app


def test_a_binary_pipeline_file_is_refused_by_name(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "pipeline.yaml"
    path.write_bytes(b"\xf9\x00\x13 not yaml")

    # Execute
    submitted = CliRunner().invoke(
        job_app, ["submit", str(path), "--url", "http://127.0.0.1:1", "--token", "t"]
    )
    ran = CliRunner().invoke(standalone_app, ["run", str(path), "--workdir", str(tmp_path)])

    # Assert
    for result, verb in ((submitted, "cannot read"), (ran, "cannot use")):
        text = " ".join(result.output.split())
        assert result.exit_code == 2, text
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert f"{verb} {path}: 'utf-8' codec can't decode byte 0xf9" in text
