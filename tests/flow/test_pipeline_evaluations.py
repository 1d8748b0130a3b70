"""A pipeline whose evaluation cannot fit the model it scores is refused when it is read, before
any party trains: binary metrics of a regression's or a multi-class model's predictions."""

from __future__ import annotations

from typing import Any

import pytest
from fedflow.pipeline import Pipeline, PipelineError

GUEST, HOST = "9999", "10000"


def scored_pipeline(model: str, model_params: dict[str, Any], eval_type: str | None) -> Pipeline:
    """reader, psi, `model`, its predict component, evaluation with `eval_type` (None: the
    default)."""
    evaluation = {} if eval_type is None else {"eval_type": eval_type}
    return Pipeline.from_dict(
        {
            "name": "scored",
            "parties": {"guest": GUEST, "host": [HOST]},
            "components": [
                {
                    "name": "reader_0",
                    "type": "reader",
                    "params": {"guest": {"table": "g"}, "host": {"table": "h"}},
                },
                {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
                {
                    "name": "m_0",
                    "type": model,
                    "inputs": {"data": "psi_0.data"},
                    "params": {"common": model_params},
                },
                {
                    "name": "p_0",
                    "type": f"{model}_predict",
                    "inputs": {"model": "m_0.model", "data": "psi_0.data"},
                },
                {
                    "name": "e_0",
                    "type": "evaluation",
                    "inputs": {"data": "p_0.data"},
                    "params": {"guest": evaluation},
                },
            ],
        }
    )


@pytest.mark.parametrize(
    ("model", "params", "eval_type", "takes", "wanted"),
    [
        ("hetero_linr", {}, None, "numeric labels (finite numbers)", "regression"),
        ("hetero_linr", {}, "multi", "numeric labels (finite numbers)", "regression"),
        ("hetero_poisson", {}, "binary", "counts (integers >= 0)", "regression"),
        (
            "hetero_lr",
            {"multi_class": True},
            "binary",
            "class labels 0, 1, 2, ... (integers >= 0)",
            "multi with the predicted class as score_column",
        ),
    ],
    ids=["linr_default", "linr_multi", "poisson_binary", "multiclass_lr_binary"],
)
def test_an_evaluation_that_does_not_fit_the_model_is_refused_naming_the_eval_type_to_set(
    model: str, params: dict[str, Any], eval_type: str | None, takes: str, wanted: str
) -> None:
    # Execute
    with pytest.raises(PipelineError) as refused:
        scored_pipeline(model, params, eval_type)

    # Assert
    assert str(refused.value) == (
        f"component e_0: eval_type {eval_type or 'binary'} does not fit the predictions it "
        f"evaluates: p_0 ({model}_predict) of m_0 ({model}, which takes {takes}); set "
        f"eval_type: {wanted}"
    )


@pytest.mark.parametrize(
    ("model", "params", "eval_type"),
    [
        ("hetero_linr", {}, "regression"),
        ("hetero_poisson", {}, "regression"),
        ("hetero_lr", {"multi_class": True}, "multi"),
        ("hetero_lr", {}, None),
        ("hetero_lr", {}, "multi"),
    ],
)
def test_an_evaluation_that_fits_the_model_is_accepted(
    model: str, params: dict[str, Any], eval_type: str | None
) -> None:
    # Execute
    pipeline = scored_pipeline(model, params, eval_type)

    # Assert
    assert [c.name for c in pipeline.components_in_order()][-1] == "e_0"
