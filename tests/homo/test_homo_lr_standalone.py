"""homo_lr end to end in standalone mode (every party in this process, every message through
the signed LocalRelay and each party's protocol guard): quality against the pooled rows, a
client that drops out mid-round, clients whose updates are NaN or of the wrong shape."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fedflow.bus_federation import BusFederation
from fedflow.components.homo_lr import math as hmath
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, StandaloneResult, run_pipeline
from fedflow.tables import Table, read_table

from tests.homo.conftest import EXAMPLE_DATA, auc_on, load, parts, pipeline, training

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/pipelines/homo_lr.yaml"
CREDIT = ["default_credit_homo_guest", "default_credit_homo_host_1", "default_credit_homo_host_2"]
BREAST_PARAMS: dict[str, Any] = {
    "rounds": 3,
    "local_epochs": 1,
    "batch_size": 32,
    "learning_rate": 0.1,
    "alpha": 0.01,
    "seed": 3,
}


def _run(
    spec: dict[str, Any], tmp_path: Path, folders: dict[str, Path] | None = None
) -> StandaloneResult:
    parties = [spec["parties"]["guest"], *spec["parties"]["host"]]
    data = folders or dict.fromkeys(parties, EXAMPLE_DATA)
    return run_pipeline(Pipeline.from_dict(spec), data, tmp_path / "run")


def _models(result: StandaloneResult, spec: dict[str, Any]) -> list[Table]:
    guest, hosts = spec["parties"]["guest"], spec["parties"]["host"]
    return [
        result.output(guest, "guest", "homo_lr_0", "model"),
        *(result.output(h, "host", "homo_lr_0", "model") for h in hosts),
    ]


def _steps(result: StandaloneResult, name: str) -> dict[int, float]:
    return {
        m.step: m.value
        for m in result.metrics
        if m.component == "homo_lr_0" and m.name == name and m.party_id == "9999" and m.step >= 0
    }


def _breast_three_clients(tmp_path: Path) -> tuple[dict[str, Path], list[Table]]:
    """The breast guest's rows split in two clients (9999, 10000), the host's rows a third
    (10001): each party its own folder."""
    lines = (EXAMPLE_DATA / "breast_homo_guest.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    half = len(rows) // 2
    folders = {}
    for party, content in (("9999", rows[:half]), ("10000", rows[half:])):
        folder = tmp_path / party
        folder.mkdir()
        (folder / "breast_part.csv").write_text("\n".join([header, *content]) + "\n")
        (folder / "breast_homo_test.csv").write_text(
            (EXAMPLE_DATA / "breast_homo_test.csv").read_text()
        )
        folders[party] = folder
    folder = tmp_path / "10001"
    folder.mkdir()
    for name in ("breast_homo_host", "breast_homo_test"):
        (folder / f"{name}.csv").write_text((EXAMPLE_DATA / f"{name}.csv").read_text())
    (folder / "breast_part.csv").write_text((EXAMPLE_DATA / "breast_homo_host.csv").read_text())
    folders["10001"] = folder
    tables = [read_table(folders[p] / "breast_part.csv") for p in ("9999", "10000", "10001")]
    return folders, tables


def test_default_credit_three_clients_match_pooled_training_and_beat_each_party_alone(
    tmp_path: Path,
) -> None:
    # Prepare: three clients of 8,000 customers each; the references in plaintext
    params = {"rounds": 5, "local_epochs": 2, "batch_size": 256, "learning_rate": 0.1, "seed": 0}
    spec = pipeline(CREDIT, "default_credit_homo_test", params, score=False)
    clients = [load(name) for name in CREDIT]
    test = load("default_credit_homo_test")
    fedavg = hmath.reference_fedavg(parts(clients), training(params), params["rounds"])
    x = np.vstack([c.features for c in clients])
    y = np.concatenate([p[1] for p in parts(clients)])
    pooled_auc = auc_on(hmath.reference_pooled(x, y, training(params), params["rounds"]), test)
    own_aucs = [
        auc_on(hmath.reference_pooled(fx, fy, training(params), params["rounds"]), test)
        for fx, fy in parts(clients)
    ]

    # Execute
    result = _run(spec, tmp_path)

    # Assert: one model at every party, FedAvg's (secure aggregation changes nothing that
    # matters), as good as training on the pooled rows and better than any party alone
    models = _models(result, spec)
    for model in models:
        assert model.ids.tolist() == [*clients[0].feature_names, "intercept"]
        np.testing.assert_allclose(model.features[:, 0], fedavg, rtol=0, atol=1e-9)
    federated_auc = auc_on(models[0].features[:, 0], test)
    print(f"federated {federated_auc:.5f} pooled {pooled_auc:.5f} own {own_aucs}")
    assert abs(federated_auc - pooled_auc) <= 0.005
    assert federated_auc > max(own_aucs)
    assert _steps(result, "clients") == dict.fromkeys(range(5), 3.0)
    losses = _steps(result, "loss")
    assert losses[4] < losses[0]


def _losing_masked_inputs(monkeypatch: pytest.MonkeyPatch, lost: dict[int, set[str]]) -> None:
    """Party p's masked input of round r is lost when p is in lost[r]: it went away mid-round,
    after sharing its keys (the step whose loss secure aggregation's recovery is for)."""
    send = BusFederation.send

    def lose_masked_input(self: BusFederation, payload: Any, **kw: Any) -> None:
        if kw["tag"] == "sa_masked" and self.party_id in lost.get(kw["iteration"], set()):
            return
        send(self, payload, **kw)

    monkeypatch.setattr(BusFederation, "send", lose_masked_input)


def test_one_of_three_clients_dropping_out_in_every_round_keeps_the_auc_of_no_dropout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: three clients; in every round one host shares its keys, then its masked input
    # is lost (hosts 10000 and 10001 in turn: each is back the round after it dropped)
    folders, tables = _breast_three_clients(tmp_path)
    params = {**BREAST_PARAMS, "round_timeout_s": 2.0}
    spec = pipeline(["breast_part"] * 3, "breast_homo_test", params)
    test = load("breast_homo_test")
    _losing_masked_inputs(monkeypatch, {0: {"10000"}, 1: {"10001"}, 2: {"10000"}})
    expected = hmath.reference_fedavg(
        parts(tables), training(params), 3, skip=[(0, 1), (1, 2), (2, 1)]
    )
    no_dropout = hmath.reference_fedavg(parts(tables), training(params), 3)

    # Execute
    result = _run(spec, tmp_path, folders)

    # Assert: every round completed with the two others (the dropped client's pairwise masks
    # recovered from their shares), its sum exactly theirs; every party ends with that model,
    # whose test AUC is within 0.01 of the run without dropouts
    assert _steps(result, "dropped") == {0: 1.0, 1: 1.0, 2: 1.0}
    assert _steps(result, "clients") == {0: 2.0, 1: 2.0, 2: 2.0}
    for model in _models(result, spec):
        np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)
    assert abs(result.metric("eval_0", "auc") - auc_on(no_dropout, test)) <= 0.01


