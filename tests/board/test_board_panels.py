"""The job page's model panels (issue #18): binning tables with WOE/IV and SecureBoost trees.

One small standalone run (breast, every party in this process: reader, psi,
hetero_feature_binning, hetero_secureboost with 512-bit test keys) makes real model outputs in
each party's database; the data service's real `job_outputs` op reads them back; the gateway's
board and API (FastAPI TestClient, no stack, no browser) draw them. Every number the JSON and
the HTML show is checked against the component's own outputs, and each party sees only its own
split details."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fedbus.sql_inbox import make_engine
from fedcontrol.client import CommandFailed
from fedflow.artifacts import ArtifactStore, ModelArtifact
from fedflow.pipeline import Pipeline
from fedflow.standalone import StandaloneResult, run_pipeline
from fedgateway import board
from fedgateway.api.board_data import DagNodePublic
from fedgateway.api.deps import ApiContext
from fedgateway.board import registry
from fedworker.data import DataCommandError
from fedworker.job_outputs import job_outputs
from pydantic import SecretStr

from tests.secureboost.data import EXAMPLE_DATA, GUEST, HOST

TOKEN = "board-panels-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIN_NUM = 6

PIPELINE = f"""
name: board-panels
parties: {{guest: "{GUEST}", host: ["{HOST}"]}}
components:
  - name: reader_0
    type: reader
    params:
      "{GUEST}": {{table: breast_hetero_guest}}
      "{HOST}": {{table: breast_hetero_host}}
  - name: psi_0
    type: psi
    inputs: {{data: reader_0.data}}
  - name: binning_0
    type: hetero_feature_binning
    inputs: {{data: psi_0.data}}
    params:
      common: {{bin_num: {BIN_NUM}, reveal_woe_to_host: true, key_bits: 512,
                insecure_short_keys: true}}
  - name: boost_0
    type: hetero_secureboost
    inputs: {{data: psi_0.data}}
    params:
      common: {{num_trees: 2, max_depth: 3, max_bin: 8, seed: 5, key_bits: 512,
                insecure_short_keys: true}}
"""


class OutputsOnly:
    """The data service's answer to `job_outputs`, from its real op over the party's database
    (the bus round trip is what the API tests cover); a refusal as DataClient raises it."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)

    def call(self, op: str, **args: Any) -> Any:
        assert op == "job_outputs"
        try:
            return job_outputs(SimpleNamespace(tables=SimpleNamespace(engine=self.engine)), args)  # type: ignore[arg-type]
        except DataCommandError as exc:
            raise CommandFailed(exc.kind, exc.message) from None


class PartyApi(ApiContext):
    def __init__(self, party_id: str, url: str) -> None:
        super().__init__(party_id, [SecretStr(TOKEN)], lambda: None)  # type: ignore[arg-type,return-value]
        self._outputs = OutputsOnly(url)

    def data(self) -> Any:
        return self._outputs


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> StandaloneResult:
    work = tmp_path_factory.mktemp("board-panels")
    return run_pipeline(
        Pipeline.from_yaml(PIPELINE), {GUEST: EXAMPLE_DATA, HOST: EXAMPLE_DATA}, work
    )


@pytest.fixture(scope="module")
def clients(run: StandaloneResult) -> Iterator[dict[str, TestClient]]:
    out = {}
    for party in (GUEST, HOST):
        app = FastAPI()
        board.mount(app, None)
        app.state.api = PartyApi(party, run._engines[party])
        out[party] = TestClient(app)
    yield out
    for client in out.values():
        client.app.state.api.data().engine.dispose()  # type: ignore[attr-defined]


def model(run: StandaloneResult, party: str, role: str, component: str) -> ModelArtifact:
    engine = make_engine(run._engines[party])
    try:
        found = ArtifactStore(engine).get_artifact(run.job_id, party, role, f"{component}.model")
    finally:
        engine.dispose()
    assert isinstance(found, ModelArtifact)
    return found


def cell(html: str, table_attr: str, row_attr: str, col: str) -> str:
    """The text of one data-col cell of one row of one table in a fragment."""
    table = html.split(table_attr, 1)[1].split("</table>", 1)[0]
    row = table.split(row_attr, 1)[1].split("</tr>", 1)[0]
    return row.split(f'data-col="{col}">', 1)[1].split("<", 1)[0]


# --- binning --------------------------------------------------------------------------------


