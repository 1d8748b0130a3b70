"""The local launcher gives each party's worker an HTTP port of its own (like the scheduler's),
passes it in the worker's environment, shows it in `status`, and still loads state files
written before workers had one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fedmq import local


def test_each_worker_gets_its_own_port_in_its_environment(tmp_path: Path) -> None:
    # Execute
    state = local.plan(["9999", "10000"], tmp_path, base_port=17400)
    envs = {p: local._service_env(state, p, "worker") for p in state.parties}

    # Assert: no port is used twice, and each worker is told its own
    ports = [
        port
        for p in state.parties.values()
        for port in (p.link_port, p.http_port, p.scheduler_http_port, p.worker_http_port)
    ]
    assert len(set(ports)) == len(ports)
    assert [p.worker_http_port for p in state.parties.values()] == [17445, 17446]
    for party, env in envs.items():
        assert env["FEDMQ_WORKER_HTTP_PORT"] == str(state.parties[party].worker_http_port)
        assert env["FEDMQ_WORKER_HTTP_HOST"] == "127.0.0.1"


def test_free_ports_are_picked_for_workers_without_a_base_port(tmp_path: Path) -> None:
    state = local.plan(["9999", "10000"], tmp_path)
    worker_ports = {p.worker_http_port for p in state.parties.values()}
    assert len(worker_ports) == 2 and 0 not in worker_ports


def test_status_shows_the_worker_port_and_old_state_files_still_load(tmp_path: Path) -> None:
    # Prepare: a state file as launchers before this change wrote it (no worker_http_port)
    state = local.plan(["9999"], tmp_path, base_port=17400)
    state.save()
    data = json.loads((tmp_path / local.STATE_FILE).read_text())
    old = {k: v for k, v in data["parties"]["9999"].items() if k != "worker_http_port"}
    (tmp_path / local.STATE_FILE).write_text(json.dumps({**data, "parties": {"9999": old}}))
    new_root = tmp_path / "new"
    new_root.mkdir()
    dataclasses.replace(state, root=str(new_root)).save()

    # Execute
    old_rows = {r["service"]: r for r in local.status(tmp_path)}
    new_rows = {r["service"]: r for r in local.status(new_root)}
    old_env = local._service_env(local.LocalState.load(tmp_path), "9999", "worker")

    # Assert: the old state's worker has no port (and is told 0: no HTTP); the new one shows it
    assert old_rows["worker"]["http_port"] is None
    assert old_env["FEDMQ_WORKER_HTTP_PORT"] == "0"
    assert new_rows["worker"]["http_port"] == 17445
    assert new_rows["scheduler"]["http_port"] == 17430
    assert new_rows["gateway"]["http_port"] == 17401


def test_each_partys_workers_share_one_checkpoint_key_kept_private(tmp_path: Path) -> None:
    # Prepare
    state = local.plan(["9999", "10000"], tmp_path, base_port=17400)

    # Execute: a worker's environment, twice (a restarted worker), for both parties
    first = {p: local._service_env(state, p, "worker") for p in state.parties}
    again = {p: local._service_env(state, p, "worker") for p in state.parties}

    # Assert: stable per party (a restarted worker opens what the old one sealed), distinct
    # between parties, long enough for the worker's settings, and in a file only we can read
    keys = {p: env["FEDMQ_WORKER_CHECKPOINT_KEY"] for p, env in first.items()}
    assert keys == {p: env["FEDMQ_WORKER_CHECKPOINT_KEY"] for p, env in again.items()}
    assert keys["9999"] != keys["10000"]
    assert all(len(key) >= 32 for key in keys.values())
    assert (state.party_dir("9999") / "checkpoint.key").stat().st_mode & 0o077 == 0
    assert "FEDMQ_WORKER_CHECKPOINT_KEY" not in local._service_env(state, "9999", "scheduler")
