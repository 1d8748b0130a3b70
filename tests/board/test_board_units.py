"""The board's parts that need no stack: the vendored files are the pinned npm releases, the
login's redirect stays on the board, sessions end, every page and panel is found by the
registry, and the DAG drawing puts upstream components left of their downstream ones."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fedgateway import board
from fedgateway.api.board_data import charts_from, dag_from
from fedgateway.board import auth, dag_svg, registry, views

STATIC = Path(board.__file__).parent / "static"


def test_every_vendored_file_is_the_pinned_release_with_its_licence() -> None:
    manifest = json.loads((STATIC / "VENDOR.json").read_text())
    listed = set()
    for package in manifest["packages"]:
        assert package["tarball"].endswith(f"-{package['version']}.tgz")
        assert package["integrity"].startswith("sha512-")
        assert any(name.endswith("LICENSE") for name in package["files"]), package["name"]
        for name, spec in package["files"].items():
            data = (STATIC / "vendor" / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == spec["sha256"], name
            listed.add(name)
    on_disk = {
        str(p.relative_to(STATIC / "vendor")) for p in (STATIC / "vendor").rglob("*") if p.is_file()
    }
    assert on_disk == listed


def test_the_login_only_redirects_to_a_page_of_the_board() -> None:
    assert auth.safe_next("/board/jobs/j1?x=1") == "/board/jobs/j1?x=1"
    for bad in (
        "https://evil.example/",
        "//evil.example/board/",
        "/api/v1/jobs",
        None,
        "",
        "/board/\\evil",
        "/board/x\r\nSet-Cookie: a=b",
    ):
        assert auth.safe_next(bad) == "/board/jobs", bad


def test_a_session_ends_at_logout_and_after_its_lifetime() -> None:
    sessions = auth.Sessions(ttl_s=0.0)
    assert sessions.token(sessions.open("t")) is None
    sessions = auth.Sessions(limit=2)
    first, second, third = (sessions.open(t) for t in ("a", "b", "c"))
    assert sessions.token(first) is None  # the oldest went when the limit was reached
    assert (sessions.token(second), sessions.token(third)) == ("b", "c")
    sessions.close(third)
    assert sessions.token(third) is None


def test_the_registry_finds_every_page_and_panel() -> None:
    assert [p.slug for p in registry.pages() if p.nav] == [
        "jobs",
        "data",
        "serving",
        "audit",
        "site",
    ]
    assert [p.slug for p in registry.panels()] == [
        "params",
        "log",
        "metrics",
        "confusion",
        "binning",
        "charts",
        "trees",
        "crossed",
    ]


def test_the_serving_page_is_offered_where_the_gateway_has_the_serving_api() -> None:
    from fastapi import APIRouter, FastAPI
    from fedgateway.api import serving
    from fedgateway.board.pages.serving import has_serving_api

    with_api, without = FastAPI(), FastAPI()
    with_api.include_router(serving.router, prefix="/api/v1")
    without.include_router(APIRouter(prefix="/other"), prefix="/api/v1")
    assert has_serving_api(with_api) and not has_serving_api(without)


def test_times_from_read_models_are_shown_whatever_their_form() -> None:
    assert views.short_time("2026-12-07T01:02:03+00:00") == "2026-12-07 01:02:03 UTC"
    assert views.short_time(0) == "1970-01-01 00:00:00 UTC"
    assert views.short_time("yesterday") == "yesterday"
    assert views.duration("2026-12-07T01:00:00", "2026-12-07T02:03:04") == "1h 03m"
    assert views.duration("2026-12-07T01:00:00", "2026-12-07T01:00:09") == "9s"


def job(components: list[dict[str, object]]) -> dict[str, object]:
    return {"job_id": "j", "state": "running", "attempt": 1, "components": components}


def task(component: str, party: str, state: str, attempt: int = 0) -> dict[str, object]:
    return {
        "component": component,
        "component_type": "t",
        "party_id": party,
        "state": state,
        "attempt": attempt,
    }


def test_the_dag_takes_each_partys_latest_attempt_and_lays_out_upstream_first() -> None:
    comps = [
        {"name": "reader_0", "type": "reader", "inputs": {}, "params": {}},
        {"name": "psi_0", "type": "psi", "inputs": {"data": "reader_0.data"}, "params": {}},
        {"name": "eval_0", "type": "evaluation", "inputs": {"data": "psi_0.data"}, "params": {}},
    ]
    tasks = [
        task("reader_0", "1", "success"),
        task("reader_0", "2", "success"),
        task("psi_0", "1", "failed", 0),
        task("psi_0", "1", "success", 1),
        task("psi_0", "2", "running", 1),
    ]
    dag = dag_from(job(comps), tasks)
    states = {n.name: (n.state, n.layer) for n in dag.nodes}
    assert states == {"reader_0": ("success", 0), "psi_0": ("running", 1), "eval_0": ("none", 2)}
    assert dag.edges == [("psi_0", "eval_0"), ("reader_0", "psi_0")]
    drawn = {n["name"]: n["x"] for n in dag_svg.layout(dag)["nodes"]}
    assert drawn["reader_0"] < drawn["psi_0"] < drawn["eval_0"]


def test_series_are_ordered_by_step_and_curves_kept_as_written() -> None:
    metrics = {
        "data": [
            {"component": "lr", "party_id": "1", "name": "loss", "step": 1, "value": 0.5},
            {"component": "lr", "party_id": "1", "name": "loss", "step": 0, "value": 0.7},
            {"component": "lr", "party_id": "1", "name": "auc", "step": -1, "value": 0.9},
        ],
        "curves": [
            {
                "component": "ev",
                "party_id": "1",
                "name": "roc",
                "x_label": "fpr",
                "y_label": "tpr",
                "x": [0.0, 1.0],
                "y": [0.0, 1.0],
            }
        ],
    }
    charts = charts_from("j", metrics)
    assert [(c.id, c.x, c.y) for c in charts.data] == [
        ("lr.1.loss", [0.0, 1.0], [0.7, 0.5]),
        ("ev.1.roc", [0.0, 1.0], [0.0, 1.0]),
    ]


def test_the_schedulers_status_carries_the_pipeline_in_run_order() -> None:
    from fedscheduler.queries import pipeline_components

    from tests.local_stack import REPO

    text = (REPO / "examples" / "pipelines" / "hetero_lr_breast.yaml").read_text()
    components = pipeline_components(text)
    assert components is not None
    assert [(c["name"], c["inputs"]) for c in components] == [
        ("reader_0", {}),
        ("psi_0", {"data": "reader_0.data"}),
        ("hetero_lr_0", {"data": "psi_0.data"}),
        ("predict_0", {"model": "hetero_lr_0.model", "data": "psi_0.data"}),
        ("eval_0", {"data": "predict_0.data"}),
    ]
    assert components[2]["params"]["common"]["epochs"] == 30
    assert pipeline_components("name: [unclosed") is None
