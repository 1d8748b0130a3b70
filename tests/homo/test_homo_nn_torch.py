"""homo_nn's PyTorch backend (torch_learner.py): a module named by import path trains as the
numpy network of the same shape does, runs end to end over secure aggregation in standalone
mode, and scores with homo_nn_predict; without torch the component refuses, saying what to
install (simulated: torch made unimportable)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.components.evaluation.math import binary_metrics
from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_nn import math as nmath
from fedflow.components.homo_nn.params import HomoNnParams
from fedflow.components.homo_nn.torch_learner import ModelError, TorchLearner, TorchMissing
from fedflow.pipeline import Pipeline
from fedflow.policy import SecurityPolicy
from fedflow.standalone import StandaloneError, run_pipeline
from pydantic import ValidationError

from tests.homo.conftest import EXAMPLE_DATA, load, parts, training
from tests.homo.nets import HIDDEN
from tests.homo.test_homo_nn import nn_pipeline

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(
    not HAVE_TORCH, reason="torch is not installed (the optional extra fedmq-flow[torch])"
)
MLP_PATH = "tests.homo.nets:mlp"
PARAMS: dict[str, Any] = {
    "rounds": 3,
    "batch_size": 32,
    "learning_rate": 0.1,
    "alpha": 0.01,
    "seed": 0,
    "model": MLP_PATH,
}


def to_torch_layout(w: hmath.Floats, k: int) -> hmath.Floats:
    """The numpy network's vector in nn.Sequential(Linear, Tanh, Linear)'s parameter order."""
    w1, w2 = nmath.split(w, k + 1, HIDDEN)
    return np.concatenate([w1[:k].T.ravel(), w1[k], w2[:HIDDEN], [w2[HIDDEN]]])


@needs_torch
@pytest.mark.parametrize("proximal_mu", [0.0, 0.5])
def test_a_torch_module_of_the_numpy_networks_shape_trains_to_the_same_weights(
    proximal_mu: float,
) -> None:
    # Prepare: the breast host's rows, the numpy network's start, the same weights in torch's
    # layout (both anchor FedProx at the start)
    table = load("breast_homo_host")
    x1, y = hmath.with_intercept(table.features), table.labels
    assert y is not None
    k = table.features.shape[1]
    start = nmath.initial(k, HIDDEN, 1)
    train = hmath.LocalTraining(2, 16, 0.1, 0.05, 7, proximal_mu)
    learner = TorchLearner(MLP_PATH)
    params = HomoNnParams(model=MLP_PATH)

    # Execute: two epochs of mini-batch SGD each way, L2 penalty on the weights, not biases
    numpy_after = nmath.local_sgd(start, x1, y, train, (7, 0, 2), HIDDEN)
    torch_after = learner.train(to_torch_layout(start, k), x1, y, train, (7, 0, 2), params)

    # Assert: the same weights (float64 both ways), the same loss, the same length
    np.testing.assert_allclose(torch_after, to_torch_layout(numpy_after, k), rtol=0, atol=1e-10)
    assert learner.length(k, params) == nmath.length(k, HIDDEN)
    assert learner.loss(to_torch_layout(start, k), x1, y) == pytest.approx(
        nmath.log_loss(start, x1, y, HIDDEN), rel=1e-12
    )


@needs_torch
def test_a_torch_model_trains_over_secure_aggregation_and_scores_with_predict(
    tmp_path: Path,
) -> None:
    # Prepare: breast over two parties, the module named by import path; the plaintext FedAvg
    # reference of the same module (its own local training, row-weighted mean)
    spec = nn_pipeline(["breast_homo_guest", "breast_homo_host"], PARAMS)
    spec["components"][3]["params"] = {"common": {"model": MLP_PATH}}
    tables = [load("breast_homo_guest"), load("breast_homo_host")]
    learner = TorchLearner(MLP_PATH)
    params = HomoNnParams(**PARAMS)
    k = tables[0].features.shape[1]
    w = learner.initial(k, params)
    for r in range(PARAMS["rounds"]):
        total = np.zeros(w.size + hmath.EXTRA)
        for cid, (x, y) in enumerate(parts(tables), start=1):
            x1 = hmath.with_intercept(x)
            local = learner.train(w, x1, y, training(PARAMS), (0, r, cid), params)
            total += hmath.contribution(w, local, learner.loss(w, x1, y), len(y))
        w, _ = hmath.apply_sum(w, total)
    test = load("breast_homo_test")
    assert test.labels is not None

    # Execute: the host's policy lists the guest's module (docs/policy.md, allow_code)
    folders = {"9999": EXAMPLE_DATA, "10000": EXAMPLE_DATA}
    listed = {"allow_code": [MLP_PATH]}
    host_policy = SecurityPolicy.model_validate(
        {"components": {"homo_nn": listed, "homo_nn_predict": listed}}
    )
    policies = {"9999": SecurityPolicy(), "10000": host_policy}
    result = run_pipeline(Pipeline.from_dict(spec), folders, tmp_path / "run", policies=policies)

    # Assert: both parties hold the reference's module weights (table rows torch.*), and
    # predict's scores are the module's on the test rows, as good as a network should be
    for party, role in (("9999", "guest"), ("10000", "host")):
        model = result.output(party, role, "homo_lr_0", "model")
        assert str(model.ids[0]).startswith("torch.0.weight")
        np.testing.assert_allclose(model.features[:, 0], w, rtol=0, atol=1e-9)
    scored = result.output("9999", "guest", "predict_0", "data")
    np.testing.assert_allclose(scored.features[:, 0], learner.scores(w, test.features), atol=1e-12)
    auc = binary_metrics(
        test.labels == 1.0, scored.features[:, 0], threshold=0.5, curve_points=2
    ).auc
    print(f"torch homo_nn, breast, 3 rounds: test AUC {auc:.4f}")
    assert auc > 0.95


@needs_torch
@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("tests.homo.nets:two_outputs", "one logit per row"),
        ("tests.homo.nets:not_a_module", "not a torch.nn.Module"),
        ("tests.homo.nets:absent", "cannot be imported"),
    ],
)
def test_a_model_path_that_gives_no_usable_module_is_refused(path: str, problem: str) -> None:
    table = load("breast_homo_host")
    x1, y = hmath.with_intercept(table.features), table.labels
    assert y is not None
    learner = TorchLearner(path)
    params = HomoNnParams(model=path)
    with pytest.raises(ModelError, match=problem):
        w = learner.initial(table.features.shape[1], params)
        learner.loss(w, x1, y)


def test_a_model_that_is_no_import_path_is_refused_by_the_params() -> None:
    with pytest.raises(ValidationError, match="pattern"):
        HomoNnParams(model="os.system('x')")


def test_without_torch_the_component_refuses_naming_the_party_and_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: torch made unimportable (None in sys.modules: `import torch` raises ImportError)
    monkeypatch.setitem(sys.modules, "torch", None)
    spec = nn_pipeline(["breast_homo_guest", "breast_homo_host"], {**PARAMS, "rounds": 1})
    folders = {"9999": EXAMPLE_DATA, "10000": EXAMPLE_DATA}

    # Execute / Assert: the learner and the job both refuse before training
    with pytest.raises(TorchMissing, match=r"install fedmq-flow\[torch\]"):
        TorchLearner(MLP_PATH).length(30, HomoNnParams(model=MLP_PATH))
    with pytest.raises(StandaloneError, match=r"torch is not installed at party (9999|10000)"):
        run_pipeline(Pipeline.from_dict(spec), folders, tmp_path / "run")


def test_without_torch_the_built_in_network_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: torch unimportable; no `model`: the numpy network
    monkeypatch.setitem(sys.modules, "torch", None)
    params = {k: v for k, v in PARAMS.items() if k != "model"} | {"rounds": 1, "hidden_units": 4}
    spec = nn_pipeline(["breast_homo_guest", "breast_homo_host"], params)
    folders = {"9999": EXAMPLE_DATA, "10000": EXAMPLE_DATA}

    # Execute
    result = run_pipeline(Pipeline.from_dict(spec), folders, tmp_path / "run")

    # Assert: the numpy reference's model
    expected = nmath.reference_fedavg(
        parts([load("breast_homo_guest"), load("breast_homo_host")]), training(params), 1, 4
    )
    model = result.output("9999", "guest", "homo_lr_0", "model").features[:, 0]
    np.testing.assert_allclose(model, expected, rtol=0, atol=1e-9)