def test_the_guests_binning_table_holds_the_components_bins_woe_and_iv(
    run: StandaloneResult, clients: dict[str, TestClient]
) -> None:
    m = model(run, GUEST, "guest", "binning_0")
    answer = clients[GUEST].get(f"/api/v1/board/jobs/{run.job_id}/binning/binning_0", headers=AUTH)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    own = [f for f in got["features"] if f["owner"] == GUEST]
    assert [f["name"] for f in own] == m.document["columns"]
    html = clients[GUEST].get(f"/board/jobs/{run.job_id}/binning/binning_0", headers=AUTH).text
    for i, feature in enumerate(own):
        events = m.arrays["events"][i]
        nonevents = m.arrays["nonevents"][i]
        used = np.flatnonzero(events + nonevents > 0)
        assert [b["slot"] for b in feature["bins"]] == used.tolist()
        assert [b["events"] for b in feature["bins"]] == events[used].astype(int).tolist()
        assert [b["nonevents"] for b in feature["bins"]] == nonevents[used].astype(int).tolist()
        assert [b["woe"] for b in feature["bins"]] == m.arrays["woe"][i][used].tolist()
        assert feature["iv"] == m.document["iv"][feature["name"]]
        points = m.arrays["points"][i][: m.arrays["point_counts"][i]]
        first = feature["bins"][0]
        assert first["lower"] is None and first["upper"] == points[0]
        # The HTML shows the same numbers.
        attr = f'data-feature="{feature["name"]}"'
        caption = html.split(attr, 1)[1].split("</caption>", 1)[0]
        assert f"IV <span data-iv>{m.document['iv'][feature['name']]:.6g}" in caption
        for b in feature["bins"]:
            row = f'data-slot="{b["slot"]}"'
            assert int(cell(html, attr, row, "events")) == b["events"]
            assert int(cell(html, attr, row, "rows")) == b["events"] + b["nonevents"]
            assert cell(html, attr, row, "woe") == f"{b['woe']:.6g}"


def test_the_guest_sees_a_hosts_bins_only_as_the_component_gave_them_and_the_host_its_own(
    run: StandaloneResult, clients: dict[str, TestClient]
) -> None:
    g = model(run, GUEST, "guest", "binning_0")
    h = model(run, HOST, "host", "binning_0")
    at_guest = (
        clients[GUEST]
        .get(f"/api/v1/board/jobs/{run.job_id}/binning/binning_0", headers=AUTH)
        .json()
    )
    hosts = [f for f in at_guest["features"] if f["owner"] == HOST]
    assert [f["iv"] for f in hosts] == g.document["host_iv"][HOST]
    for i, feature in enumerate(hosts):
        assert feature["name"] == f"host_{HOST}_{i}"
        # No split points of the host's at the guest: bins by number only.
        assert all(b["lower"] is None and b["upper"] is None for b in feature["bins"])
        used = [b["slot"] for b in feature["bins"]]
        assert [b["woe"] for b in feature["bins"]] == g.arrays[f"host_{HOST}_woe"][i][used].tolist()

    at_host = (
        clients[HOST].get(f"/api/v1/board/jobs/{run.job_id}/binning/binning_0", headers=AUTH).json()
    )
    assert at_host["role"] == "host"
    assert [f["name"] for f in at_host["features"]] == h.document["columns"]
    for i, feature in enumerate(at_host["features"]):
        assert feature["iv"] is None and all(b["rows"] is None for b in feature["bins"])
        points = h.arrays["points"][i][: h.arrays["point_counts"][i]].tolist()
        assert [b["upper"] for b in feature["bins"] if b["slot"] < len(points)] == points
        # The revealed WOE (reveal_woe_to_host) equals the guest's WOE of the host's bins.
        for b in feature["bins"]:
            assert b["woe"] == h.arrays["woe"][i][b["slot"]]
            assert b["woe"] == g.arrays[f"host_{HOST}_woe"][i][b["slot"]]


# --- SecureBoost trees ------------------------------------------------------------------------


