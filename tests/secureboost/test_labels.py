"""hetero_secureboost declares the labels each objective takes, so a pipeline's reader refuses
labels that do not fit before psi runs (3 classes with binary:logistic failed after psi with
only "needs labels 0 or 1")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.descriptors import CATALOGUE, LabelRule
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, run_pipeline
from fedflow.tables import Table

from tests.flow.test_feature_scale import write_csv
from tests.flow.test_linr import diabetes

GUEST, HOST = "9999", "10000"


def boost_pipeline(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "boost-labels",
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            {
                "name": "reader_0",
                "type": "reader",
                "params": {"guest": {"table": "d_guest"}, "host": {"table": "d_host"}},
            },
            {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
            {
                "name": "boost_0",
                "type": "hetero_secureboost",
                "inputs": {"data": "psi_0.data"},
                "params": {"common": {"key_bits": 512, "insecure_short_keys": True, **params}},
            },
        ],
    }


def test_each_objective_declares_the_labels_it_takes() -> None:
    boost = CATALOGUE["hetero_secureboost"]
    assert boost.labels_for({})["guest"] == LabelRule("binary", (0.0, 1.0))
    assert boost.labels_for({"objective": "multi:softmax"})["guest"] == LabelRule("classes")
    assert boost.labels_for({"objective": "reg:squarederror"})["guest"] == LabelRule("numeric")


def test_three_classes_with_binary_logistic_are_refused_by_the_reader_before_psi(
    tmp_path: Path,
) -> None:
    # Prepare: diabetes with a 3-class label (0, 1, 2 by target tercile)
    guest, host = diabetes()
    assert guest.labels is not None
    classes = np.digitize(guest.labels, np.quantile(guest.labels, [1 / 3, 2 / 3])).astype(float)
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "d_guest.csv", Table(guest.ids, guest.features, guest.feature_names, classes))
    write_csv(data / "d_host.csv", host)

    # Execute
    with pytest.raises(StandaloneError) as info:
        run_pipeline(Pipeline.from_dict(boost_pipeline({})), {GUEST: data, HOST: data}, tmp_path)

    # Assert: the guest's reader names the value outside 0/1, its rows and what takes 3
    # classes; psi never ran
    message = str(info.value)
    rows = int((classes == 2).sum())
    assert message.startswith(
        "reader_0 failed at party 9999 (guest): ValueError: table d_guest: label column 'y' "
        f"has values outside {{0, 1}}, which the model its data flows into needs: 2 ({rows} "
        "rows); it holds 3 classes"
    )
    assert "hetero_secureboost with objective: multi:softmax" in message
    assert "psi_0" not in message


def test_multi_softmax_tells_the_reader_no_binary_values() -> None:
    binary = Pipeline.from_dict(boost_pipeline({}))
    multi = Pipeline.from_dict(boost_pipeline({"objective": "multi:softmax", "num_class": 3}))

    assert binary.component("reader_0").params_for("guest", GUEST)["label_values"] == [0.0, 1.0]
    assert multi.component("reader_0").params_for("guest", GUEST).get("label_values") is None
