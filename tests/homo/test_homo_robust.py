"""Robust aggregation in homo_lr / homo_nn (aggregation: median, trimmed_mean, krum,
fedavg_clipped): the rules against a direct numpy computation, the params' refusals, and a
Byzantine client on default credit over three clients in standalone mode (every party in this
process, every message through the signed LocalRelay and each party's protocol guard)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fedflow.bus_federation import BusFederation
from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr.client import LocalClient
from fedflow.components.homo_lr.params import HomoLrParams
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, StandaloneResult, run_pipeline
from fedflow.tables import Table, read_table
from pydantic import ValidationError

from tests.audit.test_examples_clean import assert_clean, run_audited
from tests.homo.conftest import EXAMPLE_DATA, auc_on, load, nn_auc_on, parts, pipeline, training

CREDIT = ["default_credit_homo_guest", "default_credit_homo_host_1", "default_credit_homo_host_2"]
CREDIT_PARAMS: dict[str, Any] = {
    "rounds": 3,
    "local_epochs": 1,
    "batch_size": 256,
    "learning_rate": 0.1,
    "seed": 0,
}
BYZANTINE = "10001"  # client 3
ARBITER_EXAMPLE = Path(__file__).resolve().parents[2] / "examples/pipelines/homo_lr_arbiter.yaml"


# --- the rules, against a direct computation ---------------------------------------------


def test_median_and_trimmed_mean_match_a_direct_computation_with_ties() -> None:
    # Prepare: five updates with ties in coordinate 0 and an outlier in coordinate 1
    u = np.array(
        [[1.0, 0.0, 5.0], [1.0, 100.0, 4.0], [1.0, 2.0, 3.0], [2.0, 1.0, 2.0], [-3.0, 3.0, 1.0]]
    )

    # Execute
    median = hmath.coordinate_median(u)
    trimmed = hmath.trimmed_mean(u, 0.2)  # floor(0.2 * 5) = 1 each side
    untrimmed = hmath.trimmed_mean(u, 0.19)  # floor(0.95) = 0: the plain mean

    # Assert: column by column, sorted, the middle values
    assert median.tolist() == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(trimmed, [1.0, 2.0, 3.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(untrimmed, u.mean(axis=0), rtol=0, atol=1e-15)
    four = np.array([[1.0], [2.0], [10.0], [4.0]])
    assert hmath.coordinate_median(four).tolist() == [3.0]  # even n: the middle two's mean
    assert hmath.trimmed_mean(four, 0.25).tolist() == [3.0]
    assert hmath.trimmed_mean(np.array([[1.0], [9.0], [2.0]]), 0.49).tolist() == [2.0]
    with pytest.raises(hmath.RobustRuleError, match="leaves none"):
        hmath.trimmed_mean(np.ones((2, 3)), 0.5)  # refused by the params; the rule says why


def _krum_by_hand(u: np.ndarray, f: int) -> int:
    n = len(u)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((u[i] - u[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: n - f - 2]))
    return min(range(n), key=lambda i: (scores[i], i))


def test_krum_picks_the_update_nearest_its_neighbours_ties_to_the_lowest_and_needs_2f_plus_3() -> (
    None
):
    # Prepare: random clusters with a far outlier; a symmetric set for ties
    rng = np.random.default_rng(7)
    for n, f in itertools.product((5, 7, 10), (0, 1, 2)):
        if n < 2 * f + 3:
            continue
        u = rng.normal(size=(n, 4))
        u[0] += 50.0  # the Byzantine one

        # Execute / Assert: as the direct computation, never the outlier
        chosen = hmath.krum(u, f)
        assert chosen == _krum_by_hand(u, f)
        assert chosen != 0
    ties = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]])
    assert hmath.krum(ties[:4], 0) == 0  # four equal scores: the lowest index
    assert hmath.krum(ties, 1) == 4  # the centre
    with pytest.raises(hmath.RobustRuleError, match=r"needs at least 5 updates \(2f \+ 3\)"):
        hmath.krum(rng.normal(size=(4, 3)), 1)


def test_combine_clips_each_visible_update_and_records_its_factor() -> None:
    # Prepare: three contributions x = (p delta, p loss, p); client 3's delta of norm 10
    k1 = 2
    deltas = {1: np.array([0.3, 0.4]), 2: np.array([0.0, 0.5]), 3: np.array([6.0, 8.0])}
    rows = {1: 100, 2: 300, 3: 200}
    losses = {1: 0.5, 2: 0.7, 3: 0.6}
    vectors = {c: hmath.contribution(np.zeros(k1), deltas[c], losses[c], rows[c]) for c in deltas}

    # Execute
    out = hmath.combine_plain("fedavg_clipped", vectors, k1, clip=1.0)
    med = hmath.combine_plain("median", vectors, k1)
    krum = hmath.combine_plain("krum", {**vectors, 4: vectors[1], 5: vectors[2]}, k1, byzantine=1)

    # Assert: only client 3 clipped, by 1/10; FedAvg weighted by rows of the clipped deltas
    assert out.clipped == {3: pytest.approx(0.1)}
    expected = (100 * deltas[1] + 300 * deltas[2] + 200 * deltas[3] / 10) / 600
    np.testing.assert_allclose(out.delta, expected, rtol=0, atol=1e-12)
    assert out.loss == pytest.approx((100 * 0.5 + 300 * 0.7 + 200 * 0.6) / 600)
    np.testing.assert_allclose(med.delta, [0.3, 0.5], rtol=0, atol=1e-12)
    assert med.loss == pytest.approx(0.6) and med.clipped == {}
    assert krum.chosen in (1, 2, 4, 5)


def test_the_params_refuse_what_cannot_work() -> None:
    with pytest.raises(ValidationError, match="server_clip_norm needs an aggregation"):
        HomoLrParams(server_clip_norm=1.0)
    with pytest.raises(ValidationError, match="fedavg_clipped needs server_clip_norm"):
        HomoLrParams(aggregation="fedavg_clipped")
    with pytest.raises(ValidationError, match="dp_central_noise_multiplier needs aggregation"):
        HomoLrParams(aggregation="median", clip_norm=1.0, dp_central_noise_multiplier=1.0)
    with pytest.raises(ValidationError, match="trim_fraction"):
        HomoLrParams(aggregation="trimmed_mean", trim_fraction=0.5)
    assert HomoLrParams(aggregation="krum", krum_byzantine=2).krum_byzantine == 2


# --- a Byzantine client on default credit, three clients ---------------------------------


@pytest.fixture(scope="module")
def credit() -> tuple[list[Table], Table, float]:
    clients = [load(name) for name in CREDIT]
    test = load("default_credit_homo_test")
    honest = hmath.reference_fedavg(parts(clients), training(CREDIT_PARAMS), 3)
    return clients, test, auc_on(honest, test)


def _byzantine(monkeypatch: pytest.MonkeyPatch, n: int = 3) -> None:
    """Client n (the last) trains on flipped labels and sends its update boosted x n (the
    number of clients): the model-replacement attack, through whichever aggregation the job
    uses."""
    contribution = LocalClient.contribution

    def boosted(self: LocalClient, weights: Any, r: int) -> Any:
        if self.client_id != n:
            return contribution(self, weights, r)
        vector, facts = contribution(replace(self, y=1.0 - self.y), weights, r)
        k1 = weights.shape[0]
        return np.concatenate([n * vector[:k1], vector[k1:]]), facts

    monkeypatch.setattr(LocalClient, "contribution", boosted)


def _run_credit(tmp_path: Path, params: dict[str, Any], **sections: Any) -> StandaloneResult:
    spec = pipeline(CREDIT, "default_credit_homo_test", {**CREDIT_PARAMS, **params}, score=False)
    spec["components"][1]["params"].update(sections)
    return run_pipeline(
        Pipeline.from_dict(spec),
        dict.fromkeys(["9999", "10000", BYZANTINE], EXAMPLE_DATA),
        tmp_path / "run",
    )


def _model_auc(result: StandaloneResult, test: Table) -> float:
    model = result.output("9999", "guest", "homo_lr_0", "model")
    return auc_on(model.features[:, 0], test)


def _metric(result: StandaloneResult, name: str) -> dict[int, float]:
    return {
        m.step: m.value
        for m in result.metrics
        if m.component == "homo_lr_0" and m.name == name and m.party_id == "9999" and m.step >= 0
    }


def test_without_a_defence_the_boosted_update_wrecks_fedavg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, credit: tuple[list[Table], Table, float]
) -> None:
    # Prepare
    _, test, honest_auc = credit
    _byzantine(monkeypatch)

    # Execute: FedAvg over secure aggregation, no clipping
    result = _run_credit(tmp_path, {})

    # Assert: the attack matters (so the defences below are tested against something)
    auc = _model_auc(result, test)
    print(f"fedavg under attack {auc:.4f}, honest {honest_auc:.4f}")
    assert auc < honest_auc - 0.05


@pytest.mark.parametrize(
    ("rule", "extra"), [("median", {}), ("trimmed_mean", {"trim_fraction": 0.34})]
)
def test_median_and_trimmed_mean_neutralise_the_boosted_update(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    credit: tuple[list[Table], Table, float],
    rule: str,
    extra: dict[str, Any],
) -> None:
    # Prepare
    _, test, honest_auc = credit
    _byzantine(monkeypatch)

    # Execute
    result = _run_credit(tmp_path, {"aggregation": rule, **extra})

    # Assert: within 0.02 of the honest FedAvg run; every client in every round
    auc = _model_auc(result, test)
    print(f"{rule} under attack {auc:.4f}, honest {honest_auc:.4f}")
    assert auc >= honest_auc - 0.02
    assert _metric(result, "clients") == dict.fromkeys(range(3), 3.0)
    host = result.output("10000", "host", "homo_lr_0", "model")
    np.testing.assert_array_equal(
        host.features, result.output("9999", "guest", "homo_lr_0", "model").features
    )


def test_fedavg_with_server_clipping_clips_and_records_the_boosted_update(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    credit: tuple[list[Table], Table, float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare: a bound above every honest client's delta, below the boosted one's
    clients, test, honest_auc = credit
    norms = []
    for cid, (x, y) in enumerate(parts(clients[:2]), start=1):
        x1 = hmath.with_intercept(x)
        w0 = np.zeros(x1.shape[1])
        honest = hmath.local_sgd(w0, x1, y, training(CREDIT_PARAMS), (0, 0, cid))
        norms.append(float(np.linalg.norm(honest - w0)))
    bound = 1.25 * max(norms)
    _byzantine(monkeypatch)

    # Execute
    result = _run_credit(tmp_path, {"aggregation": "fedavg_clipped", "server_clip_norm": bound})

    # Assert: the Byzantine client (and only it) clipped in every round, recorded by name
    assert _metric(result, "server_clipped") == dict.fromkeys(range(3), 1.0)
    factors = _metric(result, f"server_clip_factor_{BYZANTINE}")
    assert sorted(factors) == [0, 1, 2]
    assert all(0.0 < f < 1.0 for f in factors.values())
    auc = _model_auc(result, test)
    print(f"fedavg_clipped under attack {auc:.4f}, honest {honest_auc:.4f}, factors {factors}")


def test_a_client_whose_policy_forbids_revealing_its_update_refuses_a_robust_job(
    tmp_path: Path,
) -> None:
    # Prepare: host 10001 may be seen only summed with another (min_summed_updates 2, as its
    # policy bound would demand); the guest aggregates for two hosts, fine under fedavg
    spec_params = {"aggregation": "median"}

    # Execute / Assert
    with pytest.raises(StandaloneError) as err:
        _run_credit(
            tmp_path, {**spec_params, "rounds": 1}, **{BYZANTINE: {"min_summed_updates": 2}}
        )
    text = str(err.value)
    assert "min_summed_updates" in text and "aggregation median" in text, text


def test_homo_nn_aggregates_by_median_too(tmp_path: Path) -> None:
    # Prepare: the built-in network on breast, guest + host, an arbiter would be a third
    params = {"rounds": 2, "batch_size": 32, "learning_rate": 0.1, "seed": 0, "hidden_units": 4}
    params |= {"aggregation": "median"}
    spec = pipeline(["breast_homo_guest", "breast_homo_host"], "breast_homo_test", params)
    spec["components"] = spec["components"][:2]
    spec["components"][1]["type"] = "homo_nn"
    test = load("breast_homo_test")

    # Execute
    result = run_pipeline(
        Pipeline.from_dict(spec), dict.fromkeys(["9999", "10000"], EXAMPLE_DATA), tmp_path / "r"
    )

    # Assert: one model at both parties (the median of two: their mean), better than chance
    guest = result.output("9999", "guest", "homo_lr_0", "model")
    host = result.output("10000", "host", "homo_lr_0", "model")
    np.testing.assert_array_equal(guest.features, host.features)
    assert nn_auc_on(guest.features[:, 0], test, 4) > 0.9


def test_a_nan_update_in_the_clear_takes_its_client_out_of_the_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: client 3's plain_update of round 0 arrives with NaN in it (its own check
    # bypassed: what a faulty or malicious client sends)
    send = BusFederation.send

    def poisoned(self: BusFederation, payload: Any, **kw: Any) -> None:
        if self.party_id == BYZANTINE and kw["tag"] == "plain_update" and kw["iteration"] == 0:
            array = np.array(payload.array)
            array[0] = np.nan
            payload = payload.model_copy(update={"array": array})
        send(self, payload, **kw)

    monkeypatch.setattr(BusFederation, "send", poisoned)

    # Execute
    result = _run_credit(tmp_path, {"aggregation": "median", "rounds": 2})

    # Assert: round 0 went on with the two others, round 1 with all three; the reason logged
    assert _metric(result, "clients") == {0: 2.0, 1: 3.0}
    assert _metric(result, "dropped") == {0: 1.0, 1: 0.0}
    dropped = [line for line in capsys.readouterr().out.splitlines() if "client_dropped" in line]
    assert len(dropped) == 1 and "1 NaN or infinite values" in dropped[0], dropped
    assert f"party_id={BYZANTINE}" in dropped[0]


def test_a_robust_run_with_an_arbiter_is_clean_under_every_partys_audit(tmp_path: Path) -> None:
    # Prepare: the arbiter example (three clients, arbiter 8888) with trimmed_mean and
    # server clipping: plain_update replaces the secure-aggregation messages
    spec = yaml.safe_load(ARBITER_EXAMPLE.read_text())
    (lr,) = [c for c in spec["components"] if c["type"] == "homo_lr"]
    lr["params"]["common"].update(
        rounds=2, aggregation="trimmed_mean", trim_fraction=0.34, server_clip_norm=1.0
    )
    text = yaml.safe_dump(spec, sort_keys=False)

    # Execute
    result, audited = run_audited(text, EXAMPLE_DATA, tmp_path / "run")

    # Assert: nothing above info at any party, live or post hoc; the chains verify
    assert_clean(result, audited)


def test_krum_never_picks_the_byzantine_clients_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: breast's 455 training rows in five parties (n = 5 = 2f + 3 for f = 1); client 5
    # is Byzantine
    header, *rows = [
        line
        for name in ("breast_homo_guest", "breast_homo_host")
        for line in (EXAMPLE_DATA / f"{name}.csv").read_text().splitlines()
    ]
    rows = [r for r in rows if r != header]
    parties = [str(9999 + i) for i in range(5)]
    folders = {}
    for party, chunk in zip(parties, np.array_split(np.arange(len(rows)), 5), strict=True):
        folders[party] = tmp_path / party
        folders[party].mkdir()
        csv = "\n".join([header, *(rows[i] for i in chunk)]) + "\n"
        (folders[party] / "breast_part.csv").write_text(csv)
    test = load("breast_homo_test")
    params = {"rounds": 3, "batch_size": 32, "learning_rate": 0.1, "alpha": 0.01, "seed": 3}
    tables = [read_table(folders[p] / "breast_part.csv") for p in parties]
    honest_auc = auc_on(hmath.reference_fedavg(parts(tables), training(params), 3), test)
    spec = pipeline(["breast_part"] * 5, "breast_homo_test", params, score=False)
    spec["components"][1]["params"]["common"].update(aggregation="krum", krum_byzantine=1)
    _byzantine(monkeypatch, n=5)

    # Execute
    result = run_pipeline(Pipeline.from_dict(spec), folders, tmp_path / "run")

    # Assert: every round took an honest client's update; the model is as good as honest FedAvg
    chosen = _metric(result, "krum_chosen")
    assert sorted(chosen) == [0, 1, 2] and 5.0 not in chosen.values(), chosen
    auc = _model_auc(result, test)
    print(f"krum under attack {auc:.4f} (chose {chosen}), honest {honest_auc:.4f}")
    assert auc >= honest_auc - 0.02


def test_krum_with_too_few_clients_is_refused_at_the_start(tmp_path: Path) -> None:
    # Execute: three clients cannot give Krum f = 1 (it needs 2f + 3 = 5)
    with pytest.raises(StandaloneError) as err:
        _run_credit(tmp_path, {"aggregation": "krum", "krum_byzantine": 1, "rounds": 1})

    # Assert
    assert "krum_byzantine 1 needs at least 5 clients (2f + 3), this job has 3" in str(err.value)
