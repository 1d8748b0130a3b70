"""infra/grafana: the provisioning and the dashboards Grafana loads.

The central check: every metric a dashboard query names is one the services really export,
read from the metric classes themselves (instantiated on a fresh registry), from
prometheus_client's ProcessCollector, and from a live RabbitMQ's per-object endpoint.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.infra.metric_names import (
    REPO,
    metric_names,
    process_metric_names,
    scraped_names,
    service_metric_names,
    unknown_names,
    variable_query_metric_names,
)

GRAFANA = REPO / "infra" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
RABBITMQ_METRICS_URL = "http://127.0.0.1:15692/metrics/per-object"
EXPECTED_TITLES = {
    "fedmq / Jobs and tasks",
    "fedmq / Bus",
    "fedmq / Site link",
    "fedmq / Crypto",
    "fedmq / HTTP",
    "fedmq / Audit",
    "fedmq / Serving",
}


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def datasource_uids() -> set[str]:
    provisioning = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
    )
    return {ds["uid"] for ds in provisioning["datasources"]}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = [
        (f"panel {panel['id']} {panel.get('title')!r}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    return found


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        found.append((f"variable ${variable['name']}", text))
    return found


def used_metric_names(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """metric name -> where it is used."""
    used: dict[str, set[str]] = {}
    for where, expr in queries(dashboard):
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    for where, query in variable_queries(dashboard):
        for name in variable_query_metric_names(query):
            used.setdefault(name, set()).add(where)
    return used


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Series names the fedmq services expose (their metric classes + ProcessCollector)."""
    names, missing = service_metric_names()
    if missing:
        pytest.fail(
            "metric classes the dashboards rely on are missing: " + "; ".join(missing),
            pytrace=False,
        )
    return names | process_metric_names()


@pytest.fixture(scope="module")
def rabbitmq_exported() -> set[str]:
    try:
        socket.create_connection(("127.0.0.1", 15692), timeout=2).close()
    except OSError as exc:
        pytest.skip(
            f"RabbitMQ's Prometheus endpoint 127.0.0.1:15692 is closed ({exc}): enable the "
            "rabbitmq_prometheus plugin (scripts/ensure-services does)"
        )
    return scraped_names(RABBITMQ_METRICS_URL)


def fedmq_metric_problems(dashboard: dict[str, Any], exported: set[str]) -> list[str]:
    used = {n: w for n, w in used_metric_names(dashboard).items() if not n.startswith("rabbitmq_")}
    return [f"{name} (in {sorted(used[name])})" for name in unknown_names(used, exported)]


def test_the_seven_dashboards_exist() -> None:
    titles = {load_dashboard(path)["title"] for path in DASHBOARD_FILES}

    assert titles == EXPECTED_TITLES


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = load_dashboard(path)
    ids = [panel["id"] for panel in panels(dashboard)]

    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"]), "fixed, short uid"
    assert dashboard["schemaVersion"] >= 36
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    assert queries(dashboard), "a dashboard without queries"
    for panel in panels(dashboard):
        if panel.get("type") == "row":
            continue
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['id']} is wider than the grid"


def test_dashboard_uids_are_unique() -> None:
    uids = [load_dashboard(path)["uid"] for path in DASHBOARD_FILES]

    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_datasources_are_provisioned_uids(path: Path) -> None:
    dashboard = load_dashboard(path)
    provisioned = datasource_uids()
    refs = [panel.get("datasource") for panel in panels(dashboard)]
    refs += [t.get("datasource") for p in panels(dashboard) for t in p.get("targets", [])]
    refs += [v.get("datasource") for v in dashboard["templating"]["list"]]

    for ref in refs:
        assert isinstance(ref, dict), f"datasource by name, not uid: {ref!r}"
        assert ref["uid"] in provisioned, f"datasource uid {ref['uid']} is not provisioned"


