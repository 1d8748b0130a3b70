"""hetero_secureboost's layered mode (FATE's fast SecureBoost): the top host_depth levels split
on the hosts' features only, the levels below on the guest's only; the hosts build no
histograms below their levels and never see those levels' positions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.params import HeteroSecureBoostParams
from fedflow.standalone import run_pipeline

from tests.secureboost.data import EXAMPLE_DATA, GUEST, HOST
from tests.secureboost.test_federated import SHORT, _reference, model_of, pipeline


def test_layered_trees_split_on_the_hosts_above_and_the_guest_below_as_the_reference(
    tmp_path: Path,
) -> None:
    # Prepare: depth 3, the first 2 levels on the host's features
    settings = {
        "num_trees": 2,
        "max_depth": 3,
        "max_bin": 16,
        "tree_mode": "layered",
        "host_depth": 2,
        **SHORT,
    }
    spec = pipeline(
        [HOST], {"guest": "breast_hetero_guest", "host": "breast_hetero_host"}, settings
    )

    # Execute
    result = run_pipeline(spec, {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp_path)

    # Assert: the reference's trees and scores, bit for bit
    params = HeteroSecureBoostParams.model_validate(settings)
    reference, blocks = _reference(result, [(GUEST, "guest"), (HOST, "host")], params)
    scores = result.output(GUEST, "guest", "predict_0", "data")
    np.testing.assert_array_equal(scores.features[:, 0], reference.predict(blocks))
    guest_model = model_of(result, GUEST, "guest", "boost_0")
    for name in ("kind", "party", "weight", "missing_left"):
        expected = np.stack([getattr(t, name) for t in reference.trees])
        np.testing.assert_array_equal(guest_model.arrays[f"trees/{name}"], expected)
    # heap order: nodes 0..2 are levels 0 and 1 (the host's), 3..6 level 2 (the guest's)
    kind, party = guest_model.arrays["trees/kind"], guest_model.arrays["trees/party"]
    split = kind == sbmath.SPLIT
    assert np.all(party[:, :3][split[:, :3]] == 1) and np.any(split[:, :3])
    assert np.all(party[:, 3:7][split[:, 3:7]] == 0) and np.any(split[:, 3:7])
    # the host was sent positions and built histograms for its two levels of each tree only
    sent = Counter(
        (c.tag, c.iteration % 3) for c in result.crossings if c.tag in ("positions", "histograms")
    )
    assert sent == {
        ("positions", 0): 2,
        ("positions", 1): 2,
        ("histograms", 0): 2,
        ("histograms", 1): 2,
    }


def test_a_layered_tree_deeper_on_the_hosts_than_the_tree_is_refused() -> None:
    with pytest.raises(ValueError, match="host_depth 4 is above max_depth 3"):
        HeteroSecureBoostParams.model_validate(
            {"tree_mode": "layered", "host_depth": 4, "max_depth": 3, **SHORT}
        )


def test_mix_trees_alternate_guest_only_and_host_only_rounds_as_the_reference(
    tmp_path: Path,
) -> None:
    # Prepare: 3 trees in mix mode (FATE's fast SecureBoost): rounds 0 and 2 the guest's,
    # round 1 the host's
    settings = {"num_trees": 3, "max_depth": 2, "max_bin": 16, "tree_mode": "mix", **SHORT}
    spec = pipeline(
        [HOST], {"guest": "breast_hetero_guest", "host": "breast_hetero_host"}, settings
    )

    # Execute
    result = run_pipeline(spec, {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp_path)

    # Assert: the reference's trees and scores, bit for bit; each tree splits on one party
    params = HeteroSecureBoostParams.model_validate(settings)
    reference, blocks = _reference(result, [(GUEST, "guest"), (HOST, "host")], params)
    scores = result.output(GUEST, "guest", "predict_0", "data")
    np.testing.assert_array_equal(scores.features[:, 0], reference.predict(blocks))
    guest_model = model_of(result, GUEST, "guest", "boost_0")
    for name in ("kind", "party", "weight", "missing_left"):
        expected = np.stack([getattr(t, name) for t in reference.trees])
        np.testing.assert_array_equal(guest_model.arrays[f"trees/{name}"], expected)
    kind, party = guest_model.arrays["trees/kind"], guest_model.arrays["trees/party"]
    split = kind == sbmath.SPLIT
    assert all(np.any(split[t]) for t in range(3))
    assert np.all(party[[0, 2]][split[[0, 2]]] == 0)
    assert np.all(party[1][split[1]] == 1)
    # gh was encrypted and sent for the host's tree only (iteration = tree * max_depth)
    gh = [c.iteration for c in result.crossings if c.tag == "gh"]
    assert gh == [2]
