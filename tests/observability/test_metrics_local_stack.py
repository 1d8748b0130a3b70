"""Issue #7's metrics on real processes: two parties launched with `fedmq local` (a RabbitMQ vhost,
a PostgreSQL database and a Redis prefix each), a PSI + evaluation job submitted through the
guest's REST API, then every party's gateway, scheduler and worker scraped at /metrics: the
series the dashboards read (docs/metrics.md) show the work that was done.
"""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.local_stack import GUEST, HOST, PSI_EVAL, Stack, upload_breast
from tests.observability.conftest import SharedStack
from tests.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

PEER = {GUEST: HOST, HOST: GUEST}
RUNNING = "fedmq_worker_tasks_running"

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(stack: Stack, party: str, service: str) -> Samples:
    """Every sample of the service's /metrics, parsed as Prometheus parses it."""
    url = f"http://127.0.0.1:{stack.http_port(party, service)}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of `name` over the series whose labels include `labels`."""
    return sum(
        value
        for series, value in samples.get(name, [])
        if all(series.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def stack(shared_stack: SharedStack) -> Stack:
    """Both parties' services in a scratch directory (their cwd), shared with
    test_prometheus_alerts (tests/observability/conftest.py)."""
    return shared_stack.get()


@pytest.fixture(scope="module")
def scraped(stack: Stack) -> dict[tuple[str, str], Samples]:
    """Run one PSI + evaluation job to success, then scrape every service of both parties."""
    upload_breast(stack)
    job = stack.guest.submit(PSI_EVAL, job_id=f"metrics-psi-{uuid.uuid4().hex[:6]}")
    done = stack.guest.wait(job.job_id, timeout=120, poll=0.5)
    assert done.state == "success", (done.reason, stack.guest.logs(job.job_id))
    host_done = stack.host.wait(job.job_id, timeout=60, poll=0.5)
    assert host_done.state == "success"
    # A worker reports a task's end before its runner thread records it: let them settle.
    for party in (GUEST, HOST):
        wait_until(
            lambda party=party: total(scrape(stack, party, "worker"), RUNNING) == 0,
            what=f"party {party}'s worker idle",
        )
    return {
        (party, service): scrape(stack, party, service)
        for party in (GUEST, HOST)
        for service in ("gateway", "scheduler", "worker")
    }


@pytest.mark.parametrize("party", [GUEST, HOST])
def test_the_bus_series_count_the_messages_of_the_job(
    scraped: dict[tuple[str, str], Samples], party: str
) -> None:
    worker, scheduler = scraped[(party, "worker")], scraped[(party, "scheduler")]
    # Tasks arrive at the worker and their status goes to the scheduler, both over the bus.
    assert total(worker, "fedmq_bus_messages_received_total", topic="svc.worker") > 0
    assert total(worker, "fedmq_bus_messages_published_total", topic="svc.scheduler") > 0
    assert total(worker, "fedmq_bus_published_bytes_total") > 0
    assert total(scheduler, "fedmq_bus_messages_received_total", topic="svc.scheduler") > 0
    assert total(scheduler, "fedmq_bus_messages_published_total", topic="svc.worker") > 0
    assert total(scheduler, "fedmq_bus_messages_published_total", topic=f"out.{PEER[party]}") > 0
    # Nothing of a successful job was dead-lettered.
    for samples in (worker, scheduler):
        assert total(samples, "fedmq_bus_messages_dead_lettered_total") == 0


@pytest.mark.parametrize("party", [GUEST, HOST])
def test_the_gateway_series_show_traffic_and_round_trips_to_the_peer(
    scraped: dict[tuple[str, str], Samples], party: str
) -> None:
    gateway, peer = scraped[(party, "gateway")], PEER[party]
    for direction in ("out", "in"):
        assert total(gateway, "fedmq_gateway_relayed_total", direction=direction, peer=peer) > 0
        assert (
            total(gateway, "fedmq_gateway_relayed_bytes_total", direction=direction, peer=peer) > 0
        )
    assert total(gateway, "fedmq_gateway_link_rtt_seconds_count", peer=peer) > 0
    assert total(gateway, "fedmq_gateway_link_rtt_seconds_sum", peer=peer) > 0
    assert total(gateway, "fedmq_gateway_link_up", peer=peer) == 1
    assert total(gateway, "fedmq_gateway_refused_total") == 0
    assert total(gateway, "process_resident_memory_bytes") > 0


def test_the_submit_call_is_counted_by_its_route_template(
    scraped: dict[tuple[str, str], Samples],
) -> None:
    gateway = scraped[(GUEST, "gateway")]
    assert (
        total(
            gateway, "fedmq_http_requests_total", method="POST", route="/api/v1/jobs", status="201"
        )
        == 1
    )
    assert total(gateway, "fedmq_http_request_seconds_count", route="/api/v1/jobs/{job_id}") > 0
    # Never a raw path with a job id in it.
    routes = {labels["route"] for labels, _ in gateway["fedmq_http_requests_total"]}
    assert not any("metrics-psi-" in route for route in routes)


@pytest.mark.parametrize("party", [GUEST, HOST])
def test_the_worker_and_scheduler_series_show_the_tasks_and_the_job(
    scraped: dict[tuple[str, str], Samples], party: str
) -> None:
    worker, scheduler = scraped[(party, "worker")], scraped[(party, "scheduler")]
    # psi_eval: reader and psi at both parties, evaluation at the guest.
    tasks = 3 if party == GUEST else 2
    assert total(worker, "fedmq_worker_tasks_started_total") >= tasks
    assert total(worker, "fedmq_worker_tasks_started_total", component="psi") >= 1
    assert total(worker, "fedmq_worker_tasks_ended_total") >= tasks
    assert total(worker, "fedmq_worker_task_duration_seconds_count") >= tasks
    assert total(worker, "fedmq_worker_tasks_running") == 0
    assert total(worker, "process_cpu_seconds_total") > 0
    assert total(scheduler, "fedmq_scheduler_jobs_ended_total", state="success") == 1
    assert total(scheduler, "fedmq_scheduler_job_duration_seconds_count", state="success") == 1
    assert total(scheduler, "fedmq_scheduler_jobs_running") == 0
    assert total(scheduler, "fedmq_scheduler_tasks_dispatched_total") >= tasks
