"""The fault suite's two-party stack: `fedmq local`'s services on servers of the suite's own,
with a fault proxy in front of each party's site link.

Like tests/local_stack.two_parties, but built for faults:
- the parties' RabbitMQ vhosts, per-service broker users and permissions (local.plan's names
  and passwords, local.broker_permissions' regexes) go into the suite's node in ONE
  `rabbitmqctl import_definitions` instead of the launcher's ~20 rabbitmqctl calls (each boots
  an Erlang VM: the launcher's set-up and purge took ~90 s and ~45 s on the loaded CI machine);
  the rest of local.prepare (databases, PKI, gateway settings) runs as it is;
- each gateway dials its peer through a FaultProxy (`proxies[P]` sits in front of party P's
  link port), so a test can cut, slow or corrupt the link between the two processes;
- nothing is purged at the end: the servers are thrown away with their data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from fedmq import local
from fedmq.sdk import Client
from tests.fault_proxy import FaultProxy
from tests.faults.servers import OwnPostgres, OwnRabbitMQ, OwnRedis
from tests.local_stack import DATA, GUEST, HOST, Stack

PARTIES = (GUEST, HOST)
SERVICES = ("gateway", "scheduler", "worker")
"""The services a job needs, the ones the suite kills (`fedmq local` may start more)."""
HOST_TABLE_GRANTS = ["psi", "iter_sum"]


@dataclass
class FaultStack(Stack):
    proxies: dict[str, FaultProxy]
    """party -> the proxy its peer dials to reach it (in front of its link port)."""
    rabbitmq: OwnRabbitMQ
    postgres: OwnPostgres
    redis: OwnRedis

    def kill(self, party: str, service: str) -> tuple[int | None, int]:
        """kill -9 one service of one party and start it again (waits for its /healthz);
        (old pid, new pid)."""
        return local.restart(self.local_dir, party, service, kill=True)

    def heal_link(self) -> None:
        for proxy in self.proxies.values():
            proxy.latency_s = 0.0
            proxy.reset_every(None)
            if proxy.partitioned:
                proxy.heal()

    def partition(self) -> None:
        for proxy in self.proxies.values():
            proxy.partition()


def _broker_definitions(state: local.LocalState) -> dict[str, Any]:
    everything = (".*", ".*", ".*")
    vhosts = [p.vhost for p in state.parties.values()]
    users: dict[str, Any] = {
        "guest": ("guest", "administrator", {v: everything for v in ["/", *vhosts]})
    }
    for p in state.parties.values():
        for service, password in p.broker_passwords.items():
            users[local.broker_user(p.vhost, service)] = (
                password,
                "",
                {p.vhost: local.broker_permissions(service)},
            )
    return {"vhosts": vhosts, "users": users}


@contextmanager
def fault_stack(
    rabbitmq: OwnRabbitMQ, postgres: OwnPostgres, redis: OwnRedis, *, label: str = "faults"
) -> Iterator[FaultStack]:
    """Both parties up and healthy on the given servers, their tables uploaded, the host's
    granted to the guest for psi and iter_sum."""
    token = f"{label}-{uuid.uuid4().hex}"
    root = Path(tempfile.mkdtemp(prefix=f"fedmq-{label}-"))
    saved_cwd, saved_env = Path.cwd(), dict(os.environ)
    os.environ["FEDMQ_GATEWAY_API_TOKENS"] = f'["{token}"]'
    os.environ["RABBITMQ_NODENAME"] = rabbitmq.node  # any rabbitmqctl the launcher still runs
    # Each round's progress reaches the scheduler (not one report per 2 s): a test sees the
    # job mid-run and strikes then.
    os.environ["FEDMQ_WORKER_PROGRESS_INTERVAL_S"] = "0"
    os.chdir(root)
    proxies: dict[str, FaultProxy] = {}
    clients: list[Client] = []
    try:
        state = local.plan(
            list(PARTIES),
            root / "local",
            prefix=f"fedmqf{uuid.uuid4().hex[:8]}",
            federation=label,
            amqp_url=rabbitmq.url.rsplit("/", 1)[0],
            redis_url=redis.url.rsplit("/", 1)[0],
            pg_admin_url=postgres.url,
        )
        definitions = _broker_definitions(state)
        rabbitmq.import_definitions(definitions["vhosts"], definitions["users"])
        known = set(definitions["users"])
        with (
            mock.patch.object(local, "ensure_vhost", lambda vhost, user="guest": None),
            mock.patch.object(local, "existing_users", lambda: known),
            mock.patch.object(
                local,
                "ensure_broker_user",
                lambda vhost, service, password, known=None: local.broker_user(vhost, service),
            ),
        ):
            local.prepare(state)
        for party in PARTIES:
            proxies[party] = FaultProxy(target_port=state.parties[party].link_port)
        for party in PARTIES:
            peers = {
                other: {"address": f"127.0.0.1:{proxies[other].port}"}
                for other in PARTIES
                if other != party
            }
            local.update_gateway_settings(state, party, peers=peers)
        for service in SERVICES:
            for party in PARTIES:
                local.start_service(state, party, service)
        for service in SERVICES:
            for party in PARTIES:
                local.wait_healthy(state, party, timeout=120, service=service)
        guest = Client(f"http://127.0.0.1:{state.parties[GUEST].http_port}", token)
        host = Client(f"http://127.0.0.1:{state.parties[HOST].http_port}", token)
        clients += [guest, host]
        guest.upload_table(
            "breast_hetero_guest", DATA / "breast_hetero_guest.csv", label_column="y"
        )
        host.upload_table("breast_hetero_host", DATA / "breast_hetero_host.csv")
        host.grant("breast_hetero_host", GUEST, HOST_TABLE_GRANTS)
        yield FaultStack(state, guest, host, root, proxies, rabbitmq, postgres, redis)
    finally:
        for client in clients:
            client.close()
        if (root / "local" / local.STATE_FILE).exists():
            local.down(root / "local", timeout=3)
        keep = os.environ.get("FEDMQ_FAULTS_KEEP_LOGS")  # a folder: the services' logs go there
        if keep:
            for party in PARTIES:
                logs = root / "local" / party / "logs"
                if logs.exists():
                    shutil.copytree(logs, Path(keep) / party, dirs_exist_ok=True)
        for proxy in proxies.values():
            proxy.close()
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        shutil.rmtree(root, ignore_errors=True)
