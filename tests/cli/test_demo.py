"""`fedmq demo` end to end, as a user runs it, and the CSV reader's error reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedmq.tables import TableError, read_table


def test_demo_runs_the_two_party_exchange_and_reports_what_crossed(tmp_path: Path) -> None:
    # Execute: the real command line, in its own process
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedmq.cli",
            "demo",
            "--key-bits",
            "1024",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )

    # Assert
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert "matches the plaintext computation" in out
    for tag in (
        "public_key",
        "encrypted_residuals",
        "encrypted_masked_gradient",
        "masked_gradient",
    ):
        assert tag in out
    assert (tmp_path / "party-9999.db").exists() and (tmp_path / "party-10000.db").exists()


def test_demo_with_a_missing_data_folder_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedmq.cli", "demo", "--data-dir", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "cannot read the example data" in done.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,y,x0\n1,0,0.5\n2,1\n", r"t\.csv:3: 2 fields, the header has 3"),
        ("id,y,x0\n1,0,0.5\n2,1,abc\n", r"t\.csv:3: not a number"),
        ("id,y,x0\n1,0,0.5\n1,1,0.7\n", r"t\.csv:3: id '1' already on line 2"),
        ("id,y,x0\n1,0,nan\n", r"t\.csv:2: NaN or infinite"),
        ("y,x0\n0,1\n", r"t\.csv:1: no 'id' column"),
        ("", r"t\.csv: empty file"),
        ("id,y,x0\n", r"t\.csv: no data rows"),
    ],
)
def test_a_bad_csv_row_is_reported_by_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(TableError, match=message):
        read_table(path)


def test_tables_align_by_id_and_refuse_missing_ids(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,x0\na,1\nb,2\nc,3\n")
    table = read_table(path, label_column=None)
    import numpy as np

    aligned = table.align_to(np.array(["c", "a"]))
    assert aligned.features[:, 0].tolist() == [3.0, 1.0]
    with pytest.raises(TableError, match="1 ids are not in this table"):
        table.align_to(np.array(["a", "z"]))
