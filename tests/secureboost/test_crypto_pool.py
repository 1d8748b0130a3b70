"""hetero_secureboost on the party's crypto job pool: the host's encrypted histograms (k_mul
rounds, the compression's k_pow) run as crypto jobs on replicas (fedflow.cryptopool), and the
model is still the reference's; the feature batches of the host's histograms do not change a
single cell."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedbus.inbox import InboxTransaction
from fedcrypto import generate_keypair
from fedflow.components.hetero_secureboost import cipher
from fedflow.cryptopool import BusExecutor, CryptoReplica
from fedflow.standalone import LocalWorld
from fedschemas import Envelope, Payload
from fedschemas.payloads import CryptoJob

from tests.flow.running import start_task
from tests.secureboost.data import GUEST, HOST
from tests.secureboost.test_resume import PARAMS, assert_reference_model, tasks

ONE_TREE = {**PARAMS, "num_trees": 1}


class CountingReplica(CryptoReplica):
    """A replica that remembers which kernels it ran (the test's evidence of where work went)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.functions: Counter[str] = Counter()

    def handle_job(self, envelope: Envelope, payload: Payload, tx: InboxTransaction) -> None:
        if isinstance(payload, CryptoJob):
            self.functions[payload.function.rsplit(":", 1)[-1]] += 1
        super().handle_job(envelope, payload, tx)


@pytest.fixture
def pooled_world(tmp_path: Path) -> Iterator[tuple[LocalWorld, dict[str, list[CountingReplica]]]]:
    """Two parties whose components' ctx.executor is a BusExecutor over their own broker, each
    served by two replicas."""
    with LocalWorld([GUEST, HOST], tmp_path) as world:
        replicas: dict[str, list[CountingReplica]] = {}
        executors: list[BusExecutor] = []
        for party in (GUEST, HOST):
            bus = world.buses[party]
            replicas[party] = [
                CountingReplica(bus, party, replica_id=f"{party}-{i}") for i in (0, 1)
            ]
            for replica in replicas[party]:
                replica.start()
            executor = BusExecutor(bus, party, replicas=2, timeout_s=120)
            executors.append(executor)
            world.parties[party].runtime.executor = executor
        try:
            yield world, replicas
        finally:
            for executor in executors:
                executor.shutdown()
            for party_replicas in replicas.values():
                for replica in party_replicas:
                    replica.stop()


def test_histograms_built_on_the_crypto_pool_give_the_reference_model(
    pooled_world: tuple[LocalWorld, dict[str, list[CountingReplica]]],
) -> None:
    # Prepare
    world, replicas = pooled_world
    specs = tasks(world, "job-pool", ONE_TREE)

    # Execute
    running = [
        start_task(world, spec, recv_timeout=120, join_timeout=300) for spec in specs.values()
    ]
    for task in running:
        task.join()

    # Assert: the job succeeded with the reference's trees, and the host's histogram products
    # and compression ran on the replicas (a batch below fedcrypto's minimum chunk, like the
    # re-randomisation of a few ciphertexts, stays local; so do the guest's decryptions of
    # this table: only non-empty cells travel, under 2 x 64 ciphertexts per level)
    assert [task.error for task in running] == [[], []]
    assert_reference_model(world, "job-pool", ONE_TREE)
    host_ran = sum((r.functions for r in replicas[HOST]), Counter())
    assert host_ran["k_mul"] > 0 and host_ran["k_pow"] > 0
    assert all(r.jobs_done > 0 for r in replicas[HOST])


def test_histograms_are_the_same_whatever_the_feature_batches() -> None:
    # Prepare: 600 rows, 6 features, two nodes; batches of one feature up to all of them
    public_key, private_key = generate_keypair(512, insecure_allow_short=True)
    rng = np.random.default_rng(3)
    rows, features, max_bin = 600, 6, 8
    plain = rng.integers(1, 1000, size=rows)
    values = np.zeros((rows, public_key.plain_limbs), dtype=np.uint64)
    values[:, 0] = plain
    data = private_key.encrypt_residues(values)
    bins = rng.integers(0, max_bin + 1, size=(rows, features)).astype(np.uint16)
    bins[:, 2] = 3  # one feature entirely in one bin: its only cell is left out
    positions = rng.integers(-1, 2, size=rows).astype(np.int32)
    nodes = np.array([0, 1], dtype=np.int64)
    kinds = cipher.cell_kinds(bins, positions, nodes, max_bin, skip_empty=False)

    # Execute
    built = [
        cipher.encrypted_histograms(
            public_key, data, bins, positions, nodes, max_bin, None, kinds, batch_bytes=size
        )
        for size in (1, 200 * public_key.limbs * 8, 1 << 30)
    ]

    # Assert: bit-identical cells, and each sent (node, feature, bin) sums its rows'
    # plaintexts (the left-out cells are not sent)
    for other in built[1:]:
        np.testing.assert_array_equal(other, built[0])
    sums = private_key.decrypt_residues(built[0])
    got = np.zeros((2, features, max_bin + 1), dtype=np.int64)
    got[kinds == cipher.SENT] = [int.from_bytes(r.tobytes(), "little") for r in sums]
    for node in (0, 1):
        for f in range(features):
            at = positions == node
            expected = np.bincount(bins[at, f], weights=plain[at], minlength=max_bin + 1)
            top = int(np.argmax(np.bincount(bins[at, f], minlength=max_bin + 1)))
            assert kinds[node, f, top] == cipher.LEFT_OUT
            keep = np.arange(max_bin + 1) != top
            np.testing.assert_array_equal(got[node, f, keep], expected[keep].astype(np.int64))
