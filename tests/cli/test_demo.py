"""`fedmq demo` end to end, as a user runs it, and the CSV reader's error reports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedmq.tables import TableError, read_table


def test_demo_trains_hetero_lr_and_reports_aucs_time_and_where_results_went(
    tmp_path: Path,
) -> None:
    # Execute: the real command line, in its own process (breast, short keys and 3 of the
    # pipeline's 30 epochs keep it quick: the AUC checks below hold from the first epochs on)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedmq.cli",
            "demo",
            "--dataset",
            "breast",
            "--key-bits",
            "512",
            "--epochs",
            "3",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )

    # Assert: the three AUCs, the federated one close to centralized and above guest-only
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    aucs = {
        name: float(value)
        for name, value in re.findall(
            r"(federated|guest only|centralized) \(.*?\) . (0\.\d{4})", out
        )
    }
    assert set(aucs) == {"federated", "guest only", "centralized"}, out
    assert aucs["federated"] > aucs["guest only"]
    assert abs(aucs["federated"] - aucs["centralized"]) < 0.005
    assert re.search(r"\b3 epochs, 512-bit Paillier, [0-9.]+ s in all", out)
    assert "match the plaintext computation" in out
    for tag in ("guest_blinded", "residual", "host_scores", "host_gradient", "epoch_end"):
        assert tag in out
    # Progress was shown per component, and the results are where the demo says
    assert "hetero_lr_0" in out and "eval_0" in out
    assert (tmp_path / "party-9999.db").exists() and (tmp_path / "party-10000.db").exists()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert any(m["name"] == "auc" and m["component"] == "eval_0" for m in metrics)
    guest_model = json.loads((tmp_path / "model-9999.json").read_text())
    host_model = json.loads((tmp_path / "model-10000.json").read_text())
    assert "intercept" in guest_model and "y" not in guest_model
    assert len(host_model) == 20 and "intercept" not in host_model


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
