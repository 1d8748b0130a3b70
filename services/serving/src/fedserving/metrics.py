"""Prometheus series of the serving service (the Grafana serving dashboard reads them).

Guest side, per request: fedmq_serving_requests_total{service, version, party, outcome} counts
the request's outcome at the guest (party = the guest) and each host call's outcome (party = the
host); fedmq_serving_request_seconds{service, version} is the whole request inside the service;
fedmq_serving_host_call_seconds{party} a request's wait for a host's answer,
fedmq_serving_host_calls_total{party} the calls actually sent (concurrent requests share one);
fedmq_serving_rows_total{service,
version} rows scored. Host side: fedmq_serving_partial_requests_total{caller_party, model,
outcome}, fedmq_serving_partial_seconds{caller_party} and
fedmq_serving_partial_rows_total{caller_party}, so a guest scoring rows en masse
(to fit the host's weights) shows per calling party. fedmq_serving_rate_limited_total{kind}:
refused by the per-caller (guest) or per-party (host) limit.
"""

from __future__ import annotations

from fedcommon.metrics import CachedLabels
from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = CachedLabels(
            Counter(
                "fedmq_serving_requests",
                "Prediction requests by service, model version, party and outcome",
                ["service", "version", "party", "outcome"],
                registry=r,
            )
        )
        self.request_seconds = CachedLabels(
            Histogram(
                "fedmq_serving_request_seconds",
                "Prediction request time inside the guest's serving service",
                ["service", "version"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.host_call_seconds = CachedLabels(
            Histogram(
                "fedmq_serving_host_call_seconds",
                "One call to a host for its partial scores, through both gateways",
                ["party"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.host_calls = CachedLabels(
            Counter(
                "fedmq_serving_host_calls",
                "Calls sent to a host (concurrent requests share one: fedserving.coalesce)",
                ["party"],
                registry=r,
            )
        )
        self.partial_seconds = CachedLabels(
            Histogram(
                "fedmq_serving_partial_seconds",
                "Host: one partial-score request inside the service (lookup and scoring)",
                ["caller_party"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.rows = CachedLabels(
            Counter("fedmq_serving_rows", "Rows scored", ["service", "version"], registry=r)
        )
        self.partial_requests = CachedLabels(
            Counter(
                "fedmq_serving_partial_requests",
                "Host: partial-score requests by calling party, model and outcome",
                ["caller_party", "model", "outcome"],
                registry=r,
            )
        )
        self.partial_rows = CachedLabels(
            Counter(
                "fedmq_serving_partial_rows",
                "Host: rows scored for a calling party",
                ["caller_party"],
                registry=r,
            )
        )
        self.rate_limited = CachedLabels(
            Counter(
                "fedmq_serving_rate_limited",
                "Requests refused by a rate limit (kind: caller at the guest, party at the host)",
                ["kind"],
                registry=r,
            )
        )
