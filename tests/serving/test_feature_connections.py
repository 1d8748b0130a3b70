"""The host's feature lookups run on a Redis connection their thread keeps
(fedserving.features.thread_client): one per thread, reused, and back after it was dropped."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from fedflow.tables import Table
from fedserving.features import FeatureStore


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def test_each_thread_reads_on_its_own_connection_and_reconnects(client: redis.Redis[bytes]) -> None:
    # Prepare
    store = FeatureStore(client, f"fedmq-test-{uuid.uuid4().hex[:8]}:")
    store.load(
        "online",
        Table(
            ids=np.array(["a", "b"], dtype=np.str_),
            features=np.array([[1.0, 2.0], [3.0, 4.0]]),
            feature_names=["h0", "h1"],
            labels=None,
        ),
    )
    seen: dict[str, redis.Redis[bytes]] = {}

    def read(name: str) -> None:
        for _ in range(3):
            np.testing.assert_array_equal(store.rows(["b", "a"], ["h1"]), [[4.0], [2.0]])
        seen[name] = store._local.client  # kept alive: ids stay apart

    # Execute
    threads = [threading.Thread(target=read, args=(n,)) for n in ("t1", "t2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    read("main")
    mine = store._local.client
    client.client_kill_filter(_id=mine.client_id())  # the server drops this thread's connection
    read("main again")  # answers: the lookup went again on a new connection
    # Assert
    assert len({id(seen["t1"]), id(seen["t2"]), id(seen["main"])}) == 3
