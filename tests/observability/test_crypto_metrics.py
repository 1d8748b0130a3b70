"""fedmq_crypto_* on the paths a real component takes: a two-party hetero_lr whose parties
compute on the worker's metered pool (fedworker.crypto.MeteredThreadPool, what a worker with
no crypto replicas gives its components), with batches small enough that fedcrypto keeps them
in the component's thread, and obfuscators precomputed on prefetch threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedbus import connect
from fedcrypto.paillier import generate_keypair
from fedflow.standalone import LocalWorld
from fedworker.crypto import (
    CRYPTO_OPS,
    MeteredBusExecutor,
    MeteredCryptoReplica,
    MeteredThreadPool,
    crypto_backend,
)
from fedworker.metrics import WorkerMetrics

from tests.lr.conftest import GUEST, HOST, SHORT_KEY_PARAMS, breast, lr_tasks, run_both

BACKEND = crypto_backend()


def ops(metrics: WorkerMetrics, op: str) -> float:
    return (
        metrics.registry.get_sample_value("fedmq_crypto_ops_total", {"op": op, "backend": BACKEND})
        or 0.0
    )


def jobs(metrics: WorkerMetrics, op: str) -> float:
    labels = {"op": op, "backend": BACKEND}
    return metrics.registry.get_sample_value("fedmq_crypto_job_seconds_count", labels) or 0.0


def test_every_op_series_exists_at_zero_before_any_crypto_runs() -> None:
    metrics = WorkerMetrics(process=False)
    pool = MeteredThreadPool(metrics, max_workers=1)
    pool.shutdown()

    for op in CRYPTO_OPS:
        assert (
            metrics.registry.get_sample_value(
                "fedmq_crypto_ops_total", {"op": op, "backend": BACKEND}
            )
            == 0.0
        ), op


def test_a_batch_kept_in_the_callers_thread_is_counted_once() -> None:
    # Prepare: 100 values, fewer than one thread chunk, so fedcrypto runs them inline
    pk, sk = generate_keypair(512, insecure_allow_short=True)
    metrics = WorkerMetrics(process=False)
    pool = MeteredThreadPool(metrics, max_workers=2)
    values = np.linspace(-1.0, 1.0, 100)

    # Execute
    try:
        total = pk.encrypt(values, executor=pool) + pk.encrypt(values, executor=pool)
        decrypted = sk.decrypt(total, executor=pool)
    finally:
        pool.shutdown()

    # Assert
    assert np.allclose(decrypted, 2 * values)
    assert ops(metrics, "encrypt") == 200 and jobs(metrics, "encrypt") == 2
    assert ops(metrics, "decrypt") == 100 and jobs(metrics, "decrypt") == 1


def test_with_crypto_replicas_each_value_is_counted_once_where_it_ran(unique_name: str) -> None:
    # Prepare: the worker's executor over the bus and one replica, each with its own metrics
    pk, sk = generate_keypair(512, insecure_allow_short=True)
    sender, served = WorkerMetrics(process=False), WorkerMetrics(process=False)
    bus = connect(f"memory://{unique_name}")
    replica = MeteredCryptoReplica(bus, "9999", replica_id="r0", metrics=served)
    replica.start()
    executor = MeteredBusExecutor(bus, "9999", replicas=1, timeout_s=60, metrics=sender)
    values = np.linspace(-1.0, 1.0, 200)

    # Execute: a small batch (kept in the caller's thread), then one sent in four jobs
    try:
        small = pk.encrypt(values[:100], executor=executor)
        large = pk.encrypt(values, executor=executor, chunk_size=50)
    finally:
        executor.shutdown()
        replica.stop()
        bus.close()

    # Assert
    assert np.allclose(sk.decrypt(small), values[:100]) and np.allclose(sk.decrypt(large), values)
    assert ops(sender, "encrypt") == 100 and jobs(sender, "encrypt") == 1
    assert ops(served, "encrypt") == 200 and jobs(served, "encrypt") == 4


def test_a_hetero_lr_job_moves_the_crypto_counters_of_both_parties(tmp_path: Path) -> None:
    # Prepare: each party's components compute on its own metered pool
    guest_table, host_table = breast()
    params = {**SHORT_KEY_PARAMS, "epochs": 1, "batch_size": 128}
    metrics = {GUEST: WorkerMetrics(process=False), HOST: WorkerMetrics(process=False)}
    pools = {party: MeteredThreadPool(m, max_workers=2) for party, m in metrics.items()}

    # Execute
    try:
        with LocalWorld([GUEST, HOST], tmp_path / "w") as world:
            for party, pool in pools.items():
                world.parties[party].runtime.executor = pool
            guest, host = run_both(
                world, lr_tasks(world, "crypto-metrics", guest_table, host_table, params)
            )
    finally:
        for pool in pools.values():
            pool.shutdown()

    # Assert: the job succeeded, and each party recorded the work its side of the protocol does
    assert not guest.error and not host.error, (guest.error, host.error)
    rows = len(guest_table.ids)
    g, h = metrics[GUEST], metrics[HOST]
    # Each party encrypts one value per row under its own key (the guest its residual, the
    # host its scores), plus its masks.
    assert ops(g, "encrypt") >= rows and ops(h, "encrypt") >= rows
    for party in (g, h):
        # X^T [[d]] on received ciphertexts, masks added before a masked decryption, the key
        # holder's decryption for its peer, and every received vector checked.
        for op in ("matvec", "add", "decrypt", "validate"):
            assert ops(party, op) > 0, op
            assert jobs(party, op) > 0, op
        assert (
            party.registry.get_sample_value(
                "fedmq_crypto_job_seconds_sum", {"op": "encrypt", "backend": BACKEND}
            )
            > 0
        )
    # Obfuscators for the guest's own key were precomputed on its prefetch threads.
    assert ops(g, "obfuscate") > 0
