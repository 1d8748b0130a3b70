"""A component that remaps labels (label_transform, `remaps_labels`) stops the pipeline's
label check: raw labels 1 ("good") and 2 ("bad") -> label_transform -> hetero_lr trains; the
same table straight into hetero_lr is refused by its reader before PSI, naming the values."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fedbus.sql_inbox import make_engine
from fedflow.artifacts import Artifact, ArtifactStore, ModelArtifact
from fedflow.descriptors import CATALOGUE
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, StandaloneResult, run_pipeline
from fedflow.tables import Table

from tests.flow.conftest import EXAMPLE_DATA, GUEST, HOST

ROWS = 120

PIPELINE = """\
name: remap
parties: {{guest: "{guest}", host: ["{host}"]}}
components:
  - name: reader_0
    type: reader
    params:
      guest: {{table: g}}
      host: {{table: h}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
{middle}  - name: lr_0
    type: hetero_lr
    inputs: {{data: {lr_input}}}
    params:
      common: {{epochs: 2, batch_size: {rows}, learning_rate: 0.5, seed: 1,
               key_bits: 256, insecure_short_keys: true}}
"""

TRANSFORM = """\
  - name: labels_0
    type: label_transform
    inputs: {data: psi_0.data}
"""


def pipeline(with_transform: bool) -> Pipeline:
    return Pipeline.from_yaml(
        PIPELINE.format(
            guest=GUEST,
            host=HOST,
            rows=ROWS,
            middle=TRANSFORM if with_transform else "",
            lr_input="labels_0.data" if with_transform else "psi_0.data",
        )
    )


def tables(tmp_path: Path) -> dict[str, dict[str, Path]]:
    """The first ROWS rows of breast, the guest's labels 0/1 written as 1 ("good") / 2."""
    out: dict[str, dict[str, Path]] = {}
    for party, name, source in (
        (GUEST, "g", "breast_hetero_guest.csv"),
        (HOST, "h", "breast_hetero_host.csv"),
    ):
        with (EXAMPLE_DATA / source).open(newline="") as f:
            rows = list(csv.reader(f))[: ROWS + 1]
        if "y" in rows[0]:
            at = rows[0].index("y")
            for row in rows[1:]:
                row[at] = str(int(float(row[at])) + 1)
        path = tmp_path / f"{name}.csv"
        with path.open("w", newline="") as f:
            csv.writer(f).writerows(rows)
        out[party] = {name: path}
    return out


def test_the_reader_learns_no_binary_rule_through_a_component_that_remaps_labels() -> None:
    assert CATALOGUE["label_transform"].remaps_labels == ("guest",)
    assert "label_values" not in pipeline(True).params_for("reader_0", "guest", GUEST)
    assert pipeline(False).params_for("reader_0", "guest", GUEST)["label_values"] == [0.0, 1.0]


def test_labels_1_and_2_are_refused_straight_into_hetero_lr(tmp_path: Path) -> None:
    with pytest.raises(StandaloneError) as info:
        run_pipeline(pipeline(False), tables(tmp_path), tmp_path / "w")

    message = str(info.value)
    assert message.startswith("reader_0 failed at party 9999 (guest)")
    assert "has values outside {0, 1}" in message and "2 (" in message


@pytest.mark.timeout(180)
def test_labels_1_and_2_train_hetero_lr_after_label_transform(tmp_path: Path) -> None:
    result = run_pipeline(pipeline(True), tables(tmp_path), tmp_path / "w")

    assert {r.state for r in result.tasks} == {"success"}
    mapped = result.output(GUEST, "guest", "labels_0", "data")
    assert mapped.labels is not None and set(mapped.labels.tolist()) == {0.0, 1.0}
    model = model_of(result, "labels_0")
    assert isinstance(model, ModelArtifact)
    assert model.document["values"] == [1.0, 2.0] and model.document["classes"] == [0, 1]
    assert result.metric("labels_0", "classes") == 2.0
    weights = model_of(result, "lr_0")  # the guest's weights, intercept last
    assert isinstance(weights, Table) and weights.ids.tolist()[-1] == "intercept"


def model_of(result: StandaloneResult, component: str) -> Artifact:
    engine = make_engine(result._engines[GUEST])
    try:
        found = ArtifactStore(engine).get_artifact(
            result.job_id, GUEST, "guest", f"{component}.model"
        )
    finally:
        engine.dispose()
    return found
