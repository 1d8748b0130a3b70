"""Writes the fedmq Grafana dashboards (infra/grafana/dashboards/*.json).

The JSON files are what Grafana loads and what is committed; this script is where they are
edited, so that five dashboards keep one layout, one datasource reference and one way of
computing quantiles. Run it after a change and commit both:

    .venv/bin/python infra/grafana/generate_dashboards.py

tests/infra checks that the committed JSON is what this script writes, and that every metric a
query names is one the services really export (docs/operations.md tours the dashboards).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
SCHEMA_VERSION = 39
RATE = "5m"
"""The rate window of every query: at least four scrapes of the slowest job (rabbitmq, 30 s)
plus slack, so a single missed scrape never blanks a panel."""


def quantile(q: float, histogram: str, by: str, selector: str = "") -> str:
    """histogram_quantile over the per-second rate of the buckets, keeping `le` in the
    aggregation (dropping it would mix the buckets and give nonsense)."""
    return (
        f"histogram_quantile({q}, sum by (le, {by}) (rate({histogram}_bucket{selector}[{RATE}])))"
    )


@dataclass
class Target:
    expr: str
    legend: str


def p50_and_p95(histogram: str, by: str, legend: str, selector: str = "") -> list[Target]:
    """A histogram's median and 95th percentile as two series, "p50 <legend>" and "p95 <legend>"."""
    return [
        Target(quantile(q, histogram, by, selector), f"{name} {legend}")
        for q, name in ((0.5, "p50"), (0.95, "p95"))
    ]


@dataclass
class Panel:
    title: str
    description: str
    targets: list[Target]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    stack: bool = False
    thresholds: list[tuple[float | None, str]] = field(default_factory=list)
    mappings: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Variable:
    name: str
    label: str
    query: str
    """A Grafana Prometheus variable query, e.g. label_values(up{job="worker"}, instance)."""


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    filename: str
    panels: list[Panel]
    variables: list[Variable] = field(default_factory=list)
    tags: list[str] = field(default_factory=lambda: ["fedmq"])


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in panel.thresholds],
        }
    if panel.mappings:
        defaults["mappings"] = panel.mappings
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
        options: dict[str, Any] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background" if panel.thresholds else "value",
            "graphMode": "none",
            "textMode": "auto",
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": PROMETHEUS,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": PROMETHEUS,
                "expr": target.expr,
                "legendFormat": target.legend,
                "range": True,
            }
            for index, target in enumerate(panel.targets)
        ],
    }