def test_provisioning_names_prometheus_and_jaeger() -> None:
    provisioning = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
    )
    by_uid = {ds["uid"]: ds for ds in provisioning["datasources"]}
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "fedmq.yml").read_text())

    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["jaeger"]["url"] == "http://jaeger:16686"
    assert by_uid["jaeger"]["type"] == "jaeger"
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_fedmq_metric_a_dashboard_reads_is_exported(path: Path, exported: set[str]) -> None:
    problems = fedmq_metric_problems(load_dashboard(path), exported)

    assert not problems, f"{path.name} reads metrics no service exports: {problems}"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_rabbitmq_metric_a_dashboard_reads_exists(
    path: Path, rabbitmq_exported: set[str]
) -> None:
    used = [n for n in used_metric_names(load_dashboard(path)) if n.startswith("rabbitmq_")]

    assert not unknown_names(used, rabbitmq_exported)


def test_a_dashboard_naming_an_unexported_metric_fails(exported: set[str]) -> None:
    """The check above can fail: a typo, a bare histogram name and a counter without _total
    are each caught."""
    dashboard = load_dashboard(GRAFANA / "dashboards" / "bus.json")
    assert not fedmq_metric_problems(dashboard, exported)
    doctored_exprs = [
        "sum(rate(fedmq_bus_messages_recieved_total[5m]))",
        "histogram_quantile(0.95, sum by (le) (rate(fedmq_bus_handler_seconds[5m])))",
        "sum(rate(fedmq_bus_duplicates_dropped[5m]))",
    ]
    for expr in doctored_exprs:
        doctored = copy.deepcopy(dashboard)
        doctored["panels"][0]["targets"][0]["expr"] = expr

        problems = fedmq_metric_problems(doctored, exported)

        assert len(problems) == 1, (expr, problems)


def test_a_variable_naming_an_unexported_metric_fails(exported: set[str]) -> None:
    dashboard = load_dashboard(GRAFANA / "dashboards" / "bus.json")
    doctored = copy.deepcopy(dashboard)
    doctored["templating"]["list"][0]["query"]["query"] = "label_values(fedmq_bus_nothing, job)"

    problems = fedmq_metric_problems(doctored, exported)

    assert problems == ["fedmq_bus_nothing (in ['variable $job'])"]


def test_quantiles_aggregate_bucket_rates_by_le() -> None:
    """histogram_quantile over rate(<x>_bucket[..]) summed by a label set that keeps `le`:
    anything else gives a number that looks plausible and is wrong."""
    pattern = re.compile(
        r"histogram_quantile\(\s*0?\.\d+,\s*"
        r"sum by \(([^)]*)\)\s*\(rate\((\w+)\{?[^\[]*\[\w+\]\)\)\)"
    )
    for path in DASHBOARD_FILES:
        for where, expr in queries(load_dashboard(path)):
            if "histogram_quantile" not in expr:
                continue
            match = pattern.fullmatch(expr)

            assert match, f"{path.name} {where}: unexpected quantile form {expr}"
            assert "le" in [label.strip() for label in match.group(1).split(",")]
            assert match.group(2).endswith("_bucket")


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule); Grafana's $variables are valid inside
    label matcher strings, which is the only place the dashboards use them."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (scripts/setup installs Debian's prometheus)")
    rules = [
        {"record": f"fedmq:check:{index}", "expr": expr}
        for index, (_, expr) in enumerate(
            q for path in DASHBOARD_FILES for q in queries(load_dashboard(path))
        )
    ]
    rule_file = tmp_path / "dashboards.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))

    result = subprocess.run(
        ["promtool", "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_dashboards", GRAFANA / "generate_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being built.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    rendered: dict[str, str] = _generator().rendered()

    assert sorted(rendered) == [path.name for path in DASHBOARD_FILES]
    for path in DASHBOARD_FILES:
        assert path.read_text() == rendered[path.name], (
            f"{path.name} differs from infra/grafana/generate_dashboards.py: re-run it"
        )