def test_ten_clients_sum_securely_and_three_may_drop_out_of_a_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: breast's 455 training rows in ten parties; in round 1 three hosts (a third, the
    # most that may drop: the threshold is 10 - 3 = 7) share their keys and go away
    header, *rows = [
        line
        for name in ("breast_homo_guest", "breast_homo_host")
        for line in (EXAMPLE_DATA / f"{name}.csv").read_text().splitlines()
    ]
    rows = [r for r in rows if r != header]
    parties = [str(9999 + i) for i in range(10)]
    folders = {}
    for party, chunk in zip(parties, np.array_split(np.arange(len(rows)), 10), strict=True):
        folders[party] = tmp_path / party
        folders[party].mkdir()
        csv = "\n".join([header, *(rows[i] for i in chunk)]) + "\n"
        (folders[party] / "breast_part.csv").write_text(csv)
    tables = [read_table(folders[p] / "breast_part.csv") for p in parties]
    params = {**BREAST_PARAMS, "rounds": 2, "round_timeout_s": 2.0}
    spec = pipeline(["breast_part"] * 10, "breast_homo_test", params, score=False)
    _losing_masked_inputs(monkeypatch, {1: set(parties[7:])})
    expected = hmath.reference_fedavg(
        parts(tables), training(params), 2, skip=[(1, 7), (1, 8), (1, 9)]
    )

    # Execute
    result = _run(spec, tmp_path, folders)

    # Assert: round 0 summed all ten clients, round 1 the seven others; every party ends with
    # FedAvg's model of each round's sum
    assert _steps(result, "clients") == {0: 10.0, 1: 7.0}
    assert _steps(result, "dropped") == {0: 0.0, 1: 3.0}
    for model in _models(result, spec):
        np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)


