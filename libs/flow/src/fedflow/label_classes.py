"""One numbering of a text label column's classes across the tables of a job.

An uploaded table numbers its class names 0 .. K-1 in their sorted order (fedflow.tables), so
two tables number them alike only when they hold the same names: a validation or test table
that lacks a class, or has one more, numbers the others differently, and a model trained on
one would be validated or scored against shifted labels without anyone noticing. The runner
therefore (1) gives a component's `model` outputs the class names of the labels it was trained
on (`with_trained_classes`: Table.trained_classes, or the model document's "trained_classes")
and (2) before a component runs, renumbers the labels of its inputs by name to one reference
(`align_inputs`): the model input's classes where there is one, else the first labelled
input's (hetero_lr's `data`, which `validate_data` follows). A class the reference lacks is
refused, naming it: a model cannot predict or validate a class it never saw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from fedflow.artifacts import ModelArtifact
from fedflow.tables import Table, TableError, are_class_codes

MODEL_OUTPUT: Final = "model"
"""The output name of a trained model (or a fitted transform): what carries the classes."""
DOCUMENT_KEY: Final = "trained_classes"


def trained_classes(artifact: object) -> list[str] | None:
    """The class names a model was trained on; None for other artifacts or numeric labels."""
    if isinstance(artifact, Table):
        return artifact.trained_classes
    if isinstance(artifact, ModelArtifact):
        found = artifact.document.get(DOCUMENT_KEY)
        return [str(name) for name in found] if isinstance(found, list) else None
    return None


def _reference(inputs: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """(what it is, class names) that every input's labels are numbered by; None: no input
    names classes."""
    for slot, value in inputs.items():
        classes = trained_classes(value)
        if classes is not None:
            return f"the model ({slot})", classes
    for slot, value in inputs.items():
        if isinstance(value, Table) and value.label_classes is not None:
            return f"input {slot!r}", value.label_classes
    return None


def align_inputs(inputs: Mapping[str, Any], component: str) -> dict[str, Any]:
    """`inputs` with every text label column numbered by the reference's class names
    (module docstring); a label class the reference lacks raises TableError naming it."""
    reference = _reference(inputs)
    if reference is None:
        return dict(inputs)
    where, names = reference
    code = {name: index for index, name in enumerate(names)}
    aligned: dict[str, Any] = {}
    for slot, value in inputs.items():
        if (
            isinstance(value, Table)
            and value.labels is not None
            and value.label_classes is not None
            and value.label_classes != names
            and are_class_codes(value.labels, len(value.label_classes))
        ):
            unseen = [name for name in value.label_classes if name not in code]
            if unseen:
                shown = ", ".join(repr(name) for name in unseen[:10])
                raise TableError(
                    f"{component}: input {slot!r} has label class(es) {shown} in column "
                    f"{value.label_name!r} that {where} never saw (its classes: "
                    f"{', '.join(names)}): a model predicts and is validated only on the "
                    "classes it was trained on; drop those rows or train on data that has them"
                )
            renumber = np.array([code[name] for name in value.label_classes], dtype=np.float64)
            value = dataclasses.replace(
                value,
                labels=renumber[value.labels.astype(np.int64)],
                label_classes=list(names),
            )
        aligned[slot] = value
    return aligned


def with_trained_classes(outputs: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """`outputs` with the `model` output marked with the class names its inputs' labels are
    numbered by (after align_inputs: the training data's); unchanged without text labels."""
    reference = _reference(inputs)
    model = outputs.get(MODEL_OUTPUT)
    if reference is None or model is None or trained_classes(model) is not None:
        return dict(outputs)
    names = list(reference[1])
    if isinstance(model, Table) and model.labels is None:
        model = dataclasses.replace(model, trained_classes=names)
    elif isinstance(model, ModelArtifact):
        model = dataclasses.replace(model, document={**model.document, DOCUMENT_KEY: names})
    return {**outputs, MODEL_OUTPUT: model}
