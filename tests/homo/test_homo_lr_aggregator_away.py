"""A homo_lr client rides out an aggregator that is away longer than the receive timeout: it
waits again with backoff (client.AggregatorLink) instead of failing its task. In standalone
mode with a 0.3 s receive timeout; the RabbitMQ test (test_homo_lr_rabbitmq.py) kills the
aggregator's worker process and restarts it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.bus_federation import BusFederation
from fedflow.components.homo_lr import math as hmath
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneError, run_pipeline
from structlog.testing import capture_logs

from tests.homo.conftest import EXAMPLE_DATA, load, parts, pipeline, training

TABLES = ["breast_homo_guest", "breast_homo_host"]
PARAMS: dict[str, Any] = {"rounds": 2, "batch_size": 32, "learning_rate": 0.1, "seed": 2}
AWAY_S = 1.2
RECV_TIMEOUT_S = 0.3


def test_a_client_waits_out_an_aggregator_away_longer_than_its_receive_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the aggregator (the guest) goes quiet for 2 s before round 1's global model,
    # against a 0.3 s receive timeout at every party
    spec = pipeline(TABLES, "breast_homo_test", PARAMS, score=False)
    expected = hmath.reference_fedavg(
        parts([load(t) for t in TABLES]), training(PARAMS), PARAMS["rounds"]
    )
    send = BusFederation.send

    def away_before_round_1(self: BusFederation, payload: Any, **kw: Any) -> None:
        if self.role == "guest" and kw["tag"] == "global_model" and kw["iteration"] == 1:
            time.sleep(AWAY_S)
        send(self, payload, **kw)

    monkeypatch.setattr(BusFederation, "send", away_before_round_1)

    # Execute
    with capture_logs() as logs:
        result = run_pipeline(
            Pipeline.from_dict(spec),
            dict.fromkeys(["9999", "10000"], EXAMPLE_DATA),
            tmp_path / "run",
            recv_timeout=RECV_TIMEOUT_S,
        )

    # Assert: the host timed out waiting for round 1's model, waited again (longer each time:
    # attempts 1, 2, ...) and took it when it came; both parties end with FedAvg's model. (On a
    # loaded machine other steps may outlast 0.3 s too: they are waited out the same way.)
    waits = [e for e in logs if e["event"] == "aggregator_unreachable"]
    away = [e["attempt"] for e in waits if (e["tag"], e["round"]) == ("global_model", 1)]
    assert away == list(range(1, len(away) + 1)) and away
    assert {e["party_id"] for e in waits} == {"10000"}
    for party, role in (("9999", "guest"), ("10000", "host")):
        model = result.output(party, role, "homo_lr_0", "model")
        np.testing.assert_allclose(model.features[:, 0], expected, rtol=0, atol=1e-9)


def test_a_client_gives_up_once_the_aggregator_is_away_past_aggregator_wait_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the same quiet aggregator, but the host waits at most 0.5 s in all
    params = {**PARAMS, "aggregator_wait_s": 0.5, "round_timeout_s": 1.0}
    spec = pipeline(TABLES, "breast_homo_test", params, score=False)
    send = BusFederation.send

    def away_before_round_1(self: BusFederation, payload: Any, **kw: Any) -> None:
        if self.role == "guest" and kw["tag"] == "global_model" and kw["iteration"] == 1:
            time.sleep(AWAY_S)
        send(self, payload, **kw)

    monkeypatch.setattr(BusFederation, "send", away_before_round_1)

    # Execute / Assert: the host's task fails, saying what it waited for and which setting
    with pytest.raises(StandaloneError, match=r"(?s)10000 \(host\).*aggregator_wait_s \(0.5 s\)"):
        run_pipeline(
            Pipeline.from_dict(spec),
            dict.fromkeys(["9999", "10000"], EXAMPLE_DATA),
            tmp_path / "run",
            recv_timeout=RECV_TIMEOUT_S,
        )
