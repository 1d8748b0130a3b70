"""`fedmq job model|data`: a finished job's outputs at this party through the REST API (served
over real HTTP; a real scheduler and a real worker with its own database), the models as JSON
and an output table as CSV fetched in pages; unknown jobs, components and outputs refused with
exit status 2 naming what the party has. The table is uploaded with text labels (class names),
which the export writes back as names."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmq import data_cli
from fedmq.cli import app
from tests.api.conftest import DATA, TOKEN, Party, serving
from tests.api.conftest import party_factory as party_factory

runner = CliRunner()
data_cli.console.width = data_cli.errors.width = 240

PIPELINE = """\
name: guest-scale
parties:
  guest: "9999"
  host: []
components:
  - name: reader_0
    type: reader
    params:
      guest: {table: breast_hetero_guest}
  - name: scale_0
    type: feature_scale
    inputs: {data: reader_0.data}
    params:
      common: {method: min_max}
"""


def fedmq(url: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args], env={"FEDMQ_API_URL": url, "FEDMQ_API_TOKEN": TOKEN})
    return result.exit_code, result.output


NAMES = {"0": "malignant", "1": "benign"}
"""The breast table's labels as a data team writes them (scikit-learn's target: 1 benign)."""


def with_text_labels(tmp_path: Path) -> Path:
    with (DATA / "breast_hetero_guest.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    at = rows[0].index("y")
    for row in rows[1:]:
        row[at] = NAMES[row[at]]
    path = tmp_path / "breast_hetero_guest.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture
def job_done(party_factory: Callable[..., Party], tmp_path: Path) -> Iterator[str]:
    party = party_factory(worker_database="worker.db")
    with serving(party.api.app) as url:
        pipeline = tmp_path / "p.yaml"
        pipeline.write_text(PIPELINE)
        uploaded = fedmq(
            url, "data", "upload", str(with_text_labels(tmp_path)), "--label-column", "y"
        )
        assert uploaded[0] == 0, uploaded[1]
        # text labels: classes in the sorted order of the names
        assert "(text: classes 0 = benign, 1 = malignant)" in " ".join(uploaded[1].split())
        done = fedmq(url, "job", "submit", str(pipeline), "--job-id", "out-1", "--wait")
        assert done[0] == 0, done[1]
        yield url


def test_model_prints_the_scaling_data_exports_the_table_and_unknown_names_exit_2(
    job_done: str, tmp_path: Path
) -> None:
    url = job_done
    csv_file = tmp_path / "scaled.csv"

    shown = fedmq(url, "job", "model", "out-1", "--component", "scale_0")
    exported = fedmq(
        url, "job", "data", "out-1", "--component", "scale_0", "--page-rows", "200",
        "--output", str(csv_file),
    )  # fmt: skip

    assert shown[0] == 0, shown[1]
    outputs = {o["output"]: o for o in json.loads(shown[1])["data"]}
    assert outputs["model"]["kind"] == "model" and outputs["model"]["role"] == "guest"
    # fitted on text labels: the model keeps their class names (fedflow.label_classes)
    assert outputs["model"]["document"]["trained_classes"] == ["benign", "malignant"]
    assert outputs["data"]["kind"] == "table" and outputs["data"]["rows"] == 569
    assert outputs["data"]["columns"] == [f"x{i}" for i in range(10)]
    assert exported[0] == 0, exported[1]
    with csv_file.open(newline="") as f:
        rows = list(csv.reader(f))
    with (DATA / "breast_hetero_guest.csv").open(newline="") as f:
        source = list(csv.reader(f))
    assert rows[0] == ["id", *(f"x{i}" for i in range(10)), "y"]
    assert len(rows) == 570  # three pages of 200 rows
    assert {r[0] for r in rows[1:]} == {r[0] for r in source[1:]}
    values = [float(v) for r in rows[1:] for v in r[1:-1]]
    assert min(values) == 0.0 and max(values) == 1.0  # min-max scaled
    # the labels went through the job as classes and come back as the names uploaded
    assert {r[0]: r[-1] for r in rows[1:]} == {r[0]: NAMES[r[1]] for r in source[1:]}

    # Unknown jobs, components and outputs (in the same test: the job runs once)
    no_job = fedmq(url, "job", "model", "no-such-job")
    no_component = fedmq(url, "job", "data", "out-1", "--component", "lr_9")
    no_output = fedmq(url, "job", "data", "out-1", "--component", "scale_0", "--name", "nope")
    a_model = fedmq(url, "job", "data", "out-1", "--component", "scale_0", "--name", "model")

    assert no_job[0] == 2 and "404" in no_job[1] and "no-such-job has no outputs" in no_job[1]
    assert no_component[0] == 2 and "(components with outputs: reader_0, scale_0)" in " ".join(
        no_component[1].split()
    )
    assert no_output[0] == 2 and "outputs: data, model" in no_output[1]
    assert a_model[0] == 2 and "400" in a_model[1] and "is a model" in a_model[1]
