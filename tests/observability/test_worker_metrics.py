"""The worker's metrics: crypto pool jobs counted by operation and the backend that ran them
(the worker's own thread pool and a crypto replica serving the bus), and a real
`python -m fedworker` serving /healthz and /metrics with its bus and process series."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from fedbus import Bus, connect
from fedbus.runtime import EnvelopePublisher
from fedcrypto.paillier import PrivateKey, PublicKey, generate_keypair
from fedcrypto.paillier import kernels as paillier_kernels
from fedflow.cryptopool import BusExecutor
from fedworker.crypto import MeteredCryptoReplica, MeteredThreadPool, crypto_backend
from fedworker.metrics import WorkerMetrics
from prometheus_client.parser import text_string_to_metric_families

from fedmq.local import free_port
from tests.polling import wait_until
from tests.runtime.helpers import GUEST, ping
from tests.worker.conftest import WorkerProcess

PARTY = "9999"
BACKEND = "native" if paillier_kernels.native_available() else "gmpy2"


@pytest.fixture(scope="module")
def keypair() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(512, insecure_allow_short=True)


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_the_backend_label_names_the_kernels_really_in_use() -> None:
    assert crypto_backend() == BACKEND


def test_the_thread_pool_counts_each_chunk_as_a_job_and_each_value_as_an_op(
    keypair: tuple[PublicKey, PrivateKey],
) -> None:
    # Prepare
    pk, sk = keypair
    metrics = WorkerMetrics(process=False)
    pool = MeteredThreadPool(metrics, max_workers=2)
    values = np.linspace(-5.0, 5.0, 300)

    # Execute: 300 encryptions and 300 decryptions in chunks of 64
    try:
        encrypted = pk.encrypt(values, executor=pool, chunk_size=64)
        decrypted = sk.decrypt(encrypted, executor=pool, chunk_size=64)
    finally:
        pool.shutdown()

    # Assert: the results are right, and every value and chunk was counted once
    assert np.allclose(decrypted, values)
    assert sample(metrics, "fedmq_crypto_ops_total", op="encrypt", backend=BACKEND) == 300
    assert sample(metrics, "fedmq_crypto_ops_total", op="decrypt", backend=BACKEND) == 300
    assert sample(metrics, "fedmq_crypto_job_seconds_count", op="encrypt", backend=BACKEND) == 5
    assert sample(metrics, "fedmq_crypto_job_seconds_sum", op="decrypt", backend=BACKEND) > 0


def test_a_replica_counts_the_jobs_it_serves_from_the_bus(
    keypair: tuple[PublicKey, PrivateKey], unique_name: str
) -> None:
    # Prepare: one metered replica behind a BusExecutor on the memory bus
    pk, sk = keypair
    metrics = WorkerMetrics(process=False)
    bus: Bus = connect(f"memory://{unique_name}")
    replica = MeteredCryptoReplica(bus, PARTY, replica_id="r0", metrics=metrics)
    replica.start()
    executor = BusExecutor(bus, PARTY, replicas=1, timeout_s=60)
    values = np.linspace(-5.0, 5.0, 200)

    # Execute
    try:
        encrypted = pk.encrypt(values, executor=executor, chunk_size=50)
    finally:
        executor.shutdown()
        replica.stop()
        bus.close()

    # Assert: counted where the work ran, per chunk
    assert np.allclose(sk.decrypt(encrypted), values)
    assert sample(metrics, "fedmq_crypto_ops_total", op="encrypt", backend=BACKEND) == 200
    assert sample(metrics, "fedmq_crypto_job_seconds_count", op="encrypt", backend=BACKEND) == 4


def scrape(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return bytes(resp.read())


def series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.integration
def test_a_worker_process_serves_health_and_its_metrics(
    amqp_url: str, pg_url: str, worker_topics: tuple[str, str], tmp_path: Path
) -> None:
    # Prepare: a real worker process on RabbitMQ and PostgreSQL with an HTTP port
    port = free_port()
    worker = WorkerProcess(
        {
            "FEDMQ_WORKER_PARTY_ID": "10000",
            "FEDMQ_WORKER_BUS_URL": amqp_url,
            "FEDMQ_WORKER_DATABASE_URL": pg_url,
            "FEDMQ_WORKER_TOPIC": worker_topics[0],
            "FEDMQ_WORKER_REPLY_TOPIC": worker_topics[1],
            "FEDMQ_WORKER_TEST_HOOKS": "true",  # demo.ping's handler
            "FEDMQ_WORKER_HTTP_PORT": str(port),
        },
        tmp_path,
    )
    try:
        started = worker.wait_for("worker_started")
        client = connect(amqp_url)
        sent = ping(seq=1, text=f"hello {uuid.uuid4().hex[:6]}")

        # Execute: a ping the worker answers with a pong on the reply topic
        EnvelopePublisher(client, GUEST).send(worker_topics[0], sent)
        worker.wait_for("ping_handled")
        health = json.loads(scrape(port, "/healthz"))

        def received() -> float:
            key = (
                "fedmq_bus_messages_received_total",
                (("topic", worker_topics[0]), ("type", "demo.ping")),
            )
            return series(scrape(port, "/metrics").decode()).get(key, 0.0)

        wait_until(lambda: received() == 1, what="the ping counted")
        samples = series(scrape(port, "/metrics").decode())
        client.close()
    finally:
        worker.terminate()

    # Assert
    assert started["http_port"] == port
    assert health == {"status": "ok", "party_id": "10000"}
    published = (
        "fedmq_bus_messages_published_total",
        (("topic", worker_topics[1]), ("type", "demo.pong")),
    )
    assert samples[published] == 1
    assert samples[("fedmq_bus_handler_seconds_count", (("topic", worker_topics[0]),))] == 1
    assert samples[("fedmq_worker_tasks_running", ())] == 0
    assert samples[("process_resident_memory_bytes", ())] > 0
    healthz = (
        "fedmq_http_requests_total",
        (("method", "GET"), ("route", "/healthz"), ("status", "200")),
    )
    assert samples[healthz] == 1
