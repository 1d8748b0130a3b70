"""`fedmq local restart SERVICE --party P` restarts one service of one party with the same
settings (its tables are still served), and `fedmq local down --purge` leaves nothing `up`
created: no vhost, database, Redis key of the party, table file or folder.

One party launched once for the module as processes on the real RabbitMQ, Redis and PostgreSQL
(the launcher's own server set-up, with a prefix no other run uses); the purge test comes last
and ends the launch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from typer.testing import CliRunner

from fedmq import local
from fedmq.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

PARTY = "9999"
TOKEN = "changethis"
"""The gateway's development token (the launcher runs the services in development mode)."""


@pytest.fixture(scope="module")
def launched(
    tmp_path_factory: pytest.TempPathFactory, amqp_url: str, redis_url: str, pg_admin_url: str
) -> Iterator[local.LocalState]:
    root = tmp_path_factory.mktemp("launch") / "local"
    state = local.up(
        [PARTY],
        root,
        prefix=f"fedmqr{uuid.uuid4().hex[:8]}",
        federation="test",
        amqp_url=amqp_url.rsplit("/", 1)[0],
        redis_url=redis_url.rsplit("/", 1)[0],
        pg_admin_url=pg_admin_url,
        # No model is served here: the serving service's process is left out.
        services=local.without_services(local.SERVICES, ["serving"]),
    )
    try:
        yield state
    finally:
        if (root / local.STATE_FILE).exists():
            local.down(root, purge=True)


def api(state: local.LocalState) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{state.parties[PARTY].http_port}/api/v1",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )


def upload(state: local.LocalState, name: str) -> httpx.Response:
    with api(state) as client:
        return client.post(
            "/tables",
            data={"name": name},
            files={"file": ("t.csv", b"id,x0\n1,0.5\n2,1.5\n", "text/csv")},
        )


def database_exists(admin_url: str, name: str) -> bool:
    engine = sa.create_engine(admin_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
        return row is not None
    finally:
        engine.dispose()


def test_restart_replaces_one_service_which_serves_the_same_tables(
    launched: local.LocalState,
) -> None:
    # Prepare: a table uploaded before the restart.
    state, root = launched, Path(launched.root)
    assert upload(state, "before").status_code == 201
    others = {s: local.read_pid(state, PARTY, s) for s in local.SERVICES if s != "worker"}
    old = local.read_pid(state, PARTY, "worker")

    # Execute
    result = CliRunner().invoke(
        app, ["local", "restart", "worker", "--party", PARTY, "--dir", str(root)]
    )

    # Assert: a new worker process, the others untouched, the table still there.
    new = local.read_pid(state, PARTY, "worker")
    assert result.exit_code == 0, result.output
    assert f"restarted worker@{PARTY}: pid {old} -> pid {new}" in result.output
    assert old is not None and new is not None and new != old
    assert not local._alive(old, "worker") and local._alive(new, "worker")
    assert {s: local.read_pid(state, PARTY, s) for s in others} == others
    with api(state) as client:
        listed = client.get("/tables")
    assert [t["name"] for t in listed.json()["data"]] == ["before"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["restart", "nope", "--party", PARTY], "no service 'nope'"),
        (["restart", "worker", "--party", "4242"], "no party 4242"),
    ],
    ids=["unknown service", "unknown party"],
)
def test_restart_names_what_it_does_not_know(
    launched: local.LocalState, args: list[str], says: str
) -> None:
    result = CliRunner().invoke(app, ["local", *args, "--dir", launched.root])

    assert result.exit_code == 1
    assert says in result.output


def test_down_purge_removes_everything_up_created(
    launched: local.LocalState, redis_url: str, pg_admin_url: str
) -> None:
    # Prepare: a stored table, keys under the party's Redis prefix, and a key of another
    # party (same launch prefix, another party id) that must stay.
    state, root = launched, Path(launched.root)
    p = state.parties[PARTY]
    assert upload(state, "kept_nowhere").status_code == 201
    tables = Path(p.tables_dir)
    cache = redis.Redis.from_url(p.redis_url)
    mine = f"{local.redis_key_prefix(state, PARTY)}worker:inbox:seen"
    other = f"{state.prefix}:{PARTY}0:worker:inbox:seen"
    cache.set(mine, b"1")
    cache.set(other, b"1")
    assert tables.is_relative_to(root.resolve()) and any(tables.rglob("*"))

    # Execute
    result = CliRunner().invoke(app, ["local", "down", "--dir", str(root), "--purge"])

    # Assert
    try:
        assert result.exit_code == 0, result.output
        assert p.vhost not in local.existing_vhosts()
        assert not database_exists(pg_admin_url, p.database)
        assert list(cache.scan_iter(match=f"{state.prefix}:{PARTY}:*")) == []
        assert cache.get(other) == b"1"
        assert not tables.exists() and not root.exists()
    finally:
        cache.delete(other)
        cache.close()
