"""Issue #15's serving bullets that no other test pinned down, in one process on
test_serving_units' wiring (two parties' Serving objects, SQLite registries, the real Redis):
every request is counted by service, version, party and outcome (the guest's own outcome and
each host call's); a host's answer to a hetero_lr partial-score call holds its partial
scores and nothing else; a PyTorch homo_nn model is refused at publish; a deleted version is
gone and a rollback never returns to it; two publishes racing for a version never join two
jobs' parts; the Grafana serving dashboard shows what the issue asks of it."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
from fedflow.components.hetero_lr.session import INTERCEPT, model_table
from fedflow.tables import Table
from fedserving.handlers import Serving

from tests.serving.test_serving_units import (
    GUEST,
    HOST,
    HOST_ROWS,
    W_GUEST,
    W_HOST,
    Wire,
    client,
    ok,
    refused,
    rows,
    two,
)

__all__ = ["client", "two"]  # the fixtures test_serving_units defines, used here by name

REPO = Path(__file__).resolve().parents[2]


def requests_counted(serving: Serving, version: int, party: str, outcome: str) -> float:
    value = serving.metrics.registry.get_sample_value(
        "fedmq_serving_requests_total",
        {"service": "s", "version": str(version), "party": party, "outcome": outcome},
    )
    return value or 0.0


def test_every_request_is_counted_by_service_version_party_and_outcome(
    two: tuple[Wire, Serving, Serving],
) -> None:
    # Prepare: two versions of the model; service s on version 1
    wire, guest, host = two
    host.accept_models_from = ("*",)
    for _ in range(2):
        ok(guest, "model_publish", job_id="job-1", name="credit")
    ok(guest, "service_bind", service_id="s", name="credit", version=1)

    # Execute: one request answered on version 1; then on version 2 a two-row batch answered,
    # an id the host lacks, a feature missing, the host silent, the caller over its limit
    ok(guest, "predict", service_id="s", rows=rows("a"))
    ok(guest, "service_switch", service_id="s", version=2)
    ok(guest, "predict", service_id="s", rows=rows("a", "b"), caller="c1")
    assert refused(guest, "predict", service_id="s", rows=rows("zz"))[0] == 404
    bad = [{"id": "a", "features": {"x0": 1.0}}]
    assert refused(guest, "predict", service_id="s", rows=bad)[0] == 422
    wire.down.add(HOST)
    assert refused(guest, "predict", service_id="s", rows=rows("b"))[0] == 503
    wire.down.clear()
    assert refused(guest, "predict", service_id="s", rows=rows(*["a"] * 51), caller="c2")[0] == 429

    # Assert: the guest's outcome with party = the guest, each host call's with party = the host
    counted = {
        (version, party, outcome): requests_counted(guest, version, party, outcome)
        for version in (1, 2)
        for party in (GUEST, HOST)
        for outcome in ("ok", "not_found", "bad_features", "timeout", "unavailable")
    }
    assert {k: v for k, v in counted.items() if v} == {
        (1, GUEST, "ok"): 1.0,
        (1, HOST, "ok"): 1.0,
        (2, GUEST, "ok"): 1.0,
        (2, HOST, "ok"): 1.0,
        (2, HOST, "not_found"): 1.0,
        (2, GUEST, "not_found"): 1.0,
        (2, GUEST, "bad_features"): 1.0,  # refused before any host call
        (2, HOST, "timeout"): 1.0,
        (2, GUEST, "unavailable"): 1.0,
    }
    assert requests_counted(guest, 2, GUEST, "rate_limited") == 1.0
    registry = guest.metrics.registry
    assert (
        registry.get_sample_value("fedmq_serving_rows_total", {"service": "s", "version": "1"}) == 1
    )
    assert (
        registry.get_sample_value("fedmq_serving_rows_total", {"service": "s", "version": "2"}) == 2
    )
    # The host counts each guest's calls by model version and outcome, and the rows it scored
    at_host = host.metrics.registry
    partial = "fedmq_serving_partial_requests_total"
    assert (
        at_host.get_sample_value(
            partial, {"caller_party": GUEST, "model": "credit:1", "outcome": "ok"}
        )
        == 1
    )
    assert (
        at_host.get_sample_value(
            partial, {"caller_party": GUEST, "model": "credit:2", "outcome": "ok"}
        )
        == 1
    )
    assert (
        at_host.get_sample_value(
            partial, {"caller_party": GUEST, "model": "credit:2", "outcome": "not_found"}
        )
        == 1
    )
    assert (
        at_host.get_sample_value("fedmq_serving_partial_rows_total", {"caller_party": GUEST}) == 3
    )


def test_a_hosts_answer_to_a_partial_call_holds_its_partial_scores_and_nothing_else(
    two: tuple[Wire, Serving, Serving],
) -> None:
    # Prepare: the model accepted at the host
    _, guest, host = two
    host.accept_models_from = ("*",)
    ok(guest, "model_publish", job_id="job-1", name="credit")
    call = {"op": "partial", "name": "credit", "version": 1, "ids": ["a", "c"]}

    # Execute: the call the guest's serving sends through the gateways
    answer = json.loads(host.remote(GUEST, json.dumps(call).encode()))

    # Assert: u_h = x_h·w_h per id (a missing value as 0), no weight, feature name or value
    assert answer["ok"] is True and list(answer["data"]) == ["scores"]
    x = np.nan_to_num(np.array([HOST_ROWS["a"], HOST_ROWS["c"]]))
    np.testing.assert_allclose(answer["data"]["scores"], x @ W_HOST, atol=1e-12)
    text = json.dumps(answer)
    assert not any(name in text for name in ("h0", "h1", "weights"))


def test_a_deleted_version_is_gone_and_rollback_never_returns_to_it(
    two: tuple[Wire, Serving, Serving],
) -> None:
    # Prepare: versions 1 and 2; the service switched from 1 to 2
    _, guest, host = two
    host.accept_models_from = ("*",)
    for _ in range(3):
        ok(guest, "model_publish", job_id="job-1", name="credit")
    ok(guest, "service_bind", service_id="s", name="credit", version=1)
    ok(guest, "service_switch", service_id="s", version=2)

    # Execute: version 3 (never bound) and version 1 (the one a rollback would return to)
    # deleted, then a rollback asked for
    ok(guest, "model_delete", name="credit", version=3)
    ok(guest, "model_delete", name="credit", version=1)
    status, error = refused(guest, "service_rollback", service_id="s")

    # Assert: both gone from the registry, each delete recorded; the rollback refused
    # naming the missing version, and the service still answers on version 2
    listed = ok(guest, "model_list", name="credit")["data"]
    assert [m["version"] for m in listed] == [2]
    assert refused(guest, "model_show", name="credit", version=1)[0] == 404
    deletes = [e["version"] for e in ok(guest, "events")["data"] if e["action"] == "delete"]
    assert deletes == [3, 1]
    assert status == 409 and "version 1" in error
    assert ok(guest, "predict", service_id="s", rows=rows("a"))["results"][0]["version"] == 2


def test_the_serving_dashboard_shows_traffic_latency_errors_and_mass_queries() -> None:
    # Prepare: each panel's queries, with the labels each one groups by
    dashboard = json.loads((REPO / "infra/grafana/dashboards/serving.json").read_text())
    shown: list[tuple[str, frozenset[str]]] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            grouped = re.findall(r"by \(([^)]*)\)", expr)
            labels = frozenset(x.strip() for g in grouped for x in g.split(","))
            shown += [(name, labels) for name in re.findall(r"fedmq_serving_\w+", expr)]

    def grouped_by(metric: str, *labels: str) -> bool:
        return any(name == metric and set(labels) <= got for name, got in shown)

    # Assert: what issue #15 asks the dashboard to show, by service and version where asked
    assert grouped_by("fedmq_serving_requests_total", "service", "version")  # QPS
    assert grouped_by("fedmq_serving_request_seconds_bucket", "le", "service", "version")
    assert grouped_by("fedmq_serving_requests_total", "party", "outcome")  # errors by cause
    # a guest scoring rows en masse shows per calling party at the host, and refusals by limit
    assert grouped_by("fedmq_serving_partial_rows_total", "caller_party")
    assert grouped_by("fedmq_serving_rate_limited_total", "kind")


def test_two_publishes_racing_for_one_version_never_join_parts_of_different_jobs(
    two: tuple[Wire, Serving, Serving],
) -> None:
    # Prepare: a second job with other weights at both parties; the guest's calls ordered so
    # that two publishes of one name both take version 1 (each reads the next version before
    # either wrote it), the host accepts job-1's proposal and refuses job-2's, and the guest
    # stores job-2's publish first
    wire, guest, host = two
    host.accept_models_from = ("*",)
    guest.artifacts.put(
        "job-2",
        "hetero_lr_0",
        GUEST,
        "guest",
        "model",
        model_table(["x0", "x1", INTERCEPT], 3 * W_GUEST),
        0,
    )
    host.artifacts.put(
        "job-2", "hetero_lr_0", HOST, "host", "model", model_table(["h0", "h1"], 3 * W_HOST), 0
    )
    first_proposed, second_stored = threading.Event(), threading.Event()
    to_host = wire.caller(GUEST)

    def ordered(party: str, service: str, body: bytes, timeout: float) -> bytes:
        job = json.loads(body).get("job_id")
        if job == "job-2":
            assert first_proposed.wait(5)
        reply = to_host(party, service, body, timeout)
        if job == "job-1":
            first_proposed.set()
            assert second_stored.wait(5)
        return reply

    guest.call = ordered
    answers: dict[str, dict[str, object]] = {}

    def publish(job: str) -> None:
        answers[job] = guest.local(
            {"op": "model_publish", "args": {"job_id": job, "name": "credit"}}
        )
        if job == "job-2":
            second_stored.set()

    # Execute: both at once; then the guest's operator looks at version 1 (which asks the
    # hosts that had not accepted again)
    threads = [threading.Thread(target=publish, args=(job,)) for job in ("job-1", "job-2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    guest.call = to_host
    shown = ok(guest, "model_show", name="credit", version=1)

    # Assert: version 1 is job-2's at the guest and job-1's at the host: it must not become
    # ready (bound, it would add job-1's host score to job-2's guest score)
    assert answers["job-1"]["status"] == 409  # the guest's version 1 exists already
    assert shown["job_id"] == "job-2"
    assert ok(host, "model_show", name="credit", version=1, owner_party=GUEST)["job_id"] == "job-1"
    assert shown["state"] != "ready"
    assert refused(guest, "service_bind", service_id="s", name="credit", version=1)[0] == 409


def test_a_pytorch_homo_nn_model_is_refused_and_nothing_is_published(
    two: tuple[Wire, Serving, Serving],
) -> None:
    # Prepare: a homo_nn job's model table as the PyTorch learner writes it (one row per
    # element of each named parameter, `torch.<name>.<i>`)
    _, guest, _ = two
    names = [f"torch.fc.weight.{i}" for i in range(4)] + ["torch.fc.bias.0"]
    table = Table(
        ids=np.array(names, dtype=np.str_),
        features=np.arange(5, dtype=np.float64).reshape(-1, 1),
        feature_names=["weight"],
        labels=None,
    )
    guest.artifacts.put("torch-job", "homo_nn_0", GUEST, "guest", "model", table, 0)

    # Execute: published at the guest alone, as a built-in network would be
    status, error = refused(
        guest,
        "model_publish",
        job_id="torch-job",
        name="torch",
        component="homo_nn_0",
        guest_only=True,
    )

    # Assert: 422 naming why (scoring it would run the module in the serving service); no
    # version and no event recorded
    assert status == 422 and "PyTorch" in error
    assert ok(guest, "model_list")["data"] == []
    assert ok(guest, "events")["data"] == []
