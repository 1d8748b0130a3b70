"""hetero_lr: the federated arithmetic equals plaintext Taylor SGD on the joined data, the
model parts stay with their owners, small batches and short peers' keys are refused, and a
host that sends a malformed gradient makes the job fail with a clear error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedcrypto import EncryptedVector
from fedflow.components import REGISTRY, protocol_of
from fedflow.kit import payloads
from fedflow.metrics import MetricsReader
from fedflow.pipeline import Pipeline
from fedflow.protocol import Protocol, ProtocolGuard, ProtocolViolation
from fedflow.standalone import StandaloneError, run_pipeline
from fedschemas import FederationData

from tests.lr.conftest import (
    EXAMPLE_DATA,
    GUEST,
    HOST,
    SHORT_KEY_PARAMS,
    sigmoid_sgd,
    synthetic,
    taylor_sgd,
    taylor_sgd_with_loss,
    trained,
    weights,
)

SMALL = {**SHORT_KEY_PARAMS, "seed": 3}
BREAST_PIPELINE = Path(__file__).resolve().parents[2] / "examples/pipelines/hetero_lr_breast.yaml"


def breast_pipeline(**common: Any) -> Pipeline:
    pipeline = Pipeline.from_yaml(BREAST_PIPELINE.read_text())
    data = {
        "name": pipeline.name,
        "parties": {"guest": GUEST, "host": [HOST]},
        "components": [
            {
                "name": "reader_0",
                "type": "reader",
                "params": {
                    "guest": {"table": "breast_hetero_guest"},
                    "host": {"table": "breast_hetero_host"},
                },
            },
            {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}},
            {
                "name": "hetero_lr_0",
                "type": "hetero_lr",
                "inputs": {"data": "psi_0.data"},
                "params": {"common": common},
            },
        ],
    }
    return Pipeline.from_dict(data)


def test_federated_weights_equal_plaintext_taylor_sgd_on_the_joined_data(tmp_path: Path) -> None:
    # Prepare
    guest, host = synthetic(200, 3, 4, seed=5)

    # Execute
    with trained(tmp_path, "job-eq", guest, host, SMALL) as world:
        wg, wh = weights(world, "job-eq")

    # Assert: each party holds only its own weights, equal to the plaintext computation
    expected_g, expected_h = taylor_sgd(guest, host, SMALL)
    assert wg.shape == (4,) and wh.shape == (4,)
    np.testing.assert_allclose(wg, expected_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, expected_h, rtol=0, atol=1e-6)
    assert np.abs(wh).max() > 0.01  # the host really learnt something


def test_the_epoch_loss_from_aggregates_equals_the_plaintext_taylor_loss(tmp_path: Path) -> None:
    # Prepare
    guest, host = synthetic(200, 3, 4, seed=8)

    # Execute
    with trained(tmp_path, "job-loss", guest, host, SMALL) as world:
        reader = MetricsReader(world.parties[GUEST].engine)
        series = sorted(
            (m.step, m.value) for m in reader.metrics("job-loss", "lr_0") if m.name == "loss"
        )

    # Assert
    _, _, expected = taylor_sgd_with_loss(guest, host, SMALL)
    assert [step for step, _ in series] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in series], expected, rtol=0, atol=1e-6)
    assert expected[2] < expected[0]


def test_early_stopping_ends_both_parties_after_the_same_epoch(tmp_path: Path) -> None:
    # Prepare: a tolerance no improvement can beat: stop after the second epoch
    guest, host = synthetic(200, 3, 4, seed=9)
    params = {**SMALL, "epochs": 5, "early_stop": True, "tol": 100.0}

    # Execute
    with trained(tmp_path, "job-stop", guest, host, params) as world:
        iterations = {
            party: MetricsReader(world.parties[party].engine).values("job-stop", "lr_0", party)[
                "iterations"
            ]
            for party in (GUEST, HOST)
        }
        wg, wh = weights(world, "job-stop")

    # Assert: 2 epochs of 3 batches at both parties, weights as after 2 plaintext epochs
    assert iterations == {GUEST: 6.0, HOST: 6.0}
    expected_g, expected_h = taylor_sgd(guest, host, params, epochs_run=2)
    np.testing.assert_allclose(wg, expected_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, expected_h, rtol=0, atol=1e-6)


def test_reveal_host_scores_mode_trains_exact_sigmoid_sgd_and_says_what_crossed(
    tmp_path: Path,
) -> None:
    # Prepare
    guest, host = synthetic(200, 3, 4, seed=12)
    params = {**SMALL, "reveal_host_scores": True}

    # Execute
    with trained(tmp_path, "job-rev", guest, host, params) as world:
        crossings = world.crossings.snapshot()
        wg, wh = weights(world, "job-rev")

    # Assert: the exact-sigmoid weights; the host's scores crossed in plaintext, labelled
    expected_g, expected_h = sigmoid_sgd(guest, host, params)
    np.testing.assert_allclose(wg, expected_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, expected_h, rtol=0, atol=1e-6)
    tags = {c.tag for c in crossings}
    assert "host_scores_revealed" in tags and "host_scores" not in tags
    assert {c.kind for c in crossings if c.tag == "host_scores_revealed"} == {"partial_score"}


def test_nothing_per_sample_crosses_in_plaintext_during_training(tmp_path: Path) -> None:
    # Prepare
    guest, host = synthetic(200, 3, 4, seed=6)

    # Execute (both parties without error: trained asserts it)
    with trained(tmp_path, "job-x", guest, host, {**SMALL, "epochs": 1}) as world:
        crossings = world.crossings.snapshot()

    # Assert: per-sample-sized arrays crossed only as ciphertexts
    kinds = {(c.tag, c.kind) for c in crossings}
    assert ("residual", "ciphertext_vector") in kinds and (
        "host_scores",
        "ciphertext_vector",
    ) in kinds
    assert "host_scores_revealed" not in {t for t, _ in kinds}
    assert {k for t, k in kinds if t in ("host_gradient_masked", "guest_gradient_masked")} == {
        "masked_vector"
    }


def test_a_batch_smaller_than_the_minimum_is_refused(tmp_path: Path) -> None:
    # Prepare: breast has 11 guest weights and 20 host features: minimum 4 * 23 = 92
    pipeline = breast_pipeline(batch_size=80, key_bits=512, insecure_short_keys=True)

    # Execute / Assert
    with pytest.raises(StandaloneError, match=r"batch_size 80 is below the minimum 92"):
        run_pipeline(pipeline, {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp_path)


def _corrupt_host_gradient(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """The host's masked gradient is altered just before it is sent (a faulty or malicious
    host); the host's own protocol guard is told to let it through."""
    original_payload = payloads.ciphertext_payload
    original_check = ProtocolGuard.check_send

    def payload(vec: EncryptedVector) -> FederationData:
        sent = original_payload(vec)
        if vec.shape == (20,):  # breast: the host's gradient has 20 entries
            assert sent.array is not None
            return FederationData(kind=sent.kind, array=change(sent.array.copy()), meta=sent.meta)
        return sent

    def check_send(self: ProtocolGuard, payload: FederationData, **kw: Any) -> Any:
        if self.role == "host" and kw["tag"] == "host_gradient":
            return self.protocol.rule("host_gradient", "host", "guest")
        return original_check(self, payload, **kw)

    monkeypatch.setattr(payloads, "ciphertext_payload", payload)
    monkeypatch.setattr(ProtocolGuard, "check_send", check_send)


