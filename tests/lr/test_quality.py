"""hetero_lr on breast (the example pipeline, 512-bit test keys): train AUC within 0.002 of
scikit-learn's LogisticRegression on the joined table with the same L2 penalty (issue #17's
bound, met by the default protocol's separable sigmoid and by reveal_host_scores' exact one),
and above the guest-only model; the predict component's scores are the joined model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from fedflow.components.evaluation.math import binary_metrics
from fedflow.pipeline import Pipeline
from fedflow.standalone import run_pipeline
from sklearn.linear_model import LogisticRegression

from tests.lr.conftest import EXAMPLE_DATA, GUEST, HOST, breast

PIPELINE = Path(__file__).resolve().parents[2] / "examples/pipelines/hetero_lr_breast.yaml"


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return binary_metrics(labels == 1.0, scores, threshold=0.5, curve_points=2).auc


@pytest.mark.parametrize("reveal", [False, True], ids=["default", "reveal_host_scores"])
def test_breast_train_auc_is_within_0_002_of_centralized_and_above_guest_only(
    tmp_path: Path, reveal: bool
) -> None:
    # Prepare: the example pipeline, with short keys for the test
    spec = yaml.safe_load(PIPELINE.read_text())
    (lr,) = [c for c in spec["components"] if c["type"] == "hetero_lr"]
    lr["params"]["common"].update(key_bits=512, insecure_short_keys=True, reveal_host_scores=reveal)
    alpha = lr["params"]["common"]["alpha"]
    guest, host = breast()
    assert guest.labels is not None
    y = guest.labels
    joined = np.hstack([guest.features, host.features])
    c = 1.0 / (alpha * len(y))  # sklearn: C * sum(loss) + ||w||^2 / 2 == ours times N * C
    central = LogisticRegression(C=c, max_iter=10_000).fit(joined, y)
    guest_only = LogisticRegression(C=c, max_iter=10_000).fit(guest.features, y)
    central_auc = _auc(y, central.decision_function(joined))
    guest_auc = _auc(y, guest_only.decision_function(guest.features))

    # Execute
    result = run_pipeline(
        Pipeline.from_dict(spec), {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp_path
    )

    # Assert
    federated_auc = result.metric("eval_0", "auc")
    print(f"federated {federated_auc:.5f} central {central_auc:.5f} guest-only {guest_auc:.5f}")
    gap = abs(federated_auc - central_auc)
    assert gap <= 0.002
    assert federated_auc > guest_auc
    # Each party's model part names only its own features
    guest_model = result.output(GUEST, "guest", "hetero_lr_0", "model")
    host_model = result.output(HOST, "host", "hetero_lr_0", "model")
    assert guest_model.ids.tolist() == [*guest.feature_names, "intercept"]
    assert host_model.ids.tolist() == host.feature_names
    # The guest's scores are sigmoid of the joined model's linear score, row by row
    scored = result.output(GUEST, "guest", "predict_0", "data")
    ids = scored.ids.tolist()
    g, h = guest.align_to(ids), host.align_to(ids)
    z = np.hstack([g.features, np.ones((len(ids), 1))]) @ guest_model.features[:, 0]
    z += h.features @ host_model.features[:, 0]
    np.testing.assert_allclose(scored.column("score"), 1 / (1 + np.exp(-z)), rtol=0, atol=1e-12)
    assert result.metric("hetero_lr_0", "epochs", GUEST) >= 1
