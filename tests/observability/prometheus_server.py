"""A real Prometheus (Debian's package, the one scripts/setup installs for promtool) for tests:
the repository's rule files, scrape and evaluation every couple of seconds, an HTTP API client.

The rule files are the ones infra/prometheus/prometheus.yml names, read from the repository; only
the scrape targets are the test's (the services of `fedmq local`'s parties, and RabbitMQ's
/metrics/detailed endpoint limited to the parties' vhosts, whose `rabbitmq_detailed_queue_*`
names are mapped to the `rabbitmq_queue_*` names that the per-object endpoint of a deployment
gives and the rules read).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedmq import local
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "infra" / "prometheus"
RABBITMQ_METRICS = "127.0.0.1:15692"
INTERVAL_S = 2
"""Scrape and rule evaluation interval of the test's Prometheus."""


def repository_rule_files() -> list[str]:
    """The rule files the deployment's Prometheus loads (prometheus.yml's rule_files)."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    return [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]


def repository_alert_rules() -> dict[str, dict[str, Any]]:
    """Alert name -> its rule, from every repository rule file."""
    rules: dict[str, dict[str, Any]] = {}
    for path in repository_rule_files():
        for group in yaml.safe_load(Path(path).read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rules[rule["alert"]] = rule
    return rules


def duration_s(text: str | None) -> float:
    """A Prometheus duration of the rules ("30s", "1m", "1h30m") in seconds."""
    if not text:
        return 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total, number = 0.0, ""
    rest = text
    while rest:
        if rest[0].isdigit():
            number += rest[0]
            rest = rest[1:]
            continue
        unit = "ms" if rest.startswith("ms") else rest[0]
        total += int(number) * units[unit]
        number, rest = "", rest[len(unit) :]
    return total


@dataclass
class Prometheus:
    url: str
    started: float
    """Unix time the server started (the beginning of its ALERTS history)."""

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._get("/api/v1/query", params)["result"]  # type: ignore[no-any-return]

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        params = {
            "query": expr,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": str(INTERVAL_S),
        }
        return self._get("/api/v1/query_range", params)["result"]  # type: ignore[no-any-return]

    def firing(self) -> list[dict[str, str]]:
        """The labels of every alert firing now."""
        return [r["metric"] for r in self.query('ALERTS{alertstate="firing"}')]

    def targets_up(self) -> int:
        return len(self.query("up == 1"))

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {params}: {body}")
        return body["data"]


def scrape_config(state: local.LocalState) -> dict[str, Any]:
    """Every party's services (gateway, scheduler, worker, and the audit service where `fedmq
    local` runs one), and RabbitMQ for the parties' vhosts."""
    jobs: dict[str, list[str]] = {}
    for plan in state.parties.values():
        ports = {
            "gateway": plan.http_port,
            "scheduler": plan.scheduler_http_port,
            "worker": plan.worker_http_port,
            "audit": plan.audit_http_port,
        }
        for job, port in ports.items():
            if port:
                jobs.setdefault(job, []).append(f"127.0.0.1:{port}")
    return {
        "global": {
            "scrape_interval": f"{INTERVAL_S}s",
            "scrape_timeout": f"{INTERVAL_S}s",
            "evaluation_interval": f"{INTERVAL_S}s",
        },
        "rule_files": repository_rule_files(),
        "scrape_configs": [
            *({"job_name": job, "static_configs": [{"targets": t}]} for job, t in jobs.items()),
            {
                "job_name": "rabbitmq",
                "metrics_path": "/metrics/detailed",
                "params": {
                    "vhost": [plan.vhost for plan in state.parties.values()],
                    "family": ["queue_coarse_metrics", "queue_consumer_count"],
                },
                "static_configs": [{"targets": [RABBITMQ_METRICS]}],
                "metric_relabel_configs": [
                    {
                        "source_labels": ["__name__"],
                        "regex": "rabbitmq_detailed_(.+)",
                        "target_label": "__name__",
                        "replacement": "rabbitmq_$1",
                    }
                ],
            },
        ],
    }


def scrape_target_count(state: local.LocalState) -> int:
    return sum(
        len(group["targets"])
        for job in scrape_config(state)["scrape_configs"]
        for group in job["static_configs"]
    )


@contextmanager
def running_prometheus(state: local.LocalState) -> Iterator[Prometheus]:
    """A Prometheus scraping the stack `state` describes, up until the block ends."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("prometheus is not installed (scripts/setup installs Debian's prometheus)")
    workdir = Path(tempfile.mkdtemp(prefix="fedmq-prometheus-"))
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(state)))
    port = local.free_port()
    log = (workdir / "prometheus.log").open("wb")
    started = time.time()
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(f"http://127.0.0.1:{port}", started)
    try:
        wait_until(
            lambda: proc.poll() is None and server.query("vector(1)"),
            timeout=30,
            what="Prometheus answering queries",
            interval=0.2,
            retry_on=(OSError,),
            describe=lambda: (workdir / "prometheus.log").read_text()[-2000:],
        )
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