def test_nan_or_wrong_shape_updates_sit_out_their_round_and_the_round_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: client 2's local training diverges to NaN in round 0; client 3 produces a
    # model of the wrong length in round 1
    folders, tables = _breast_three_clients(tmp_path)
    spec = pipeline(["breast_part"] * 3, "breast_homo_test", BREAST_PARAMS)
    expected = hmath.reference_fedavg(
        parts(tables), training(BREAST_PARAMS), 3, skip=[(0, 1), (1, 2)]
    )
    local_sgd = hmath.local_sgd

    def faulty(weights: Any, x1: Any, y: Any, train: Any, stream: Any) -> Any:
        w = local_sgd(weights, x1, y, train, stream)
        if tuple(stream[1:]) == (0, 2):
            return np.full_like(w, np.nan)
        if tuple(stream[1:]) == (1, 3):
            return w[:-1]
        return w

    monkeypatch.setattr(hmath, "local_sgd", faulty)

    # Execute
    result = _run(spec, tmp_path, folders)

    # Assert: each faulty client reports its rejected update; the rounds went on without it
    rejected = {
        (m.party_id, m.step)
        for m in result.metrics
        if m.component == "homo_lr_0" and m.name == "rejected_update"
    }
    assert rejected == {("10000", 0), ("10001", 1)}
    assert _steps(result, "clients") == {0: 2.0, 1: 2.0, 2: 3.0}
    for model in _models(result, spec):
        np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)


def test_the_breast_example_is_as_good_as_pooled_training(tmp_path: Path) -> None:
    # Prepare: examples/pipelines/homo_lr.yaml as it is (two parties)
    spec = yaml.safe_load(EXAMPLE.read_text())
    (lr,) = [c for c in spec["components"] if c["type"] == "homo_lr"]
    params = lr["params"]["common"]
    clients = [load("breast_homo_guest"), load("breast_homo_host")]
    x = np.vstack([c.features for c in clients])
    y = np.concatenate([p[1] for p in parts(clients)])
    pooled = hmath.reference_pooled(x, y, training(params), params["rounds"])

    # Execute
    result = _run(spec, tmp_path)

    # Assert
    federated_auc = result.metric("eval_0", "auc")
    pooled_auc = auc_on(pooled, load("breast_homo_test"))
    print(f"breast: federated {federated_auc:.5f} pooled {pooled_auc:.5f}")
    assert abs(federated_auc - pooled_auc) <= 0.005


def test_norm_clipping_and_early_stopping_on_the_aggregated_loss(tmp_path: Path) -> None:
    # Prepare: every update clipped to norm 0.05; stop once the loss improves by < 0.02
    params = {**BREAST_PARAMS, "rounds": 20, "clip_norm": 0.05, "early_stop": True, "tol": 0.02}
    spec = pipeline(["breast_homo_guest", "breast_homo_host"], "breast_homo_test", params)
    clients = [load("breast_homo_guest"), load("breast_homo_host")]

    # Execute
    result = _run(spec, tmp_path)

    # Assert: stopped at the first round whose loss improved by less than tol, with the
    # clipped FedAvg model of the rounds run
    losses = _steps(result, "loss")
    ran = int(result.metric("homo_lr_0", "rounds", "9999"))
    assert 2 <= ran < 20 and sorted(losses) == list(range(ran))
    gains = [losses[r - 1] - losses[r] for r in range(1, ran)]
    assert all(g >= 0.02 for g in gains[:-1]) and gains[-1] < 0.02
    assert result.metric("homo_lr_0", "rounds", "10000") == ran
    expected = hmath.reference_fedavg(parts(clients), training(params), ran, clip=0.05)
    for model in _models(result, spec):
        np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)
    clipped = [m for m in result.metrics if m.name == "clipped_update" and m.value == 1.0]
    assert len(clipped) == 2 * ran  # both clients' updates, every round


