"""hetero_secureboost through the runtime (standalone: every party's task in its own thread,
messages signed and relayed): the federated model equals the plaintext reference exactly (same
bins, same seeds), with one host and with two; each party's model part holds only its own
thresholds; a host answering with a histogram of the wrong shape or a ciphertext outside
(0, n^2) fails the job with a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedbus.sql_inbox import make_engine
from fedcrypto import EncryptedVector, PaillierOverflowError, PublicKey, generate_keypair
from fedflow.artifacts import ArtifactStore, ModelArtifact
from fedflow.components import REGISTRY, protocol_of
from fedflow.components.hetero_secureboost import cipher
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.params import HeteroSecureBoostParams
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, StandaloneResult, run_pipeline
from fedflow.tables import Table

from tests.secureboost.data import EXAMPLE_DATA, GUEST, HOST

HOST2 = "10001"
SHORT = {"key_bits": 512, "insecure_short_keys": True}


def pipeline(hosts: list[str], tables: dict[str, str], params: dict[str, Any]) -> Pipeline:
    host_list = ", ".join(f'"{h}"' for h in hosts)
    per_party = "\n".join(f"      {p}: {{table: {t}}}" for p, t in tables.items())
    return Pipeline.from_yaml(
        f"""
name: secureboost-test
parties: {{guest: "{GUEST}", host: [{host_list}]}}
components:
  - name: reader_0
    type: reader
    params:
{per_party}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: boost_0
    type: hetero_secureboost
    inputs: {{data: psi_0.data}}
    params:
      common: {params!r}
  - name: predict_0
    type: hetero_secureboost_predict
    inputs: {{model: boost_0.model, data: psi_0.data}}
