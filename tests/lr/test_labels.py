"""What labels a model takes is declared on its descriptor (fedflow.descriptors.LabelRule), and
a table that does not fit is refused with the values found: hetero_lr 0 or 1, hetero_linr any
finite number."""

from __future__ import annotations

import math
from pathlib import Path

from fedflow.descriptors import CATALOGUE, LabelRule
from fedflow.standalone import LocalWorld
from fedflow.tables import Table

from tests.lr.conftest import GUEST, HOST, SHORT_KEY_PARAMS, lr_tasks, start, synthetic


def test_each_model_declares_the_labels_it_takes() -> None:
    assert CATALOGUE["hetero_lr"].labels["guest"] == LabelRule("binary", (0.0, 1.0))
    assert CATALOGUE["hetero_lr"].label_values["guest"] == (0.0, 1.0)
    assert CATALOGUE["hetero_linr"].labels["guest"] == LabelRule("numeric")


def test_a_rule_names_the_values_that_do_not_fit() -> None:
    binary, classes, numeric = (
        LabelRule("binary", (0.0, 1.0)),
        LabelRule("classes"),
        LabelRule("numeric"),
    )

    assert binary.problem([0.0, 1.0]) is None
    assert binary.problem([0.0, 1.0, 2.0, -1.0]) == "takes labels 0 or 1, found -1, 2"
    assert classes.problem([0.0, 1.0, 2.0, 3.0]) is None
    assert classes.problem([0.0, 1.5, -1.0]) == (
        "takes class labels 0, 1, 2, ... (integers >= 0), found -1, 1.5"
    )
    assert numeric.problem([-3.25, 0.0, 1e6]) is None
    assert numeric.problem([1.0, math.nan]) == "takes numeric labels (finite numbers), found nan"
    assert binary.problem(float(v) for v in range(20)).endswith(
        "found 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ..."
    )


def test_hetero_lr_refuses_labels_other_than_0_and_1_naming_them_before_any_key_exchange(
    tmp_path: Path,
) -> None:
    # Prepare: a guest table whose label has a third value
    guest, host = synthetic(200, 3, 3)
    assert guest.labels is not None
    labels = guest.labels.copy()
    labels[:5] = 2.0
    bad = Table(guest.ids, guest.features, guest.feature_names, labels, "y")
    with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
        tasks = lr_tasks(world, "labels", bad, host, SHORT_KEY_PARAMS)

        # Execute
        at_host = start(world, tasks["host"])
        at_guest = start(world, tasks["guest"])
        at_guest.join()
        at_host.cancel.set()
        at_host.join()

    # Assert
    (error,) = at_guest.error
    assert str(error) == "hetero_lr takes labels 0 or 1, found 2 in label column 'y'"
