"""`fedmq local`: a gateway and a worker per party as processes on the local RabbitMQ (a vhost
per party), Redis and PostgreSQL; a ping from party 9999 reaches party 10000's worker through
both gateways; `down` stops everything it started."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
from fedbus import Delivery, Message, connect
from fedschemas import DemoPong, decode_envelope, decode_payload, encode_envelope
from typer.testing import CliRunner

from fedmq import local
from fedmq.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_up_runs_both_parties_end_to_end_and_down_stops_everything(
    amqp_url, redis_url, pg_admin_url, envelope, monkeypatch
):
    # Prepare: the workers answer demo.ping only with their test hooks on (the launcher
    # passes its environment on to the services).
    monkeypatch.setenv("FEDMQ_WORKER_TEST_HOOKS", "true")
    root = Path(tempfile.mkdtemp(prefix="fedmq-local-test-"))
    prefix = f"fedmql{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    try:
        # Execute: up (library call: the test needs its own server URLs and prefix)...
        state = local.up(
            ["9999", "10000"],
            root,
            prefix=prefix,
            federation="test",
            amqp_url=amqp_url.rsplit("/", 1)[0],
            redis_url=redis_url.rsplit("/", 1)[0],
            pg_admin_url=pg_admin_url,
        )
        status = runner.invoke(app, ["local", "status", "--dir", str(root)])
        # ...a ping from 9999 to 10000's worker, whose pong lands in 10000's broker...
        pongs: list[Delivery] = []
        ponged = threading.Event()
        receiver = connect(state.parties["10000"].bus_url)
        receiver.declare("svc.worker.replies")
        receiver.subscribe("svc.worker.replies", lambda d: (pongs.append(d), ponged.set()))
        ping = envelope(7, job_id=f"launcher-{prefix}")
        sender = connect(state.parties["9999"].bus_url)
        sender.declare("out.10000")
        sender.publish(
            Message(topic="out.10000", body=encode_envelope(ping), message_id=ping.message_id)
        )
        got_pong = ponged.wait(60)
        pids = {(p, s): local.read_pid(state, p, s) for p in state.parties for s in local.SERVICES}
        exposed = {
            p: json.loads((state.party_dir(p) / "gateway.json").read_text())["rpc_services"]
            for p in state.parties
        }
        receiver.close()
        sender.close()
        # ...then down via the CLI.
        down = runner.invoke(app, ["local", "down", "--dir", str(root), "--purge"])

        # Assert
        assert status.exit_code == 0, status.output
        assert status.output.count("running") == 2 * len(local.SERVICES), status.output
        assert "serving" in local.SERVICES and "serving" in status.output
        # Each gateway lets the other party call its serving service (online prediction)
        assert exposed == {"9999": {"svc.serving": ["10000"]}, "10000": {"svc.serving": ["9999"]}}
        assert got_pong, "no demo.pong from party 10000's worker"
        pong = decode_payload(decode_envelope(pongs[0].body), DemoPong)
        assert (pong.text, pong.n) == ("ping", 8)  # the worker answers n + 1
        assert down.exit_code == 0, down.output
        for (party, service), pid in pids.items():
            assert pid is not None
            assert not Path(f"/proc/{pid}").exists() or not local._alive(pid, service), (
                party,
                service,
            )
        assert not {p.vhost for p in state.parties.values()} & local.existing_vhosts()
    finally:
        if (root / local.STATE_FILE).exists():
            local.down(root, purge=True)
        shutil.rmtree(root, ignore_errors=True)


def test_up_says_clearly_that_it_needs_rabbitmqctl(tmp_path, monkeypatch):
    # Prepare: no management API (a closed port) and no rabbitmqctl anywhere
    monkeypatch.setenv("FEDMQ_RABBIT_ADMIN_PORT", str(local.free_port()))
    monkeypatch.setenv("PATH", str(tmp_path))

    # Execute
    result = CliRunner().invoke(
        app, ["local", "up", "--parties", "1,2", "--dir", str(tmp_path / "x"), "--base-port", "0"]
    )

    # Assert
    assert result.exit_code == 1
    assert "rabbitmqctl not found" in result.output
    assert "the management API does not answer" in result.output


def test_up_without_an_unknown_service_says_which_exist_and_starts_nothing(tmp_path):
    root = tmp_path / "local"
    result = CliRunner().invoke(
        app, ["local", "up", "--parties", "9999", "--dir", str(root), "--without", "servin"]
    )
    assert result.exit_code == 1
    assert "unknown services ['servin']" in result.output and "serving" in result.output
    assert not root.exists()
    assert local.without_services(local.SERVICES, ["serving", "audit"]) == (
        "gateway",
        "worker",
        "scheduler",
    )