def _variable_json(variable: Variable) -> dict[str, Any]:
    return {
        "name": variable.name,
        "label": variable.label,
        "type": "query",
        "datasource": PROMETHEUS,
        "query": {"query": variable.query, "refId": f"var-{variable.name}"},
        "definition": variable.query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    panels = []
    x = y = row_height = 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(_panel_json(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": dashboard.tags,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "links": [
            {
                "title": "fedmq dashboards",
                "type": "dashboards",
                "tags": ["fedmq"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "annotations": {"list": []},
        "templating": {"list": [_variable_json(v) for v in dashboard.variables]},
        "panels": panels,
    }


UP_DOWN = [
    {"type": "value", "options": {"0": {"text": "DOWN", "color": "red"}}},
    {"type": "value", "options": {"1": {"text": "UP", "color": "green"}}},
]

WORKER = '{instance=~"$instance"}'
JOBS = Dashboard(
    uid="fedmq-jobs",
    title="fedmq / Jobs and tasks",
    description="Jobs at this party (scheduler) and the tasks its workers run.",
    filename="jobs.json",
    variables=[Variable("instance", "worker", 'label_values(up{job="worker"}, instance)')],
    panels=[
        Panel(
            "Jobs submitted (last hour)",
            "Jobs this party initiated in the last hour.",
            [Target("sum(increase(fedmq_scheduler_jobs_submitted_total[1h]))", "submitted")],
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Jobs running",
            "Jobs in state running at this party right now.",
            [Target("sum(fedmq_scheduler_jobs_running)", "running")],
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Tasks running",
            "Tasks the selected workers are running right now.",
            [Target(f"sum(fedmq_worker_tasks_running{WORKER})", "running")],
            kind="stat",
            width=6,
            height=4,
        ),
        Panel(
            "Jobs failed (last 24 h)",
            "Jobs that ended failed at this party in the last day (FedmqJobsFailing alert).",
            [
                Target(
                    'sum(increase(fedmq_scheduler_jobs_ended_total{state="failed"}[24h]))',
                    "failed",
                )
            ],
            kind="stat",
            width=6,
            height=4,
            thresholds=[(None, "green"), (1, "red")],
        ),
        Panel(
            "Jobs ended by state",
            "Jobs reaching a final state per minute (success, failed, canceled).",
            [
                Target(
                    f"sum by (state) (rate(fedmq_scheduler_jobs_ended_total[{RATE}])) * 60",
                    "{{state}}",
                )
            ],
            unit="short",
            stack=True,
        ),
        Panel(
            "Job duration p50 / p95",
            "From submit (or accept, at a participant) to the final state, by final state "
            "(quantiles exist once a job ended in the window), and the open job furthest past "
            "its pipeline's expected duration: its age and that duration (FedmqJobOverdue "
            "fires while age is above expected).",
            [
                *p50_and_p95("fedmq_scheduler_job_duration_seconds", "state", "{{state}}"),
                Target("max(fedmq_scheduler_job_age_seconds)", "open job age"),
                Target("max(fedmq_scheduler_job_expected_seconds)", "open job expected"),
            ],
            unit="s",
        ),
        Panel(
            "Proposals answered",
            "Job proposals from other parties this party accepted or refused, per minute.",
            [
                Target(
                    f"sum by (answer) (rate(fedmq_scheduler_proposals_total[{RATE}])) * 60",
                    "{{answer}}",
                )
            ],
        ),
        Panel(
            "Tasks dispatched / started",
            "task.run sent by the scheduler vs. tasks the workers started, per minute: a gap "
            "that persists means tasks wait for a free worker thread.",
            [
                Target(
                    f"sum(rate(fedmq_scheduler_tasks_dispatched_total[{RATE}])) * 60",
                    "dispatched",
                ),
                Target(
                    f"sum(rate(fedmq_worker_tasks_started_total{WORKER}[{RATE}])) * 60",
                    "started",
                ),
            ],
        ),
        Panel(
            "Tasks started by component",
            "Tasks started per minute by component type.",
            [
                Target(
                    "sum by (component) "
                    f"(rate(fedmq_worker_tasks_started_total{WORKER}[{RATE}])) * 60",
                    "{{component}}",
                )
            ],
            stack=True,
        ),
        Panel(
            "Tasks ended by component and state",
            "Tasks ended per minute; failed ones fire FedmqTasksFailing.",
            [
                Target(
                    "sum by (component, state) "
                    f"(rate(fedmq_worker_tasks_ended_total{WORKER}[{RATE}])) * 60",
                    "{{component}} {{state}}",
                )
            ],
        ),
        Panel(
            "Task duration p50 / p95 by component",
            "Time one task takes in a worker (resumed tasks count from their resume); a "
            "component's quantiles exist once one of its tasks ended in the window.",
            p50_and_p95("fedmq_worker_task_duration_seconds", "component", "{{component}}", WORKER),
            unit="s",
        ),
        Panel(
            "Tasks running per worker",
            "Running tasks per worker replica: uneven load or an idle replica shows here.",
            [Target(f"sum by (instance) (fedmq_worker_tasks_running{WORKER})", "{{instance}}")],
        ),
        Panel(
            "Party timeouts",
            "Jobs failed because a party stayed silent past party_timeout_s, by phase "
            "(proposal, running), per hour.",
            [
                Target(
                    "sum by (phase) (increase(fedmq_scheduler_party_timeouts_total[1h]))",
                    "{{phase}}",
                )
            ],
        ),
        Panel(
            "Local commands",
            "Local commands (REST API, CLI) served per second, by op and outcome: the "
            "scheduler's (jobs, grants, metrics) and the data service's (tables, its workers).",
            [
                Target(
                    f"sum by (op, outcome) (rate(fedmq_scheduler_rpc_requests_total[{RATE}]))",
                    "{{op}} {{outcome}}",
                ),
                Target(
                    f"sum by (op, outcome) (rate(fedmq_worker_data_requests_total[{RATE}]))",
                    "{{op}} {{outcome}}",
                ),
            ],
            unit="reqps",
        ),
    ],
)

BUS_SEL = '{job=~"$job", topic=~"$topic"}'
SERVICE_QUEUES = 'queue=~"svc\\\\.(scheduler|scheduler\\\\.rpc|worker|data\\\\.rpc|gateway)"'
"""The queues a service always consumes (FedmqServiceQueueNoConsumer's, alerts.yml)."""
BUS = Dashboard(
    uid="fedmq-bus",
    title="fedmq / Bus",
    description="Envelopes in and out of every service's bus runtime, and RabbitMQ queue depth.",
    filename="bus.json",
    variables=[
        Variable("job", "service", "label_values(fedmq_bus_messages_received_total, job)"),
        Variable(
            "topic", "topic", 'label_values(fedmq_bus_messages_received_total{job=~"$job"}, topic)'
        ),
    ],
    panels=[
        Panel(
            "Messages received / s by topic",
            "Envelopes handed to a handler, per second.",
            [
                Target(
                    f"sum by (topic) (rate(fedmq_bus_messages_received_total{BUS_SEL}[{RATE}]))",
                    "{{topic}}",
                )
            ],
            unit="ops",
        ),
        Panel(
            "Messages published / s by topic",
            "Envelopes published and confirmed by the broker, per second.",
            [
                Target(
                    f"sum by (topic) (rate(fedmq_bus_messages_published_total{BUS_SEL}[{RATE}]))",
                    "{{topic}}",
                )
            ],
            unit="ops",
        ),
        Panel(
            "Messages received / s by type",
            "The same traffic by message type (job.*, task.*, federation.*, ...).",
            [
                Target(
                    f"sum by (type) (rate(fedmq_bus_messages_received_total{BUS_SEL}[{RATE}]))",
                    "{{type}}",
                )
            ],
            unit="ops",
        ),
        Panel(
            "Published bytes / s by topic",
            "Envelope bytes published per second (federation payloads dominate).",
            [
                Target(
                    f"sum by (topic) (rate(fedmq_bus_published_bytes_total{BUS_SEL}[{RATE}]))",
                    "{{topic}}",
                )
            ],
            unit="Bps",
        ),
        Panel(
            "Handler latency p95 by topic",
            "Time a handler spends on one envelope, 95th percentile.",
            [Target(quantile(0.95, "fedmq_bus_handler_seconds", "topic", BUS_SEL), "{{topic}}")],
            unit="s",
        ),
        Panel(
            "Dead letters by topic and reason",
            "Envelopes dead-lettered per hour. Every one needs an operator "
            "(FedmqDeadLettersIncreasing alert; docs/operations.md).",
            [
                Target(
                    "sum by (topic, reason) "
                    f"(increase(fedmq_bus_messages_dead_lettered_total{BUS_SEL}[1h]))",
                    "{{topic}} {{reason}}",
                )
            ],
        ),
        Panel(
            "Duplicates dropped / s by topic",
            "Redeliveries the inbox recognised and dropped (effectively-once). A steady stream "
            "means consumers are restarting or acks are slow.",
            [
                Target(
                    f"sum by (topic) (rate(fedmq_bus_duplicates_dropped_total{BUS_SEL}[{RATE}]))",
                    "{{topic}}",
                )
            ],
            unit="ops",
        ),
        Panel(
            "RabbitMQ ready messages per queue",
            "Messages waiting for a consumer (FedmqQueueBackingUp alert). out.<peer> queues "
            "grow while a site link is down.",
            [Target("sum by (queue) (rabbitmq_queue_messages_ready)", "{{queue}}")],
        ),
        Panel(
            "RabbitMQ unacked messages per queue",
            "Messages delivered to a consumer and not yet acknowledged (in flight).",
            [Target("sum by (queue) (rabbitmq_queue_messages_unacked)", "{{queue}}")],
        ),
        Panel(
            "Dead-letter queue depth",
            "Messages waiting in each dead-letter queue (<topic>.dlq; out.<peer>.dlq holds "
            "what a peer refused). Not 0 fires FedmqDeadLetterQueueNotEmpty until emptied.",
            [
                Target(
                    'sum by (queue) (rabbitmq_queue_messages{queue=~".+\\\\.dlq"})',
                    "{{queue}}",
                )
            ],
            thresholds=[(None, "green"), (1, "red")],
        ),
        Panel(
            "Consumers per service queue",
            "Consumers of each service's queue: 0 fires FedmqServiceQueueNoConsumer (the "
            "service is down; its messages wait and jobs hang).",
            [Target(f"sum by (queue) (rabbitmq_queue_consumers{{{SERVICE_QUEUES}}})", "{{queue}}")],
            thresholds=[(None, "red"), (1, "green")],
        ),
    ],
)

PEER = '{peer=~"$peer"}'
LINK = Dashboard(
    uid="fedmq-link",
    title="fedmq / Site link",
    description="The gateway's link to every peer site: up, traffic, lag, refusals.",
    filename="site-link.json",
    variables=[Variable("peer", "peer", "label_values(fedmq_gateway_link_up, peer)")],
    panels=[
        Panel(
            "Link up per peer",
            "1 while the outbound connection to the peer is up (FedmqPeerLinkDown alert).",
            [Target(f"max by (peer) (fedmq_gateway_link_up{PEER})", "{{peer}}")],
            kind="stat",
            width=24,
            height=4,
            thresholds=[(None, "red"), (1, "green")],
            mappings=UP_DOWN,
        ),
        Panel(
            "Relayed messages / s by peer and direction",
            "out = acknowledged by the peer; in = published into this party's broker.",
            [
                Target(
                    f"sum by (peer, direction) (rate(fedmq_gateway_relayed_total{PEER}[{RATE}]))",
                    "{{peer}} {{direction}}",
                )
            ],
            unit="ops",
        ),
        Panel(
            "Relayed bytes / s by peer and direction",
            "Envelope bytes over the link.",
            [
                Target(
                    "sum by (peer, direction) "
                    f"(rate(fedmq_gateway_relayed_bytes_total{PEER}[{RATE}]))",
                    "{{peer}} {{direction}}",
                )
            ],
            unit="Bps",
        ),
        Panel(
            "Relay lag p50 / p95 by peer",
            "From taking a message off out.<peer> to the peer's ACK (its broker confirmed).",
            p50_and_p95("fedmq_gateway_relay_seconds", "peer", "{{peer}}", PEER),
            unit="s",
        ),
        Panel(
            "Link RTT p95 by peer",
            "Link-level ping/pong round trip: the network alone, without any broker.",
            [Target(quantile(0.95, "fedmq_gateway_link_rtt_seconds", "peer", PEER), "{{peer}}")],
            unit="s",
        ),
        Panel(
            "Link streams up by peer",
            "Open TLS streams per peer (link_streams; large bodies are striped across them).",
            [Target(f"max by (peer) (fedmq_gateway_link_streams_up{PEER})", "{{peer}}")],
        ),
        Panel(
            "Link TCP RTT and retransmissions by peer",
            "The kernel's smoothed RTT of the link's streams (TCP_INFO), and TCP segments "
            "retransmitted per second: loss on the path.",
            [
                Target(f"max by (peer) (fedmq_gateway_link_tcp_rtt_seconds{PEER})", "{{peer}} rtt"),
                Target(
                    f"sum by (peer) (rate(fedmq_gateway_link_tcp_retransmits_total{PEER}[{RATE}]))",
                    "{{peer}} retransmits/s",
                ),
            ],
        ),
        Panel(
            "Link bytes in flight by peer",
            "Sent on the link's streams and not yet acknowledged by the peer's TCP: near the "
            "bandwidth-delay product when the link is busy.",
            [Target(f"sum by (peer) (fedmq_gateway_link_bytes_in_flight{PEER})", "{{peer}}")],
            unit="bytes",
        ),
        Panel(
            "Link compression by peer",
            "DATA bodies sent zstd-compressed and bodies tried whose samples did not compress "
            "(ciphertexts, sent as they are), per second; and bytes saved per second.",
            [
                Target(
                    f"sum by (peer) (rate(fedmq_gateway_link_compressed_bodies_total{PEER}"
                    f"[{RATE}]))",
                    "{{peer}} compressed/s",
                ),
                Target(
                    f"sum by (peer) (rate(fedmq_gateway_link_compress_skipped_bodies_total{PEER}"
                    f"[{RATE}]))",
                    "{{peer}} not compressible/s",
                ),
                Target(
                    f"sum by (peer) (rate(fedmq_gateway_link_compress_raw_bytes_total{PEER}"
                    f"[{RATE}]) - rate(fedmq_gateway_link_compress_sent_bytes_total{PEER}"
                    f"[{RATE}]))",
                    "{{peer}} bytes saved/s",
                ),
            ],
        ),
        Panel(
            "Inbound publish latency p95 by peer",
            "Publishing a batch from a peer into the local broker until confirmed.",
            [Target(quantile(0.95, "fedmq_gateway_publish_seconds", "peer", PEER), "{{peer}}")],
            unit="s",
        ),
        Panel(
            "Waiting to be relayed (out.<peer>)",
            "Ready messages in the outbound queues: grows while a link is down or slow.",
            [
                Target(
                    'sum by (queue) (rabbitmq_queue_messages_ready{queue=~"out\\\\..+"})',
                    "{{queue}}",
                )
            ],
        ),
        Panel(
            "Messages refused by reason",
            "Arriving messages refused per hour (bad or missing signature, replay, ...). "
            "Signature reasons fire FedmqGatewaySignatureRefusals.",
            [
                Target(
                    "sum by (reason) (increase(fedmq_gateway_refused_total[1h]))",
                    "{{reason}}",
                )
            ],
        ),
        Panel(
            "Connections refused by side and reason",
            "Link TLS connections refused per hour (unknown CA, expired, wrong party...).",
            [
                Target(
                    "sum by (side, reason) (increase(fedmq_gateway_connections_refused_total[1h]))",
                    "{{side}} {{reason}}",
                )
            ],
        ),
    ],
)

CRYPTO = Dashboard(
    uid="fedmq-crypto",
    title="fedmq / Crypto",
    description="Homomorphic crypto throughput by backend, the crypto pool's job latency, and "
    "each service's CPU and memory.",
    filename="crypto.json",
    variables=[
        Variable("job", "service", "label_values(process_cpu_seconds_total, job)"),
        Variable("backend", "backend", "label_values(fedmq_crypto_ops_total, backend)"),
    ],
    panels=[
        Panel(
            "Crypto ops / s by backend",
            "Values processed per second (one encryption of one number is one op).",
            [
                Target(
                    'sum by (backend) (rate(fedmq_crypto_ops_total{backend=~"$backend"}'
                    f"[{RATE}]))",
                    "{{backend}}",
                )
            ],
            unit="ops",
            stack=True,
        ),
        Panel(
            "Crypto ops / s by op and backend",
            "encrypt, decrypt, add, scalar_mul, matvec ... per backend.",
            [
                Target(
                    'sum by (op, backend) (rate(fedmq_crypto_ops_total{backend=~"$backend"}'
                    f"[{RATE}]))",
                    "{{op}} {{backend}}",
                )
            ],
            unit="ops",
        ),
        Panel(
            "Crypto pool job latency p50 / p95",
            "One job of the crypto pool (a chunk of a batch), by op and backend.",
            p50_and_p95(
                "fedmq_crypto_job_seconds",
                "op, backend",
                "{{op}} {{backend}}",
                '{backend=~"$backend"}',
            ),
            unit="s",
        ),
        Panel(
            "Crypto pool jobs / s",
            "Pool jobs finished per second, by op and backend.",
            [
                Target(
                    "sum by (op, backend) "
                    f'(rate(fedmq_crypto_job_seconds_count{{backend=~"$backend"}}[{RATE}]))',
                    "{{op}} {{backend}}",
                )
            ],
            unit="ops",
        ),
        Panel(
            "CPU by service",
            "CPU seconds per second per service (1 = one core busy), all replicas summed.",
            [
                Target(
                    f'sum by (job) (rate(process_cpu_seconds_total{{job=~"$job"}}[{RATE}]))',
                    "{{job}}",
                )
            ],
            unit="short",
            stack=True,
        ),
        Panel(
            "CPU by instance",
            "The same per replica: one busy worker among idle ones shows here.",
            [
                Target(
                    f'sum by (instance) (rate(process_cpu_seconds_total{{job=~"$job"}}[{RATE}]))',
                    "{{instance}}",
                )
            ],
            unit="short",
        ),
        Panel(
            "Resident memory by instance",
            "Resident set size of each service process.",
            [
                Target(
                    'sum by (job, instance) (process_resident_memory_bytes{job=~"$job"})',
                    "{{job}} {{instance}}",
                )
            ],
            unit="bytes",
        ),
    ],
)

HTTP_SEL = '{job=~"$job", route=~"$route"}'


def error_ratio(status: str, by: str) -> str:
    """Share of requests answered with `status` (a regex), by `by`: 0, not "No data", when
    there were requests and none of them with that status (the `or` fills the missing
    numerator with 0 times the denominator's series)."""
    requests = f'sum by ({by}) (rate(fedmq_http_requests_total{{job=~"$job"}}[{RATE}]))'
    errors = (
        f"sum by ({by}) "
        f'(rate(fedmq_http_requests_total{{job=~"$job", status=~"{status}"}}[{RATE}]))'
    )
    return f"({errors} or {requests} * 0) / {requests}"


HTTP = Dashboard(
    uid="fedmq-http",
    title="fedmq / HTTP",
    description="The gateway's REST API and the services' /healthz and /metrics: rate, "
    "latency, errors by route.",
    filename="http.json",
    variables=[
        Variable("job", "service", "label_values(fedmq_http_requests_total, job)"),
        Variable("route", "route", 'label_values(fedmq_http_requests_total{job=~"$job"}, route)'),
    ],
    panels=[
        Panel(
            "Requests / s by route and status",
            "Requests per second by route template and HTTP status.",
            [
                Target(
                    f"sum by (route, status) (rate(fedmq_http_requests_total{HTTP_SEL}[{RATE}]))",
                    "{{route}} {{status}}",
                )
            ],
            unit="reqps",
            width=24,
        ),
        *(
            Panel(
                f"Latency {name} by route",
                f"{what} request duration by route.",
                [Target(quantile(q, "fedmq_http_request_seconds", "route", HTTP_SEL), "{{route}}")],
                unit="s",
                width=8,
            )
            for q, name, what in (
                (0.5, "p50", "Median"),
                (0.95, "p95", "95th percentile"),
                (0.99, "p99", "99th percentile"),
            )
        ),
        Panel(
            "Server error ratio (5xx) by service",
            "Share of requests answered with a 5xx status.",
            [Target(error_ratio("5..", "job"), "{{job}}")],
            unit="percentunit",
        ),
        Panel(
            "Client error ratio (4xx) by route",
            "Share of requests refused as the client's fault: 401/403 are bad or missing API "
            "tokens, 422 malformed requests.",
            [Target(error_ratio("4..", "route"), "{{route}}")],
            unit="percentunit",
        ),
    ],
)

AUDIT = Dashboard(
    uid="fedmq-audit",
    title="fedmq / Audit",
    description="The audit service (docs/audit.md): messages recorded, findings by rule and "
    "severity, stop requests, lag behind the traffic, the hash chain and its checkpoints.",
    filename="audit.json",
    panels=[
        Panel(
            "Messages audited / s by direction and type",
            "Messages recorded in the audit log per second: out (to a peer), in (from a "
            "peer), local (the party's control traffic).",
            [
                Target(
                    f"sum by (direction, type) (rate(fedmq_audit_messages_total[{RATE}]))",
                    "{{direction}} {{type}}",
                )
            ],
            unit="ops",
            width=24,
        ),
        Panel(
            "Findings by rule and severity",
            "Rules broken in the window (critical ones stopped their job).",
            [
                Target(
                    f"sum by (rule, severity) (increase(fedmq_audit_findings_total[{RATE}]))",
                    "{{rule}} ({{severity}})",
                )
            ],
        ),
        Panel(
            "Stop requests",
            "Jobs the audit asked the scheduler to stop (critical findings) in the window.",
            [Target(f"sum(increase(fedmq_audit_stop_requests_total[{RATE}]))", "stop requests")],
        ),
        Panel(
            "Audit lag p50 / p95",
            "From a message's creation (its envelope's created_at) to its record in the log.",
            p50_and_p95("fedmq_audit_lag_seconds", "instance", "{{instance}}"),
            unit="s",
        ),
        Panel(
            "Last lag",
            "Seconds from the last recorded message's creation to its record: high while the "
            "audit catches up after an outage (FedmqAuditLagging after 5 min above 30 s).",
            [Target("max by (instance) (fedmq_audit_last_lag_seconds)", "{{instance}}")],
            unit="s",
        ),
        Panel(
            "Chain length and checkpoints",
            "The last record's seq, and signed checkpoints written in the window.",
            [
                Target("max by (instance) (fedmq_audit_chain_seq)", "seq {{instance}}"),
                Target(
                    f"sum by (instance) (increase(fedmq_audit_checkpoints_total[{RATE}]))",
                    "checkpoints {{instance}}",
                ),
            ],
        ),
    ],
)

SERVING = Dashboard(
    uid="fedmq-serving",
    title="fedmq / Serving",
    description="Online prediction (docs/serving.md): requests per second, latency percentiles "
    "and errors by cause, by service and model version; each host's answers; rows asked per "
    "calling party at a host (mass queries that could fit the host's weights show here).",
    filename="serving.json",
    variables=[
        Variable("service", "service", "label_values(fedmq_serving_requests_total, service)")
    ],
    panels=[
        Panel(
            "Requests / s by service and version",
            "Prediction requests answered at the guest, per second, by outcome (ok, fallback: "
            "scored by the guest alone while a host was silent).",
            [
                Target(
                    "sum by (service, version, outcome) (rate(fedmq_serving_requests_total"
                    f'{{service=~"$service", outcome=~"ok|fallback"}}[{RATE}]))',
                    "{{service}} v{{version}} {{outcome}}",
                )
            ],
            unit="reqps",
            width=24,
        ),
        Panel(
            "Latency p50 / p95 by service and version",
            "A request inside the guest's serving service: its own part, the hosts' calls "
            "through both gateways, the sigmoid.",
            p50_and_p95(
                "fedmq_serving_request_seconds",
                "service, version",
                "{{service}} v{{version}}",
                '{service=~"$service"}',
            ),
            unit="s",
        ),
        Panel(
            "Latency p99 by service",
            "The slowest 1% of requests (the issue's target: 15 ms at 500 requests/s).",
            [
                Target(
                    quantile(
                        0.99, "fedmq_serving_request_seconds", "service", '{service=~"$service"}'
                    ),
                    "p99 {{service}}",
                )
            ],
            unit="s",
        ),
        Panel(
            "Errors by cause and party",
            "Refused or failed requests per second: unavailable (a host did not answer in "
            "time), not_found (unknown service, or an id a host has no features for), "
            "bad_features, rate_limited; party = where it happened.",
            [
                Target(
                    "sum by (party, outcome) (rate(fedmq_serving_requests_total"
                    f'{{service=~"$service", outcome!~"ok|fallback"}}[{RATE}]))',
                    "{{party}} {{outcome}}",
                )
            ],
            unit="reqps",
        ),
        Panel(
            "Host call latency p50 / p95",
            "One call for a host's partial scores, through both gateways and back.",
            p50_and_p95("fedmq_serving_host_call_seconds", "party", "{{party}}"),
            unit="s",
        ),
        Panel(
            "Rows asked per calling party (host)",
            "Rows a host scored for each guest, per second: a guest extracting the host's "
            "weights by mass queries shows as a step here.",
            [
                Target(
                    f"sum by (caller_party) (rate(fedmq_serving_partial_rows_total[{RATE}]))",
                    "{{caller_party}}",
                )
            ],
            unit="ops",
        ),
        Panel(
            "Rate-limited requests",
            "Refused by the per-caller limit (guest) or the per-party limit (host).",
            [
                Target(
                    f"sum by (kind) (increase(fedmq_serving_rate_limited_total[{RATE}]))",
                    "{{kind}}",
                )
            ],
        ),
    ],
)

DASHBOARDS = [JOBS, BUS, LINK, CRYPTO, HTTP, AUDIT, SERVING]


def rendered() -> dict[str, str]:
    """filename -> the JSON text this script writes (stable key order, trailing newline)."""
    return {d.filename: json.dumps(render(d), indent=2) + "\n" for d in DASHBOARDS}


def main() -> int:
    DASHBOARDS_DIR.mkdir(exist_ok=True)
    for filename, text in rendered().items():
        (DASHBOARDS_DIR / filename).write_text(text)
        print(f"wrote {DASHBOARDS_DIR / filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
