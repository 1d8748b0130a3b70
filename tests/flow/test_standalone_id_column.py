"""`fedmq standalone run --id-column NAME`: tables whose ids are in another column than `id`
(as `fedmq data upload --id-column`); without the option such a table is refused, naming it."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from fedmq.cli import app

ROOT = Path(__file__).resolve().parents[2]
ROWS = 150


def renamed(tmp_path: Path) -> Path:
    """The psi_eval tables' first ROWS rows, their id column called cust_id."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        with (ROOT / "examples/data" / name).open(newline="") as f:
            rows = list(csv.reader(f))[: ROWS + 1]
        assert rows[0][0] == "id"
        rows[0][0] = "cust_id"
        with (folder / name).open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    return folder


def run(tmp_path: Path, *extra: str) -> tuple[int, str]:
    data = renamed(tmp_path)
    done = CliRunner().invoke(
        app,
        [
            "standalone",
            "run",
            str(ROOT / "examples/pipelines/psi_eval.yaml"),
            "--data",
            str(data),
            "--workdir",
            str(tmp_path / "w"),
            *extra,
        ],
    )
    return done.exit_code, " ".join(done.output.split())


def test_the_id_column_option_names_the_tables_id_column(tmp_path: Path) -> None:
    code, out = run(tmp_path, "--id-column", "cust_id")

    assert code == 0, out
    assert f"intersection_size │ {ROWS}" in out
    assert "5 tasks succeeded" in out


def test_without_it_a_table_without_an_id_column_is_a_data_problem(tmp_path: Path) -> None:
    code, out = run(tmp_path)

    assert code == 2, out
    assert "data problem" in out and "'id'" in out
