"""infra/prometheus: promtool accepts the config and the alerts, the alerts' unit tests pass,
the scrape targets are the services' real ports and compose names, and every metric an alert
reads is one the services export."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
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
)

PROMETHEUS_DIR = REPO / "infra" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "tests" / "alerts_test.yml"
COMPOSE = REPO / "docker-compose.yml"


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (scripts/setup installs Debian's prometheus)")
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_config_and_its_rule_files() -> None:
    result = promtool("check", "config", str(CONFIG))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout  # alerts.yml and audit.yml


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))

    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass() -> None:
    """Each alert fires on its series and stays silent on the look-alikes (alerts_test.yml)."""
    result = promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_fail_on_a_broken_alert(tmp_path: Path) -> None:
    """The unit tests are able to fail: an alert that also fires on benign replay refusals is
    caught by the series that must not fire it."""
    doctored = ALERTS.read_text().replace(
        "missing_signature|bad_signature|unknown_key|source_mismatch",
        "missing_signature|bad_signature|unknown_key|source_mismatch|clock_window",
    )
    assert doctored != ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(doctored)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "alerts_test.yml").write_text(ALERT_TESTS.read_text())

    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path / "tests")

    assert result.returncode != 0
    assert "FedmqGatewaySignatureRefusals" in result.stdout + result.stderr


def test_the_alerts_the_operations_guide_promises_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}

    assert {
        "FedmqPeerLinkDown",
        "FedmqDeadLettersIncreasing",
        "FedmqGatewaySignatureRefusals",
        "FedmqJobsFailing",
        "FedmqQueueBackingUp",
        "FedmqTargetDown",
    } <= names
    link_down = next(r for r in alert_rules() if r["alert"] == "FedmqPeerLinkDown")
    assert link_down["for"] == "30s"  # short: link_up is true liveness (docs/gateway.md)


def test_every_metric_an_alert_reads_is_exported() -> None:
    services, missing = service_metric_names()
    known = services | process_metric_names()
    used = {
        name
        for rule in alert_rules()
        for name in metric_names(rule["expr"])
        if not name.startswith("rabbitmq_")  # checked against a live RabbitMQ in test_dashboards
    }

    unknown = unknown_names(used, known)

    assert not unknown, f"alerts read metrics nobody exports: {unknown}; missing classes: {missing}"


def test_every_rabbitmq_metric_an_alert_reads_exists() -> None:
    try:
        socket.create_connection(("127.0.0.1", 15692), timeout=2).close()
    except OSError as exc:
        pytest.skip(f"RabbitMQ's Prometheus endpoint 127.0.0.1:15692 is closed ({exc})")
    used = {
        name
        for rule in alert_rules()
        for name in metric_names(rule["expr"])
        if name.startswith("rabbitmq_")
    }

    assert used, "the queue alert reads RabbitMQ's metrics"
    assert unknown_names(used, scraped_names("http://127.0.0.1:15692/metrics/per-object")) == []


def scrape_jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in load(CONFIG)["scrape_configs"]}


def static_targets(job: dict[str, Any]) -> list[str]:
    return [t for group in job.get("static_configs", []) for t in group["targets"]]


def test_party_is_an_external_label() -> None:
    config = load(CONFIG)

    assert config["global"]["external_labels"] == {"party": "${FEDMQ_PARTY_ID}"}
    assert config["rule_files"] == ["alerts.yml", "audit.yml"]


def test_scrape_ports_are_the_services_http_ports() -> None:
    from fedgateway.settings import GatewaySettings
    from fedscheduler.settings import SchedulerSettings
    from fedserving.settings import ServingSettings
    from fedworker.settings import WorkerSettings

    jobs = scrape_jobs()

    assert "http_port" in WorkerSettings.model_fields, "WorkerSettings has no http_port yet"
    assert static_targets(jobs["gateway"]) == [
        f"gateway:{GatewaySettings.model_fields['http_port'].default}"
    ]
    assert static_targets(jobs["scheduler"]) == [
        f"scheduler:{SchedulerSettings.model_fields['http_port'].default}"
    ]
    assert static_targets(jobs["serving"]) == [
        f"serving:{ServingSettings.model_fields['http_port'].default}"
    ]
    # Every worker replica: DNS A records of the service name, at the worker's port.
    (worker_sd,) = jobs["worker"]["dns_sd_configs"]
    assert worker_sd["names"] == ["worker"]
    assert worker_sd["type"] == "A"
    assert worker_sd["port"] == WorkerSettings.model_fields["http_port"].default
    assert static_targets(jobs["rabbitmq"]) == ["rabbitmq:15692"]
    assert jobs["rabbitmq"]["metrics_path"] == "/metrics"
    assert static_targets(jobs["otel-collector"]) == ["otel-collector:8888"]
    assert static_targets(jobs["prometheus"]) == ["localhost:9090"]


def compose() -> dict[str, Any]:
    if not COMPOSE.exists():
        pytest.skip("docker-compose.yml is not written yet")
    data: dict[str, Any] = load(COMPOSE)
    return data


def test_scrape_targets_are_compose_services() -> None:
    services = compose()["services"]
    hosts = {
        target.split(":")[0] for job in scrape_jobs().values() for target in static_targets(job)
    }
    hosts |= {
        name
        for job in scrape_jobs().values()
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    hosts.discard("localhost")  # Prometheus scraping itself

    assert hosts, "no scrape targets"
    assert hosts <= set(services), f"not compose services: {sorted(hosts - set(services))}"


def test_compose_services_listen_where_prometheus_scrapes() -> None:
    """The ports Prometheus scrapes are the ones compose tells each service to serve HTTP on,
    on every interface (the default 127.0.0.1 would be unreachable from Prometheus)."""
    services = compose()["services"]
    jobs = scrape_jobs()
    expected = {
        "gateway": ("FEDMQ_GATEWAY_", static_targets(jobs["gateway"])[0].split(":")[1]),
        "scheduler": ("FEDMQ_SCHEDULER_", static_targets(jobs["scheduler"])[0].split(":")[1]),
        "worker": ("FEDMQ_WORKER_", str(jobs["worker"]["dns_sd_configs"][0]["port"])),
        "serving": ("FEDMQ_SERVING_", static_targets(jobs["serving"])[0].split(":")[1]),
    }
    for service, (prefix, port) in expected.items():
        env = services[service]["environment"]

        assert str(env[f"{prefix}HTTP_PORT"]) == port, service
        assert env[f"{prefix}HTTP_HOST"] == "0.0.0.0", service


def test_compose_mounts_the_observability_files() -> None:
    services = compose()["services"]

    def mounts(service: str) -> list[str]:
        return [str(v) for v in services[service].get("volumes", [])]

    assert any(v.startswith("./infra/prometheus:") for v in mounts("prometheus"))
    assert "--enable-feature=expand-external-labels" in services["prometheus"]["command"]
    assert any(v.startswith("./infra/grafana/provisioning:") for v in mounts("grafana"))
    assert any(
        v.startswith("./infra/grafana/dashboards:/var/lib/grafana/dashboards")
        for v in mounts("grafana")
    )
    assert any(v.startswith("./infra/otel/collector.yaml:") for v in mounts("otel-collector"))