def test_an_arbiter_named_in_the_pipeline_aggregates_and_every_client_gets_fedavgs_model(
    tmp_path: Path,
) -> None:
    # Prepare: three clients; the arbiter (no data) is a party of its own
    arbiter = "8888"
    folders, tables = _breast_three_clients(tmp_path)
    spec = pipeline(["breast_part"] * 3, "breast_homo_test", BREAST_PARAMS, arbiter=arbiter)
    expected = hmath.reference_fedavg(parts(tables), training(BREAST_PARAMS), 3)

    # Execute
    result = _run(spec, tmp_path, folders)

    # Assert: the arbiter ran the rounds with all three clients; the guest was a client
    arbiter_clients = {
        m.step: m.value
        for m in result.metrics
        if m.name == "clients" and m.party_id == arbiter and m.step >= 0
    }
    assert arbiter_clients == {0: 3.0, 1: 3.0, 2: 3.0}
    tasks = {(t.party_id, t.role) for t in result.tasks if t.component == "homo_lr_0"}
    assert (arbiter, "arbiter") in tasks
    for model in _models(result, spec):
        np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)
    # The guest's masked vectors crossed to the arbiter, as the hosts' did
    sent = {(c.source, c.destination) for c in result.crossings if c.tag == "sa_masked"}
    assert sent == {("9999", "8888"), ("10000", "8888"), ("10001", "8888")}


def test_a_client_whose_columns_differ_from_the_guests_fails_naming_its_columns(
    tmp_path: Path,
) -> None:
    # Prepare: the host's file with two columns swapped
    folders, _ = _breast_three_clients(tmp_path)
    host = folders["10000"] / "breast_part.csv"
    rows = [line.split(",") for line in host.read_text().splitlines()]
    host.write_text("\n".join(",".join([*r[:2], r[3], r[2], *r[4:]]) for r in rows) + "\n")
    spec = pipeline(["breast_part"] * 3, "breast_homo_test", {**BREAST_PARAMS, "rounds": 1})

    # Execute / Assert
    with pytest.raises(StandaloneError, match=r"10000.*feature columns differ.*here: x1, x0, x2"):
        _run(spec, tmp_path, folders)


def test_fedprox_with_fedyogi_on_the_server_gives_the_reference_model(tmp_path: Path) -> None:
    # Prepare: the proximal term at every client, FedYogi at the aggregator
    params = {
        **BREAST_PARAMS,
        "proximal_mu": 0.1,
        "server_optimizer": "yogi",
        "server_learning_rate": 0.05,
    }
    spec = pipeline(["breast_homo_guest", "breast_homo_host"], "breast_homo_test", params)
    clients = [load("breast_homo_guest"), load("breast_homo_host")]
    rule = hmath.ServerRule("yogi", learning_rate=0.05)
    local = replace(training(params), proximal_mu=0.1)
    expected = hmath.reference_fedavg(parts(clients), local, 3, server=rule)
    plain = hmath.reference_fedavg(parts(clients), training(params), 3)

    # Execute
    result = _run(spec, tmp_path)

    # Assert: the reference of these options, not FedAvg's model
    for model in _models(result, spec):
        np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)
    assert float(np.max(np.abs(expected - plain))) > 1e-3
    assert result.metric("eval_0", "auc") > 0.95


def test_a_host_asking_for_two_summed_updates_refuses_the_guest_aggregating_for_it_alone(
    tmp_path: Path,
) -> None:
    # Prepare: the guest aggregates for one host; the host's own params ask for 2
    spec = pipeline(["breast_homo_guest", "breast_homo_host"], "breast_homo_test", BREAST_PARAMS)
    spec["components"][1]["params"]["10000"] = {"min_summed_updates": 2}

    # Execute / Assert: the host fails before it sends anything, naming the way out
    with pytest.raises(StandaloneError, match=r"10000.*min_summed_updates is 2.*name an arbiter"):
        _run(spec, tmp_path)
