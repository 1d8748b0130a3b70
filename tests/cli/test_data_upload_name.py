"""fedmq data upload names the table after the file unless --name says otherwise: a file whose
name is no table name is refused before anything is sent, saying to give --name (the API's
answer was a pattern error about a "name" the user never typed)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fedmq.data_cli import data_app


def test_a_file_name_that_is_no_table_name_asks_for_name_before_connecting(tmp_path: Path) -> None:
    # Prepare: nothing listens on port 1, so a request would fail with "cannot reach".
    path = tmp_path / "breast guest (copy).csv"
    path.write_text("id,y,x\n1,0,2\n")
    args = ["upload", str(path), "--url", "http://127.0.0.1:1", "--token", "t"]

    # Execute
    refused = CliRunner().invoke(data_app, args)
    named = CliRunner().invoke(data_app, [*args, "--name", "breast_guest"])

    # Assert
    assert refused.exit_code == 2
    text = " ".join(refused.output.split())
    assert "'breast guest (copy)' (the file's name) is no table name" in text
    assert "give one with --name" in text and "cannot reach" not in text
    assert named.exit_code != 0 and "cannot reach" in " ".join(named.output.split())
