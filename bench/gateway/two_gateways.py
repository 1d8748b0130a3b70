"""What the gateway benchmarks (run.py, rpc.py) share: the local servers' URLs and two parties'
gateways started in this process on memory:// buses (link, TLS and crypto without a broker)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedbus import Bus, connect

AMQP = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PG = os.environ.get("FEDMQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("FEDMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def local_servers() -> dict[str, str]:
    """fedmq.local's server arguments for the local RabbitMQ, Redis and PostgreSQL (the
    launcher picks its own vhost and database number, hence the URLs without them)."""
    return {
        "amqp_url": AMQP.rsplit("/", 1)[0],
        "redis_url": REDIS.rsplit("/", 1)[0],
        "pg_admin_url": PG,
    }


@contextmanager
def memory_gateways(
    prefix: str, caller: str, responder: str, **settings: Any
) -> Iterator[tuple[Bus, Bus]]:
    """Gateways of `caller` and `responder` peered with each other over mutual TLS on loopback,
    each on its own memory:// bus; yields (caller's bus, responder's bus). `settings`: more
    GatewaySettings fields for both."""
    from fedgateway import pki
    from fedgateway.main import Gateway
    from fedgateway.settings import GatewaySettings

    from fedmq.local import free_port

    root = Path(tempfile.mkdtemp(prefix=prefix))
    name = uuid.uuid4().hex[:6]
    pki.init_ca(root / "ca", "bench")
    ports = {p: free_port() for p in (caller, responder)}
    gateways = []
    try:
        for party, peer in ((responder, caller), (caller, responder)):
            pki.ensure_party(root / "ca", party, root / party)
            g = Gateway(
                GatewaySettings(
                    party_id=party,
                    bus_url=f"memory://{name}-{party}",
                    database_url="",
                    identity_dir=root / party,
                    listen_host="127.0.0.1",
                    listen_port=ports[party],
                    http_port=0,
                    peers={peer: {"address": f"127.0.0.1:{ports[peer]}"}},
                    identity_check_interval_s=0,
                    log_level="WARNING",
                    **settings,
                )
            )
            g.start()
            gateways.append(g)
        yield connect(f"memory://{name}-{caller}"), connect(f"memory://{name}-{responder}")
    finally:
        for g in gateways:
            g.stop()
        shutil.rmtree(root, ignore_errors=True)
