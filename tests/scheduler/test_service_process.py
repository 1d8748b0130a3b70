"""`python -m fedscheduler` as a process: it migrates its database, answers /healthz and
/metrics, serves commands on RabbitMQ, and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from fedbus import connect
from fedscheduler.migrations import head_revision
from fedscheduler.rpc import SchedulerClient

from fedmq import local

from .conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except OSError:
        return 0, ""


def test_the_service_serves_health_metrics_and_commands_and_stops_on_sigterm(
    tmp_path: Path, amqp_url: str, unique_name: str
) -> None:
    # Prepare
    port = local.free_port()  # below the ephemeral range: no connect() takes it
    db = tmp_path / "scheduler.db"
    topic = f"{unique_name}.scheduler"
    env = {
        **os.environ,
        "FEDMQ_SCHEDULER_PARTY_ID": "9999",
        "FEDMQ_SCHEDULER_BUS_URL": amqp_url,
        "FEDMQ_SCHEDULER_DATABASE_URL": f"sqlite:///{db}",
        "FEDMQ_SCHEDULER_HTTP_PORT": str(port),
        "FEDMQ_SCHEDULER_TOPIC": topic,
        "FEDMQ_SCHEDULER_RPC_TOPIC": f"{topic}.rpc",
        "FEDMQ_SCHEDULER_WORKER_TOPIC": f"{unique_name}.worker",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedscheduler"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    bus = connect(amqp_url)
    try:
        # Execute
        health = wait_for(
            lambda: (r := _get(f"http://127.0.0.1:{port}/healthz"))[0] == 200 and r,
            timeout=30,
            what="/healthz",
        )
        client = SchedulerClient(bus, "9999", topic=f"{topic}.rpc", timeout=10)
        grant = client.grant_add("breast_hetero_guest", "10000", ["psi"])
        _status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        output = proc.stdout.read().decode() if proc.stdout else ""

        # Assert
        assert json.loads(health[1]) == {"status": "ok", "party_id": "9999"}
        assert grant["table"] == "breast_hetero_guest"
        assert 'fedmq_scheduler_rpc_requests_total{op="grant_add",outcome="ok"} 1.0' in metrics
        assert code == 0, output[-2000:]
        assert "scheduler_stopped" in output
        with sa.create_engine(f"sqlite:///{db}").connect() as conn:
            revision = conn.execute(
                sa.text("SELECT version_num FROM scheduler_alembic_version")
            ).scalar_one()
        assert revision == head_revision()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in (topic, f"{topic}.rpc", f"{unique_name}.worker"):
            bus.delete(name)
        bus.close()