def test_the_guests_trees_show_its_own_splits_and_only_who_split_for_the_host(
    run: StandaloneResult, clients: dict[str, TestClient]
) -> None:
    g = model(run, GUEST, "guest", "boost_0")
    h = model(run, HOST, "host", "boost_0")
    got = clients[GUEST].get(f"/api/v1/board/jobs/{run.job_id}/trees/boost_0", headers=AUTH).json()
    assert got["role"] == "guest" and len(got["trees"]) == len(g.document["trees"]) == 2
    names = g.document["feature_names"]
    cut_counts = g.arrays["cut_counts"]
    cuts = np.split(g.arrays["cuts"], np.cumsum(cut_counts)[:-1])
    host_nodes = []
    for tree, described in zip(got["trees"], g.document["trees"], strict=True):
        by_id = {n["id"]: n for n in tree["nodes"]}
        assert sorted(by_id) == sorted(d["id"] for d in described)
        for d in described:
            n = by_id[d["id"]]
            assert n["rows"] == d["rows"]
            if "leaf" in d:
                assert n["leaf"] == d["leaf"] and n["party_id"] is None
            elif d["party"] == 0:
                bin_ = g.arrays["trees/bin"][tree["index"]][d["id"]]
                assert n["feature"] == names[d["feature"]]
                assert n["threshold"] == cuts[d["feature"]][bin_]
                assert n["party_id"] == GUEST and n["gain"] == d["gain"]
            else:
                assert n["party_id"] == HOST and n["feature"] is None and n["threshold"] is None
                assert n["text"] == f"party {HOST}, split #{n['host_split']}"
                host_nodes.append((tree["index"], n["id"], n["host_split"]))
    assert host_nodes, "the run should make at least one host split"
    # The host's own view numbers the same splits the same way.
    at_host = (
        clients[HOST].get(f"/api/v1/board/jobs/{run.job_id}/trees/boost_0", headers=AUTH).json()
    )
    assert at_host["trees"] == []
    assert [(s["tree"], s["node"], s["k"]) for s in at_host["own_splits"]] == host_nodes
    order = np.lexsort((h.arrays["split_node"], h.arrays["split_tree"]))
    assert [s["threshold"] for s in at_host["own_splits"]] == h.arrays["split_threshold"][
        order
    ].tolist()
    assert [s["feature"] for s in at_host["own_splits"]] == [
        h.document["feature_names"][f] for f in h.arrays["split_feature"][order]
    ]
    # Importance: the party's own features, as the component logged it.
    own = {i["feature"]: i for i in got["importance"] if i["owner"] == GUEST}
    assert {f: (v["splits"], v["gain"]) for f, v in own.items()} == {
        f: (v["splits"], v["gain"]) for f, v in g.document["importance"].items()
    }
    host_total = [i for i in got["importance"] if i["owner"] == HOST]
    assert host_total[0]["splits"] == len(host_nodes)
    assert {i["feature"]: i["splits"] for i in at_host["importance"]} == {
        f: v["splits"] for f, v in h.document["importance"].items()
    }


def test_the_tree_drawing_and_tables_show_the_json(
    run: StandaloneResult, clients: dict[str, TestClient]
) -> None:
    base = f"/board/jobs/{run.job_id}/trees/boost_0"
    got = clients[GUEST].get(f"/api/v1/board/jobs/{run.job_id}/trees/boost_0", headers=AUTH).json()
    html = clients[GUEST].get(base, headers=AUTH)
    assert (
        html.status_code == 200 and "default-src 'self'" in html.headers["content-security-policy"]
    )
    svg = html.text
    assert svg.count("<svg") == len(got["trees"])
    figures = svg.split('<figure class="tree"')[1:]
    for tree, figure in zip(got["trees"], figures, strict=True):
        for n in tree["nodes"]:
            group = figure.split(f'data-node="{n["id"]}"', 1)[1].split("</g>", 1)[0]
            assert n["text"].replace("<", "&lt;") in group
            if n["party_id"] == HOST:  # who split, and nothing of how
                assert "&lt;" not in group and f'data-split="{n["host_split"]}"' in group
        # Edges from every split to both children, drawn.
        assert figure.count("<path ") == len(tree["edges"])
    for i in got["importance"]:
        assert cell(svg, f'data-feature="{i["feature"]}"', "<td", "splits") == str(i["splits"])

    host_html = clients[HOST].get(base, headers=AUTH).text
    host_json = (
        clients[HOST].get(f"/api/v1/board/jobs/{run.job_id}/trees/boost_0", headers=AUTH).json()
    )
    assert "<svg" not in host_html
    for s in host_json["own_splits"]:
        assert cell(host_html, 'class="host-splits"', f'data-split="{s["k"]}"', "threshold") == (
            f"{s['threshold']:.6g}"
        )


# --- the job page's panels, refusals ----------------------------------------------------------