def _one_ciphertext_too_many(a: np.ndarray) -> np.ndarray:
    return np.vstack([a, a[:1]])


def _one_ciphertext_out_of_range(a: np.ndarray) -> np.ndarray:
    # 2^1024 - 1 >= n^2 for a 512-bit n
    a[3, :] = np.iinfo(np.uint64).max
    return a


@pytest.mark.parametrize(
    ("corrupt", "failure"),
    [
        pytest.param(
            _one_ciphertext_too_many,
            r"ShapeMismatchError: hetero_lr: host_gradient from 10000 has 21 ciphertexts, "
            r"expected 20",
            id="wrong-shape",
        ),
        pytest.param(
            _one_ciphertext_out_of_range,
            r"CiphertextError: hetero_lr: host_gradient from 10000 refused: .*\(0, n",
            id="outside-zero-to-n-squared",
        ),
    ],
)
def test_a_corrupt_host_gradient_fails_the_job(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    corrupt: Callable[[np.ndarray], np.ndarray],
    failure: str,
) -> None:
    # Prepare
    _corrupt_host_gradient(monkeypatch, corrupt)
    pipeline = breast_pipeline(epochs=1, batch_size=128, key_bits=512, insecure_short_keys=True)

    # Execute / Assert
    with pytest.raises(
        StandaloneError, match=r"hetero_lr_0 failed at party 9999 \(guest\): " + failure
    ):
        run_pipeline(pipeline, {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, tmp_path)


def test_the_protocol_is_declared_with_named_dims_and_decrypt_rules() -> None:
    # Execute
    protocol = protocol_of("hetero_lr")
    again = Protocol.from_json(protocol.to_json())

    # Assert
    assert again == protocol
    assert {"hetero_lr", "hetero_lr_predict"} <= set(REGISTRY)
    gradient = protocol.rule("host_gradient", "host", "guest")
    assert gradient is not None and gradient.shape == "(*, c)"  # rows checked per host
    assert gradient.decrypt is not None and gradient.decrypt.by == "guest"
    residual = protocol.rule("residual", "guest", "host")
    assert residual is not None and residual.decrypt is None  # the host never decrypts it
    guard = ProtocolGuard(protocol, "host")
    guard.bind(k_g2=3, c=16)
    with pytest.raises(ProtocolViolation, match="shape"):
        guard.check_accept(
            FederationData(kind="ciphertext_vector", array=np.zeros((4, 16), dtype=np.uint64)),
            from_role="guest",
            tag="guest_gradient",
            iteration=0,
            seq=0,
        )
