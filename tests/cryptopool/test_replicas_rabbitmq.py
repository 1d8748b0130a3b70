"""The crypto job pool on RabbitMQ with worker replicas as separate processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fedbus import Bus, connect
from fedcrypto.paillier import PrivateKey, PublicKey, generate_keypair
from fedflow.cryptopool import BusExecutor

from tests.cryptopool.conftest import ReplicaProcess, StartReplica

PARTY = "9999"


@pytest.fixture(scope="module")
def keypair() -> tuple[PublicKey, PrivateKey]:
    pk, sk = generate_keypair(2048)
    pk.precompute()
    return pk, sk


@pytest.fixture
def bus(amqp_url: str) -> Iterator[Bus]:
    with connect(amqp_url) as b:
        yield b


@pytest.fixture
def topic(bus: Bus, unique_name: str) -> Iterator[str]:
    name = f"svc.crypto.{unique_name}"
    yield name
    bus.delete(name)


@pytest.fixture
def replica_on_topic(
    amqp_url: str, topic: str, start_replica: StartReplica
) -> Callable[[], ReplicaProcess]:
    """Starts one more crypto-only worker process of PARTY serving `topic`."""
    return lambda: start_replica(bus_url=amqp_url, party_id=PARTY, crypto_topic=topic)


def test_two_replica_processes_share_a_large_job_and_match_the_serial_results(
    bus: Bus,
    topic: str,
    replica_on_topic: Callable[[], ReplicaProcess],
    keypair: tuple[PublicKey, PrivateKey],
) -> None:
    # Prepare: two crypto-only worker processes on the same local topic.
    pk, sk = keypair
    for _ in range(2):
        replica_on_topic()
    rng = np.random.default_rng(11)
    values = rng.normal(size=1500)
    x = rng.normal(size=(1500, 4))
    # Jobs of at most 128 KiB: X.T @ [[d]]'s four parts (about 400 KiB each) are cut further.
    pool = BusExecutor(bus, PARTY, topic=topic, replicas=2, timeout_s=240, max_job_bytes=128 * 1024)
    try:
        # Execute: encrypt (12 chunks) and X.T @ [[d]] on the replicas.
        enc = pk.encrypt(values, executor=pool, chunk_size=125)
        grad = enc.matmul(x, executor=pool)
    finally:
        pool.shutdown()

    # Assert: plaintexts as the serial path, bit-identical X.T @ [[d]], both replicas worked.
    assert np.allclose(sk.decrypt(enc), values, atol=1e-9)
    assert np.array_equal(grad.data, enc.matmul(x).data)
    assert len(pool.answered_by) == 2, pool.answered_by
    assert sum(pool.answered_by.values()) > 12 + 4


def test_a_replica_killed_mid_job_leaves_its_chunk_to_the_other_and_the_job_completes(
    bus: Bus,
    topic: str,
    replica_on_topic: Callable[[], ReplicaProcess],
    keypair: tuple[PublicKey, PrivateKey],
) -> None:
    # Prepare: 2048-bit CRT decryption in 16 chunks of 100 (a fraction of a second each).
    pk, sk = keypair
    values = np.arange(-800, 800)
    enc = pk.encrypt(values)
    victim = replica_on_topic()
    survivor = replica_on_topic()
    pool = BusExecutor(bus, PARTY, topic=topic, replicas=2, timeout_s=240)
    try:
        with ThreadPoolExecutor(1) as caller:
            decrypting = caller.submit(sk.decrypt_residues, enc.data, executor=pool, chunk_size=100)

            # Execute: SIGKILL the victim once it finished a chunk (it holds the next, unacked).
            victim.wait_for("crypto_job_done", timeout=120)
            victim.kill()
            residues = decrypting.result(timeout=240)
    finally:
        pool.shutdown()

    # Assert: every chunk answered, the plaintexts are right, the survivor did the rest.
    assert victim.proc.returncode == -9
    assert np.array_equal(residues, sk.decrypt_residues(enc.data))
    done_by_victim = len(victim.events("crypto_job_done"))
    assert done_by_victim < 16
    assert len(survivor.events("crypto_job_done")) >= 16 - done_by_victim
