"""`job_outputs` answers with a model whose arrays hold NaN (a binning model pads the split
points of a column with fewer distinct values than bins): JSON has no NaN, so they come
back as null instead of the whole answer being refused."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import sqlalchemy as sa
from fedflow.artifacts import ArtifactStore, ModelArtifact, artifacts_table
from fedworker.job_outputs import job_outputs


def test_a_model_padded_with_nan_comes_back_with_nulls() -> None:
    engine = sa.create_engine("sqlite://")
    artifacts_table.create(engine)
    store = ArtifactStore(engine)
    points = np.array([[0.5, math.nan, math.nan], [1.0, 2.0, 3.0]])
    model = ModelArtifact(
        {"columns": ["binary", "age"]}, {"points": points, "iv": np.array([0.1, math.inf])}
    )
    store.put("job-1", "binning_0", "9999", "guest", "model", model, attempt=1)

    answer = job_outputs(
        SimpleNamespace(tables=SimpleNamespace(engine=engine)), {"job_id": "job-1"}
    )  # type: ignore[arg-type]

    assert isinstance(answer, dict)
    (entry,) = answer["data"]  # type: ignore[misc]
    assert entry["arrays"]["points"] == [[0.5, None, None], [1.0, 2.0, 3.0]]
    assert entry["arrays"]["iv"] == [0.1, None]
    assert entry["document"] == {"columns": ["binary", "age"]}