def test_the_panels_appear_for_their_component_type_only_and_load_their_fragment() -> None:
    found = {p.slug: p for p in registry.panels()}
    dag = SimpleNamespace(job_id="j-1")

    def node(kind: str) -> DagNodePublic:
        return DagNodePublic(
            name="c_0", type=kind, inputs={}, params={}, state="success", layer=0, tasks=[]
        )

    assert found["binning"].build({"dag": dag, "node": node("hetero_lr")}) is None
    assert found["trees"].build({"dag": dag, "node": node("hetero_feature_binning")}) is None
    built = found["trees"].build({"dag": dag, "node": node("hetero_secureboost")})
    assert built == {
        "url": "/board/jobs/j-1/trees/c_0",
        "json": "/api/v1/board/jobs/j-1/trees/c_0",
    }
    html = board.templates.get_template(found["trees"].template).render(data=built)
    assert 'hx-get="/board/jobs/j-1/trees/c_0"' in html and 'hx-trigger="load"' in html


def test_refusals_wrong_token_missing_component_and_wrong_model_kind(
    run: StandaloneResult, clients: dict[str, TestClient]
) -> None:
    guest = clients[GUEST]
    api = f"/api/v1/board/jobs/{run.job_id}"
    assert guest.get(f"{api}/trees/boost_0").status_code == 401
    wrong = guest.get(f"{api}/trees/boost_0", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    page = guest.get(f"/board/jobs/{run.job_id}/trees/boost_0", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/board/login")
    missing = guest.get(f"{api}/trees/nothing_0", headers=AUTH)
    assert missing.status_code == 404 and "nothing_0" in missing.json()["detail"]
    kind = guest.get(f"{api}/trees/binning_0", headers=AUTH)
    assert kind.status_code == 409 and "hetero_secureboost" in kind.json()["detail"]
    no_model = guest.get(f"{api}/binning/psi_0", headers=AUTH)
    assert no_model.status_code == 404
    # The fragment says why instead of failing the page.
    fragment = guest.get(f"/board/jobs/{run.job_id}/binning/boost_0", headers=AUTH)
    assert fragment.status_code == 200 and "Not available" in fragment.text
    assert guest.get(f"{api}/binning/bad%20name", headers=AUTH).status_code == 422


def test_the_iv_summary_lists_every_feature_with_an_iv_highest_first(
    run: StandaloneResult, clients: dict[str, TestClient]
) -> None:
    got = (
        clients[GUEST]
        .get(f"/api/v1/board/jobs/{run.job_id}/binning/binning_0", headers=AUTH)
        .json()
    )
    html = clients[GUEST].get(f"/board/jobs/{run.job_id}/binning/binning_0", headers=AUTH).text
    summary = html.split('class="iv-summary"', 1)[1].split("</table>", 1)[0]
    listed = [row.split('"', 1)[0] for row in summary.split('data-iv-feature="')[1:]]
    expected = sorted(got["features"], key=lambda f: -f["iv"])
    assert listed == [f["name"] for f in expected]
    assert {f["owner"] for f in expected} == {GUEST, HOST}


SHOTS = (
    ("binning", "binning_0", GUEST, "panel-binning.png", 1100),
    ("trees", "boost_0", GUEST, "panel-trees.png", 900),
    ("trees", "boost_0", HOST, "panel-trees-host.png", 700),
)


def test_screenshots_of_the_panels_when_asked(
    run: StandaloneResult, clients: dict[str, TestClient], tmp_path: Path
) -> None:
    """With FEDMQ_BOARD_SCREENSHOTS=docs/board: each fragment in the board's stylesheet, shot by
    Debian's chromium at 1280 px (the job page's frame is not drawn: no scheduler here).
    Without it, only the fragments' pages are written (the shots cost about 2 s each)."""
    target = os.environ.get("FEDMQ_BOARD_SCREENSHOTS")
    css = Path(board.__file__).parent / "static" / "board.css"
    for kind, component, party, name, height in SHOTS:
        fragment = clients[party].get(f"/board/jobs/{run.job_id}/{kind}/{component}", headers=AUTH)
        assert fragment.status_code == 200 and "Not available" not in fragment.text
        page = tmp_path / f"{name}.html"
        page.write_text(
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="stylesheet" '
            f'href="{css.as_uri()}"></head><body><main id="main"><div class="panel">'
            f"<h3>{component} at party {party}</h3>{fragment.text}</div></main></body></html>"
        )
        if target:
            shot = Path(target).resolve() / name
            subprocess.run(
                [
                    "chromium",
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--window-size=1280,{height}",
                    f"--screenshot={shot}",
                    page.as_uri(),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            assert shot.stat().st_size > 10_000


def test_a_misspelt_query_parameter_is_refused_not_ignored(
    run: StandaloneResult, clients: dict[str, TestClient]
) -> None:
    answer = clients[GUEST].get(
        f"/api/v1/board/jobs/{run.job_id}/trees/boost_0?compnent=x", headers=AUTH
    )
    assert answer.status_code == 422 and "compnent" in answer.text
