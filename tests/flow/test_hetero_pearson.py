"""hetero_pearson: the guest x host correlations equal numpy's on the joined table; the host
learns them only with share_with_host; missing values and too many columns are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.artifacts import ModelArtifact
from fedflow.tables import Table
from sklearn.datasets import load_breast_cancer

from tests.flow.modelling_runs import GUEST, Outcome, run_component
from tests.flow.test_hetero_binning import HOST, KEYS


def tables() -> tuple[Table, Table]:
    """breast split vertically (guest 6 columns, host 8 with a constant one), 300 rows."""
    x = load_breast_cancer().data[:300].astype(np.float64)
    ids = np.array([f"r{i:03d}" for i in range(300)], dtype=np.str_)
    xh = x[:, 6:14].copy()
    xh[:, 3] = 2.5
    guest = Table(ids, x[:, :6].copy(), [f"g{i}" for i in range(6)], np.zeros(300), "y")
    return guest, Table(ids, xh, [f"h{i}" for i in range(8)], None)


def run(tmp_path: Path, guest: Table, host: Table, **params: Any) -> Outcome:
    return run_component(
        tmp_path,
        "hetero_pearson",
        {GUEST: {"data": guest}, HOST: {"data": host}},
        {**KEYS, **params},
    )


def model(out: Outcome, party: str) -> ModelArtifact:
    found = out.outputs[party]["model"]
    assert isinstance(found, ModelArtifact)
    return found


def test_cross_correlations_equal_numpys_on_the_joined_table(tmp_path: Path) -> None:
    # Prepare
    guest, host = tables()
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.corrcoef(np.hstack([guest.features, host.features]), rowvar=False)
    expected: np.ndarray = np.where(np.isnan(raw), 0.0, raw)  # the constant column: 0

    # Execute
    out = run(tmp_path, guest, host, share_with_host=True)

    # Assert
    assert not out.errors, out.errors
    guest_model, host_model = model(out, GUEST), model(out, HOST)
    np.testing.assert_allclose(guest_model.arrays[f"cross_{HOST}"], expected[:6, 6:], atol=1e-9)
    np.testing.assert_allclose(guest_model.arrays["local"], expected[:6, :6], atol=1e-12)
    np.testing.assert_allclose(host_model.arrays["cross"], expected[:6, 6:], atol=1e-9)
    assert host_model.document["constant_columns"] == ["h3"]
    assert guest_model.document["host_columns"][HOST][3] == f"host_{HOST}_3"
    to_host = {c.tag for c in out.crossings if c.destination == HOST}
    assert {"public_key", "encrypted_z", "correlation"} <= to_host


def test_without_share_with_host_the_host_gets_nothing_but_ciphertexts(tmp_path: Path) -> None:
    guest, host = tables()

    out = run(tmp_path, guest, host)

    assert not out.errors, out.errors
    assert "cross" not in model(out, HOST).arrays
    kinds = {
        c.kind
        for c in out.crossings
        if c.destination == HOST and c.message_type == "federation.data"
    }
    assert kinds == {"public_key", "ciphertext_vector"}


def test_missing_values_and_as_many_columns_as_rows_are_refused(tmp_path: Path) -> None:
    guest, host = tables()
    holes = host.features.copy()
    holes[5, 2] = np.nan
    out = run(tmp_path / "a", guest, Table(host.ids, holes, host.feature_names, None))
    assert "column 'h2' has 1 missing values" in str(out.errors[HOST])

    few = guest.take(np.arange(6, dtype=np.int64))
    out = run(tmp_path / "b", few, host.take(np.arange(6, dtype=np.int64)))
    assert "6 columns for 6 rows" in str(out.errors[GUEST])


def test_a_short_key_needs_insecure_short_keys() -> None:
    from fedflow.components.hetero_pearson import HeteroPearsonParams

    with pytest.raises(ValueError, match="insecure_short_keys"):
        HeteroPearsonParams.model_validate({"key_bits": 512})


def test_a_guest_without_hosts_gets_its_own_correlations(tmp_path: Path) -> None:
    guest, _ = tables()

    out = run_component(tmp_path, "hetero_pearson", {GUEST: {"data": guest}}, KEYS)

    assert not out.errors, out.errors
    expected = np.corrcoef(guest.features, rowvar=False)
    np.testing.assert_allclose(model(out, GUEST).arrays["local"], expected, atol=1e-12)
    assert not [c for c in out.crossings if c.message_type == "federation.data"]