"""
    )


def model_of(result: StandaloneResult, party: str, role: str, component: str) -> ModelArtifact:
    """A model output, read back from the party's database (StandaloneResult.output reads
    tables only)."""
    engine = make_engine(result._engines[party])
    try:
        found = ArtifactStore(engine).get_artifact(result.job_id, party, role, f"{component}.model")
    finally:
        engine.dispose()
    assert isinstance(found, ModelArtifact)
    return found


def _reference(result: StandaloneResult, parties: list[tuple[str, str]], params: Any) -> Any:
    """The plaintext reference on the rows psi kept (every party's output, same order)."""
    blocks = [result.output(p, role, "psi_0", "data") for p, role in parties]
    guest: Table = blocks[0]
    assert guest.labels is not None
    model = sbmath.fit([np.asarray(b.features) for b in blocks], guest.labels, params)
    return model, [np.asarray(b.features) for b in blocks]


def test_breast_federated_model_with_sampling_equals_the_plaintext_reference(
    tmp_path: Path,
) -> None:
    # Prepare: row sampling with GOSS on top, feature sampling, a leaf minimum,
    # min_child_weight
    settings = {
        "goss": True,
        "goss_top_rate": 0.3,
        "goss_other_rate": 0.3,
        "num_trees": 3,
        "max_depth": 3,
        "max_bin": 16,
        "subsample": 0.8,
        "colsample": 0.7,
        "min_samples_leaf": 5,
        "min_child_weight": 0.5,
        "seed": 7,
        **SHORT,
    }
    spec = pipeline(
        [HOST], {"guest": "breast_hetero_guest", "host": "breast_hetero_host"}, settings
    )

    # Execute
    result = run_pipeline(spec, {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp_path)

    # Assert: the same scores, bit for bit, and the same trees
    params = HeteroSecureBoostParams.model_validate(settings)
    reference, blocks = _reference(result, [(GUEST, "guest"), (HOST, "host")], params)
    scores = result.output(GUEST, "guest", "predict_0", "data")
    np.testing.assert_array_equal(scores.features[:, 0], reference.predict(blocks))
    guest_model = model_of(result, GUEST, "guest", "boost_0")
    for name in ("kind", "party", "weight", "missing_left"):
        expected = np.stack([getattr(t, name) for t in reference.trees])
        np.testing.assert_array_equal(guest_model.arrays[f"trees/{name}"], expected)
    assert np.any(guest_model.arrays["trees/party"] == 1)  # the host won some splits
    # The guest's part knows no host threshold; the host's part has exactly those, its own
    host_nodes = guest_model.arrays["trees/party"] == 1
    assert np.all(guest_model.arrays["trees/feature"][host_nodes] == -1)
    host_model = model_of(result, HOST, "host", "boost_0")
    assert_host_splits_are_the_reference_s(host_model, 1, reference)
    assert host_model.document["feature_names"] == [f"x{i}" for i in range(20)]
    assert result.metric("boost_0", "trees") == 3.0


def assert_host_splits_are_the_reference_s(
    host_model: ModelArtifact, party: int, reference: Any
) -> None:
    """The host's split table holds exactly the reference's splits of that party: its own
    feature indexes (mapped back from the shuffled slots the guest saw) and thresholds."""
    expected = sum(
        int(np.sum((t.kind == sbmath.SPLIT) & (t.party == party))) for t in reference.trees
    )
    assert host_model.arrays["split_tree"].size == expected > 0
    for t, node, feature, threshold in zip(
        host_model.arrays["split_tree"],
        host_model.arrays["split_node"],
        host_model.arrays["split_feature"],
        host_model.arrays["split_threshold"],
        strict=True,
    ):
        tree = reference.trees[t]
        assert tree.party[node] == party and tree.feature[node] == feature
        assert threshold == reference.cuts[party][feature][tree.bin[node]]


def _write(folder: Path, name: str, ids: np.ndarray, x: np.ndarray, y: np.ndarray | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = ["id", *(["y"] if y is not None else []), *(f"x{j}" for j in range(x.shape[1]))]
    lines = [",".join(header)]
    for i, row_id in enumerate(ids):
        values = ["" if np.isnan(v) else repr(float(v)) for v in x[i]]
        lines.append(
            ",".join([str(row_id), *([repr(float(y[i]))] if y is not None else []), *values])
        )
    (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")


def test_two_hosts_multiclass_with_missing_values_and_complete_secure_equal_the_reference(
    tmp_path: Path,
) -> None:
    # Prepare: three classes driven by every party's features, 10% missing values
    rng = np.random.default_rng(5)
    rows = 300
    x = rng.normal(size=(rows, 9))
    y = np.digitize(x[:, 0] + x[:, 4] - x[:, 7] + 0.3 * rng.normal(size=rows), [-0.7, 0.7])
    x[rng.random(x.shape) < 0.1] = np.nan
    # the first host's third feature is a copy of its second: every split on one ties with
    # the other, and the host (which shows its features to the guest in a secret shuffled
    # order) must take the first in its own order, as the reference does
    x[:, 5] = x[:, 4]
    ids = np.array([f"r{i:04d}" for i in range(rows)])
    _write(tmp_path / GUEST, "g", ids, x[:, :3], y.astype(np.float64))
    _write(tmp_path / HOST, "h", ids, x[:, 3:6], None)  # each host its own folder
    _write(tmp_path / HOST2, "h", ids, x[:, 6:], None)
    settings = {
        "objective": "multi:softmax",
        "num_class": 3,
        "num_trees": 2,
        "max_depth": 2,
        "max_bin": 8,
        "complete_secure": True,
        **SHORT,
    }
    spec = pipeline([HOST, HOST2], {"guest": "g", "host": "h"}, settings)

    # Execute
    result = run_pipeline(spec, {p: tmp_path / p for p in (GUEST, HOST, HOST2)}, tmp_path / "work")

    # Assert
    params = HeteroSecureBoostParams.model_validate(settings)
    reference, blocks = _reference(
        result, [(GUEST, "guest"), (HOST, "host"), (HOST2, "host")], params
    )
    scores = result.output(GUEST, "guest", "predict_0", "data")
    np.testing.assert_array_equal(scores.features[:, :3], reference.predict(blocks))
    parties = np.stack([t.party for t in reference.trees])
    assert set(parties[:3].ravel()) <= {-1, 0}  # the first round: guest features only
    assert {1, 2} <= set(parties[3:].ravel())  # later rounds: both hosts split
    assert_host_splits_are_the_reference_s(model_of(result, HOST, "host", "boost_0"), 1, reference)
    assert_host_splits_are_the_reference_s(model_of(result, HOST2, "host", "boost_0"), 2, reference)
    tied = [
        (t.feature[node], t.bin[node])
        for t in reference.trees
        for node in np.flatnonzero((t.kind == sbmath.SPLIT) & (t.party == 1))
    ]
    assert any(feature == 1 for feature, _ in tied)  # splits on the duplicated feature


def _corrupt_histograms(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """A faulty or malicious host: its compressed histograms altered before they are sent."""
    original = cipher.compress

    def compress(key: PublicKey, *args: Any) -> EncryptedVector:
        sent = original(key, *args)
        data = change(sent.data.copy())
        return EncryptedVector(key, data, 0, (data.shape[0],), bound=key.max_int)

    monkeypatch.setattr(cipher, "compress", compress)


def _one_ciphertext_too_many(a: np.ndarray) -> np.ndarray:
    return np.vstack([a, a[:1]])


def _one_ciphertext_out_of_range(a: np.ndarray) -> np.ndarray:
    a[0, :] = np.iinfo(np.uint64).max  # 2^1024 - 1 >= n^2 for a 512-bit n
    return a


@pytest.mark.parametrize(
    ("corrupt", "failure"),
    [
        pytest.param(
            _one_ciphertext_too_many,
            r"ShapeMismatchError: hetero_secureboost: histograms from 10000 has \d+ "
            r"ciphertexts, expected \d+",
            id="wrong-shape",
        ),
        pytest.param(
            _one_ciphertext_out_of_range,
            r"CiphertextError: hetero_secureboost: histograms from 10000 refused: .*\(0, n",
            id="outside-zero-to-n-squared",
        ),
    ],
)
def test_a_corrupt_host_histogram_fails_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corrupt: Any, failure: str
) -> None:
    # Prepare
    _corrupt_histograms(monkeypatch, corrupt)
    spec = pipeline(
        [HOST],
        {"guest": "breast_hetero_guest", "host": "breast_hetero_host"},
        {"num_trees": 1, "max_depth": 2, **SHORT},
    )

    # Execute / Assert
    with pytest.raises(
        StandaloneError, match=r"boost_0 failed at party 9999 \(guest\): " + failure
    ):
        run_pipeline(spec, {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp_path)


def test_the_protocol_declares_who_decrypts_and_what_is_revealed() -> None:
    protocol = protocol_of("hetero_secureboost")

    assert {"hetero_secureboost", "hetero_secureboost_predict"} <= set(REGISTRY)
    histograms = protocol.rule("histograms", "host", "guest")
    assert histograms is not None and histograms.decrypt is not None
    assert histograms.decrypt.by == "guest"
    gh = protocol.rule("gh", "guest", "host")
    assert gh is not None and gh.decrypt is None  # the host has no key
    split = protocol.rule("instance_split", "host", "guest")
    assert split is not None and split.kinds == ("partial_score",)  # a per-row disclosure


def test_a_host_shows_its_features_in_a_secret_order_per_tree() -> None:
    # Prepare: a host's 20 features, 12 of them drawn by colsample for one tree
    key, other_key = bytes(range(16)), bytes(range(1, 17))
    every = np.ones(20, dtype=np.bool_)
    drawn = sbmath.sampled_features(20, 0.6, 0, 3, 1)

    # Execute
    orders = [sbmath.host_feature_order(key, tree, every) for tree in range(4)]
    again = sbmath.host_feature_order(key, 2, every)  # a resumed host: the same key
    sampled = sbmath.host_feature_order(key, 3, drawn)

    # Assert: each order is a permutation of the features it may use, different per tree and
    # per key, the same for the same key and tree; short keys are refused
    for order in orders:
        assert sorted(order.tolist()) == list(range(20))
        assert order.tolist() != list(range(20))
    assert len({tuple(o.tolist()) for o in orders}) == 4
    np.testing.assert_array_equal(again, orders[2])
    assert sbmath.host_feature_order(other_key, 2, every).tolist() != orders[2].tolist()
    assert sorted(sampled.tolist()) == np.flatnonzero(drawn).tolist() and sampled.size == 12
    with pytest.raises(ValueError, match="16 bytes"):
        sbmath.host_feature_order(b"short", 0, every)


def test_a_host_sends_only_cells_the_guest_cannot_restore_and_the_guest_rebuilds_all() -> None:
    # Prepare: 300 rows (80% sampled) at two nodes, a feature with a dominant value, one
    # with a bin no row reaches
    public, private = generate_keypair(512, insecure_allow_short=True)
    rng = np.random.default_rng(0)
    rows, max_bin = 300, 8
    layout = cipher.CellLayout(rows, 512)
    on = (rng.random(rows) < 0.8).astype(np.int64)
    q = (rng.integers(0, 2**31, rows) * on, rng.integers(0, 2**30, rows) * on, on)
    x = rng.normal(size=(rows, 3))
    x[:, 1] = np.where(rng.random(rows) < 0.6, 0.0, x[:, 1])
    bins = sbmath.bin_features(x, sbmath.fit_cuts(x, max_bin), max_bin)
    positions = rng.integers(-1, 2, rows).astype(np.int32)
    gh = private.encrypt_residues(layout.row_plaintexts(q, public.plain_limbs))
    nodes = np.array([0, 1])
    totals = sbmath.node_totals(positions, 2, q)
    expected = sbmath.histograms(bins, positions, 2, q, max_bin)

    # Execute: the host's plan and cells, compressed, decrypted, put back in place
    kinds = cipher.cell_kinds(bins, positions, nodes, max_bin)
    cells = cipher.encrypted_histograms(public, gh, bins, positions, nodes, max_bin, None, kinds)
    packed = cipher.compress(public, cells, layout, None)
    residues = private.decrypt_residues(packed.data)
    sent = layout.cells(residues, cells.shape[0], "h")
    cipher.check_cell_kinds(kinds, (2, 3, max_bin + 1), "h")
    restored = cipher.place_cells(sent, kinds, totals, "h")

    # Assert: one cell left out per node and feature, the missing bin (no missing values)
    # not sent, fewer cells travel than there are, and the histograms are exact
    assert np.all((kinds == cipher.LEFT_OUT).sum(axis=2) == 1)
    assert np.all(kinds[:, :, max_bin] == cipher.EMPTY)
    assert cells.shape[0] == int(np.sum(kinds == cipher.SENT)) < 2 * 3 * (max_bin + 1) - 6
    np.testing.assert_array_equal(restored, expected)
    everything = cipher.cell_kinds(bins, positions, nodes, max_bin, skip_empty=False)
    assert not np.any(everything == cipher.EMPTY)
    with pytest.raises(PaillierOverflowError, match="more than its total"):
        cipher.place_cells(sent, kinds, totals // 2, "h")
    forged = kinds.copy()
    forged[0, 0, :2] = cipher.LEFT_OUT
    with pytest.raises(ValueError, match="more than one cell left out"):
        cipher.check_cell_kinds(forged, forged.shape, "h")
    with pytest.raises(ValueError, match="not empty"):
        cipher.check_cell_kinds(kinds + 3, kinds.shape, "h")
    with pytest.raises(ValueError, match="shape"):
        cipher.check_cell_kinds(kinds[:1], kinds.shape, "h")


def test_row_plaintexts_lay_out_each_field_exactly() -> None:
    # Prepare: extreme and random field values for table sizes whose cells span one to three
    # 64-bit words
    rng = np.random.default_rng(1)
    for rows, key_bits in ((7, 512), (569, 512), (30_000, 2048), (3_000_000, 2048)):
        layout = cipher.CellLayout(rows, key_bits)
        gh, count = layout.fields
        qg = np.append(rng.integers(0, 2**31, 50), [0, 2**31 - 1])
        qh = np.append(rng.integers(0, 2**30 + 1, 50), [2**30, 0])
        on = np.append(rng.integers(0, 2, 50), [1, 0])

        # Execute
        limbs = layout.row_plaintexts((qg, qh, on), key_bits // 64)

        # Assert: every row's integer is rows | q_h << c | q_g << (c + f)
        for i in range(qg.size):
            value = int.from_bytes(limbs[i].tobytes(), "little")
            assert value == int(on[i]) | int(qh[i]) << count | int(qg[i]) << (count + gh)
    with pytest.raises(ValueError, match="non-negative"):
        layout.row_plaintexts((qg - 2**31, qh, on), 32)
