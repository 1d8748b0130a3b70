"""Label values are checked against the model before anything leaves a party: a reader whose
data flows into hetero_lr refuses a guest table whose labels are not 0 or 1, before PSI."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from fedflow.descriptors import Pipeline
from fedflow.standalone import StandaloneError, run_pipeline

from .conftest import hetero_lr_pipeline

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
GUEST, HOST = "9999", "10000"


def guest_folder(tmp_path: Path, relabel: dict[str, str]) -> Path:
    """The breast guest table with some labels changed (id -> new label)."""
    folder = tmp_path / "guest"
    folder.mkdir()
    with (DATA / "breast_hetero_guest.csv").open(newline="") as src:
        rows = list(csv.reader(src))
    label_at = rows[0].index("y")
    for row in rows[1:]:
        if row[0] in relabel:
            row[label_at] = relabel[row[0]]
    with (folder / "breast_hetero_guest.csv").open("w", newline="") as dst:
        csv.writer(dst).writerows(rows)
    return folder


def host_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "host"
    folder.mkdir()
    shutil.copy(DATA / "breast_hetero_host.csv", folder)
    return folder


def test_a_reader_feeding_hetero_lr_refuses_labels_outside_0_and_1_before_psi(
    tmp_path: Path,
) -> None:
    # Prepare: three rows of the guest's table labelled 2
    with (DATA / "breast_hetero_guest.csv").open(newline="") as src:
        ids = [row[0] for row in list(csv.reader(src))[1:4]]
    guest = guest_folder(tmp_path, dict.fromkeys(ids, "2"))
    pipeline = Pipeline.from_yaml(hetero_lr_pipeline())

    # Execute
    with pytest.raises(StandaloneError) as info:
        run_pipeline(pipeline, {GUEST: guest, HOST: host_folder(tmp_path)}, tmp_path / "work")

    # Assert: the guest's reader failed, naming the table, the values and the rule
    message = str(info.value)
    assert message.startswith("reader_0 failed at party 9999 (guest)")
    assert "label column 'y' has values outside {0, 1}" in message
    assert "2 (3 rows)" in message


def test_the_reader_learns_the_labels_only_where_the_model_needs_them() -> None:
    lr = Pipeline.from_yaml(hetero_lr_pipeline())
    psi_only = Pipeline.from_yaml(
        (DATA.parent / "pipelines" / "psi_eval.yaml").read_text(encoding="utf-8")
    )

    assert lr.params_for("reader_0", "guest", GUEST)["label_values"] == [0.0, 1.0]
    assert "label_values" not in lr.params_for("reader_0", "host", HOST)
    assert psi_only.params_for("reader_0", "guest", GUEST) == {"table": "breast_hetero_guest"}
