"""Shared fixtures: real servers on loopback.

The integration fixtures never skip: if RabbitMQ, Redis or PostgreSQL is unreachable the test
errors with a message naming the server (scripts/ensure-services starts them). Override the
addresses with FEDMQ_TEST_AMQP_URL, FEDMQ_TEST_REDIS_URL and FEDMQ_TEST_PG_URL.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

AMQP_URL = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("FEDMQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_URL = os.environ.get(
    "FEDMQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _require(url: str, name: str, default_port: int) -> None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        pytest.fail(
            f"{name} is not reachable at {host}:{port} ({exc}); run scripts/ensure-services",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of the real RabbitMQ (default vhost). Tests isolate themselves by unique topic names."""
    _require(AMQP_URL, "RabbitMQ", 5672)
    return AMQP_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    _require(REDIS_URL, "Redis", 6379)
    return REDIS_URL


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    _require(PG_URL, "PostgreSQL", 5432)
    return PG_URL


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"fedmq_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = pg_admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def unique_name() -> str:
    """A topic / key prefix no other test (or earlier run) uses."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def worker_topics(amqp_url: str, unique_name: str) -> Iterator[tuple[str, str]]:
    """A worker's queue and its reply queue on the real RabbitMQ, unique to the test, deleted
    after it: (topic, reply_topic)."""
    from fedbus import connect

    topic, replies = f"{unique_name}.svc.worker", f"{unique_name}.svc.worker.replies"
    admin = connect(amqp_url)
    admin.declare(topic)
    admin.declare(replies)
    yield topic, replies
    admin.delete(topic)
    admin.delete(replies)
    admin.close()


DESCRIPTOR_BOUND = int(os.environ.get("FEDMQ_TEST_FD_BOUND", "1000"))
"""The most descriptors the suite's process may hold when it ends. Closed buses, engines and
clients give theirs back; a leak of a few per test adds up over the suite (it held over 1,024
by tests/faults once: select() refuses such numbers). tests/test_descriptors.py holds the
bus's own check."""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fails a run that passed but ends holding more than DESCRIPTOR_BOUND descriptors, naming
    what kinds they are."""
    from collections import Counter

    try:
        numbers = os.listdir("/proc/self/fd")
    except OSError:
        return  # no /proc (not Linux): nothing to judge
    held = []
    for fd in numbers:
        with contextlib.suppress(OSError):  # closed since (the listing's own descriptor)
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
    if len(held) <= DESCRIPTOR_BOUND or session.exitstatus != 0:
        return
    kinds = Counter(t.split(":", 1)[0] if ":" in t else "file" for t in held)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(
            f"the suite's process holds {len(held)} descriptors at its end, over "
            f"{DESCRIPTOR_BOUND} (FEDMQ_TEST_FD_BOUND): {dict(kinds.most_common())}; something "
            "a test opened was not closed",
            red=True,
        )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The modules on tests/local_stack.py's shared two-party stack run one after another."""
    import sys

    local_stack = sys.modules.get("tests.local_stack")
    if local_stack is not None:
        local_stack.group_shared_stack_users(items)
