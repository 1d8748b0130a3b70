"""fedcommon.metrics.CachedLabels: a labelled metric whose children are kept after first use;
the series and their values are the metric's own."""

from __future__ import annotations

import threading

from fedcommon.metrics import CachedLabels
from prometheus_client import CollectorRegistry, Counter, generate_latest


def test_children_are_kept_and_counts_reach_the_registry() -> None:
    registry = CollectorRegistry()
    requests = CachedLabels(
        Counter("demo_requests", "Demo.", ["service", "outcome"], registry=registry)
    )
    first = requests.labels("risk", "ok")
    assert requests.labels("risk", "ok") is first
    assert requests.labels("risk", "ok") is requests.metric.labels("risk", "ok")

    def count() -> None:
        for _ in range(500):
            requests.labels("risk", "ok").inc()
            requests.labels("risk", "not_found").inc()

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = generate_latest(registry).decode()
    assert 'demo_requests_total{outcome="ok",service="risk"} 2000.0' in text
    assert 'demo_requests_total{outcome="not_found",service="risk"} 2000.0' in text
    assert requests._name == "demo_requests"  # everything else is the metric's
