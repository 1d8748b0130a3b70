"""homo_lr / homo_nn differential privacy: each client's clipped update plus Gaussian noise before
masking (privacy.py), and the Renyi-DP accounting reported as the metric dp_epsilon."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedcrypto.secagg import SecAggClient, SecAggConfig
from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr import privacy
from fedflow.components.homo_lr.client import LocalClient
from fedflow.components.homo_lr.params import HomoLrParams
from fedflow.pipeline import Pipeline
from fedflow.policy import SecurityPolicy
from fedflow.standalone import PolicyRefused, StandaloneResult, check_policies, run_pipeline
from pydantic import ValidationError

from tests.homo.conftest import auc_on, load, parts, pipeline, training
from tests.homo.test_homo_lr_standalone import _breast_three_clients

CLIP = 0.5
TABLES_2 = ["breast_homo_guest", "breast_homo_host"]
DP_PARAMS: dict[str, Any] = {
    "rounds": 1,
    "batch_size": 32,
    "learning_rate": 0.1,
    "alpha": 0.01,
    "seed": 3,
    "clip_norm": CLIP,
}


def _config(n: int = 3, length: int = 10) -> SecAggConfig:
    return SecAggConfig(session=b"dp-test", num_clients=n, vector_length=length, modulus_bits=64)


# ------------------------------------------------------------------ accounting


@pytest.mark.parametrize(
    ("z", "rounds"), [(0.5, 1), (1.0, 1), (1.0, 10), (4.0, 10), (10.0, 10), (20.0, 100)]
)
def test_rdp_epsilon_bounds_the_exact_epsilon_from_above_and_closely(z: float, rounds: int) -> None:
    # Execute: the reported (RDP) and the tight (Gaussian DP) epsilon of the same composition
    rdp = privacy.rdp_epsilon(z, rounds, 1e-5)
    exact = privacy.exact_epsilon(z, rounds, 1e-5)

    # Assert: RDP is an upper bound, and a close one for the Gaussian mechanism
    assert exact <= rdp <= 1.12 * exact


def test_epsilon_grows_with_rounds_and_shrinks_with_noise() -> None:
    # Execute
    by_rounds = [privacy.rdp_epsilon(2.0, t, 1e-5) for t in (0, 1, 5, 25)]
    by_noise = [privacy.rdp_epsilon(z, 10, 1e-5) for z in (0.5, 1.0, 2.0, 8.0)]

    # Assert
    assert by_rounds[0] == 0.0 and by_rounds == sorted(by_rounds) and by_rounds[1] > 0
    assert by_noise == sorted(by_noise, reverse=True)
    assert privacy.rdp_epsilon(0.0, 3, 1e-5) == math.inf
    with pytest.raises(ValueError, match="delta"):
        privacy.rdp_epsilon(1.0, 3, 0.0)


# ------------------------------------------------------------------ the mechanism


def test_noise_has_the_stated_scale_and_the_loss_is_withheld() -> None:
    # Prepare: a contribution of 20,000 coordinates plus (p * loss, p)
    p = 0.25
    vector = np.concatenate([np.zeros(20_000), [p * 0.7, p]])
    client = SecAggClient(1, _config(length=vector.size))
    client.advertise_keys()

    # Execute
    noised = privacy.DpSettings(3.0, CLIP, 1e-5).apply(vector, client)

    # Assert: p * z * C * N(0, 1) on the delta, loss 0, p unchanged
    assert np.std(noised[:-2]) == pytest.approx(p * 3.0 * CLIP, rel=0.03)
    assert abs(np.mean(noised[:-2])) < 0.05 * p * 3.0 * CLIP
    assert noised[-2] == 0.0 and noised[-1] == p


def test_noise_is_secret_per_round_and_the_same_for_a_restored_client() -> None:
    # Prepare: one client, restored from its exported state; another round's client
    vector = np.concatenate([np.zeros(50), [0.0, 0.5]])
    dp = privacy.DpSettings(1.0, CLIP, 1e-5)
    client = SecAggClient(2, _config(length=vector.size))
    client.advertise_keys()
    restored = SecAggClient.from_state(client.export_state(), _config(length=vector.size))
    other_round = SecAggClient(2, _config(length=vector.size))
    other_round.advertise_keys()

    # Execute
    first, again, other = (dp.apply(vector, c) for c in (client, restored, other_round))

    # Assert: a restarted client re-sends the same bytes; fresh keys give fresh noise
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_each_clients_delta_is_clipped_to_clip_norm() -> None:
    # Prepare: a client whose unclipped local step is far longer than clip_norm
    table = load("breast_homo_host")
    params = HomoLrParams(learning_rate=1.0, local_epochs=3, clip_norm=CLIP)
    unclipped = LocalClient.from_table(table, 2, HomoLrParams(learning_rate=1.0, local_epochs=3))
    client = LocalClient.from_table(table, 2, params)
    start = np.zeros(client.model_length)

    # Execute
    raw, _ = unclipped.contribution(start, 0)
    vector, facts = client.contribution(start, 0)

    # Assert: the delta (the contribution over p) is exactly clip_norm long, in the same
    # direction; the client records that it clipped
    p = vector[-1]
    assert np.linalg.norm(raw[:-2] / p) > 4 * CLIP
    assert np.linalg.norm(vector[:-2] / p) == pytest.approx(CLIP, rel=1e-12)
    np.testing.assert_allclose(
        vector[:-2] / np.linalg.norm(vector[:-2]), raw[:-2] / np.linalg.norm(raw[:-2])
    )
    assert facts["clipped_update"] == 1.0


def test_dp_without_clip_norm_or_with_early_stopping_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs clip_norm"):
        HomoLrParams(dp_noise_multiplier=1.0)
    with pytest.raises(ValidationError, match="early_stop"):
        HomoLrParams(dp_noise_multiplier=1.0, clip_norm=1.0, early_stop=True)


# ------------------------------------------------------------------ end to end


def _run(tmp_path: Path, folders: dict[str, Path], z: float, rounds: int) -> StandaloneResult:
    params = {**DP_PARAMS, "rounds": rounds, "dp_noise_multiplier": z}
    spec = pipeline(["breast_part"] * 3, "breast_homo_test", params, score=False)
    return run_pipeline(Pipeline.from_dict(spec), folders, tmp_path / f"run-{z}-{rounds}")


def _dp_metrics(result: StandaloneResult, name: str) -> dict[tuple[str, int], float]:
    return {(m.party_id, m.step): m.value for m in result.metrics if m.name == name}


def test_noise_is_applied_at_every_client_at_the_stated_scale(tmp_path: Path) -> None:
    # Prepare: breast over three clients, one round, clip_norm 0.5; the clipped FedAvg model
    # (the job's model without noise: test_homo_lr_standalone checks that)
    folders, tables = _breast_three_clients(tmp_path)
    reference = hmath.reference_fedavg(parts(tables), training(DP_PARAMS), 1, clip=CLIP)
    rows = np.array([len(t.ids) for t in tables], dtype=np.float64)
    z = 2.0

    # Execute
    result = _run(tmp_path, folders, z, 1)

    # Assert: the model is off the clipped FedAvg model by the mechanism's scale (the
    # row-weighted mean of the three clients' z*C*N(0, I)); every party reports epsilon at
    # delta for the one round; no loss crossed
    model = result.output("9999", "guest", "homo_lr_0", "model").features[:, 0]
    expected_std = z * CLIP * math.sqrt(np.sum(rows**2)) / np.sum(rows)
    measured = float(np.sqrt(np.mean((model - reference) ** 2)))
    assert 0.6 * expected_std < measured < 1.5 * expected_std, (measured, expected_std)
    eps = _dp_metrics(result, "dp_epsilon")
    assert set(eps) == {("9999", 0), ("10000", 0), ("10001", 0)}
    assert all(v == pytest.approx(privacy.rdp_epsilon(z, 1, 1e-5)) for v in eps.values())
    assert not _dp_metrics(result, "loss")


def test_utility_drops_under_heavy_noise_and_epsilon_is_reported_per_round(
    tmp_path: Path,
) -> None:
    # Prepare: three rounds; without noise the job's model is the clipped FedAvg reference
    folders, tables = _breast_three_clients(tmp_path)
    test = load("breast_homo_test")
    x1, y = hmath.with_intercept(test.features), test.labels
    assert y is not None
    clean = hmath.reference_fedavg(parts(tables), training(DP_PARAMS), 3, clip=CLIP)
    z = 8.0

    # Execute
    result = _run(tmp_path, folders, z, 3)

    # Assert: the test log loss rises (a draw below the clean model's has probability < 1e-4
    # here, measured by simulation); epsilon grows round by round as the accountant says
    noisy = result.output("9999", "guest", "homo_lr_0", "model").features[:, 0]
    losses = (hmath.log_loss(clean, x1, y), hmath.log_loss(noisy, x1, y))
    print(
        f"test log loss clean {losses[0]:.4f}, z=8 {losses[1]:.4f}; "
        f"AUC {auc_on(clean, test):.4f}, {auc_on(noisy, test):.4f}"
    )
    assert losses[1] > losses[0]
    eps = _dp_metrics(result, "dp_epsilon")
    for party in ("9999", "10000", "10001"):
        steps = [eps[(party, r)] for r in range(3)]
        assert steps == pytest.approx([privacy.rdp_epsilon(z, r + 1, 1e-5) for r in range(3)])


@pytest.mark.parametrize(
    ("given", "refused"),
    [
        ({}, True),
        ({"clip_norm": 1.0, "dp_noise_multiplier": 0.5}, True),
        ({"clip_norm": 1.0, "dp_noise_multiplier": 2.0}, False),
    ],
)
def test_a_party_can_require_a_minimum_noise_in_its_policy(
    given: dict[str, Any], refused: bool
) -> None:
    # Prepare: host 10000 requires dp_noise_multiplier >= 1 (a pipeline that omits it gets 0)
    spec = pipeline(TABLES_2, "breast_homo_test", {"rounds": 2, **given}, score=False)
    policy = SecurityPolicy.model_validate(
        {"components": {"homo_lr": {"bounds": {"dp_noise_multiplier": {"min": 1.0}}}}}
    )

    # Execute / Assert
    if refused:
        with pytest.raises(PolicyRefused, match=r"bounds\.dp_noise_multiplier"):
            check_policies(Pipeline.from_dict(spec), {"10000": policy})
    else:
        check_policies(Pipeline.from_dict(spec), {"10000": policy})
