"""Two parties' services as separate processes (`fedmq local`), for end-to-end tests.

Each party gets a RabbitMQ vhost, a PostgreSQL database and a Redis prefix of its own (unique
per call), its gateway, scheduler and worker run in a scratch directory (their cwd, where the
table files land), and the REST API answers to a token of the test's own. Everything the
stack changed -- processes, databases, vhosts, cwd, environment -- is undone on exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedmq import local
from fedmq.sdk import Client

GUEST, HOST = "9999", "10000"
REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"
PSI_EVAL = (REPO / "examples" / "pipelines" / "psi_eval.yaml").read_text()
"""The PSI + evaluation pipeline the end-to-end tests run on the breast data."""


@dataclass
class Stack:
    state: local.LocalState
    guest: Client
    host: Client
    root: Path

    @property
    def local_dir(self) -> Path:
        return self.root / "local"

    def http_port(self, party: str, service: str) -> int:
        """Where the party's service answers /healthz and /metrics."""
        p = self.state.parties[party]
        return {
            "gateway": p.http_port,
            "scheduler": p.scheduler_http_port,
            "worker": p.worker_http_port,
            "audit": p.audit_http_port,
            "serving": p.serving_http_port,
        }[service]

    def down(self) -> None:
        """Stop both parties now (services flush their spans on the way out)."""
        if (self.local_dir / local.STATE_FILE).exists():
            local.down(self.local_dir, purge=True)


def stack_fixture(label: str, **options: Any) -> Any:
    """A module-scoped fixture (assign it to `stack`): both parties up for the module's tests,
    with an API token of the module's own; `options` go to `two_parties`."""
    token = f"{label}-{uuid.uuid4().hex}"

    @pytest.fixture(scope="module")
    def stack(amqp_url: str, redis_url: str, pg_admin_url: str) -> Iterator[Stack]:
        with two_parties(
            amqp_url=amqp_url,
            redis_url=redis_url,
            pg_admin_url=pg_admin_url,
            token=token,
            label=label,
            **options,
        ) as running:
            yield running

    return stack


SHARED_TOKEN = f"shared-{uuid.uuid4().hex}"
"""The API token of the shared stack (shared_stack_fixture)."""
_SHARED_FIXTURES: list[Any] = []
"""The fixtures shared_stack_fixture made (one per module that uses the shared stack)."""


class _SharedStack:
    """The one plain two-party stack (two_parties' defaults) of the session's modules that assign
    shared_stack_fixture(): started by the first of them, stopped after the last. While it runs
    the cwd and the environment are two_parties' (conftest runs those modules one after another,
    group_shared_stack_users, so no other module sees them)."""

    def __init__(self) -> None:
        self._running: contextlib.ExitStack | None = None
        self._stack: Stack | None = None
        atexit.register(self.stop)  # an interrupted session stops the processes too

    def get(self, amqp_url: str, redis_url: str, pg_admin_url: str) -> Stack:
        if self._stack is None:
            running = contextlib.ExitStack()
            self._stack = running.enter_context(
                two_parties(
                    amqp_url=amqp_url,
                    redis_url=redis_url,
                    pg_admin_url=pg_admin_url,
                    token=SHARED_TOKEN,
                    label="shared",
                )
            )
            self._running = running
        return self._stack

    def stop(self) -> None:
        if self._running is not None:
            running, self._running, self._stack = self._running, None, None
            running.close()


_SHARED = _SharedStack()


def _uses_shared_stack(item: pytest.Item) -> bool:
    module = getattr(item, "module", None)
    return module is not None and any(
        value is fixture for value in vars(module).values() for fixture in _SHARED_FIXTURES
    )


def shared_stack_fixture(name: str = "stack") -> Any:
    """A module-scoped fixture `name` on the session's shared plain stack (SHARED_TOKEN), for a
    module that needs both parties up with no options of its own and leaves them running as it
    found them (no restart, no kill; tables it uploads are replaced, jobs have ids of its own):
    starting and purging a stack costs half a minute of the suite on a loaded host. The stack
    stops after the last module of the session that uses it."""

    @pytest.fixture(scope="module", name=name)
    def stack(
        request: pytest.FixtureRequest, amqp_url: str, redis_url: str, pg_admin_url: str
    ) -> Iterator[Stack]:
        yield _SHARED.get(amqp_url, redis_url, pg_admin_url)
        items = request.session.items
        mine = [
            i for i, item in enumerate(items) if getattr(item, "module", None) is request.module
        ]
        if not any(_uses_shared_stack(item) for item in items[max(mine, default=-1) + 1 :]):
            _SHARED.stop()

    _SHARED_FIXTURES.append(stack)
    return stack


def group_shared_stack_users(items: list[pytest.Item]) -> None:
    """Reorder `items` in place: the tests of the shared stack's modules run one after another
    where the first of them would (tests/conftest.py calls this after collection), so the stack
    is up only while they run; every other test keeps its order."""
    users = [item for item in items if _uses_shared_stack(item)]
    if not users:
        return
    first = items.index(users[0])
    rest = [item for item in items if not _uses_shared_stack(item)]
    items[:] = rest[:first] + users + rest[first:]


@contextmanager
def two_parties(
    *,
    amqp_url: str,
    redis_url: str,
    pg_admin_url: str,
    token: str,
    label: str,
    env: Mapping[str, str] | None = None,
    wait_for_workers: bool = False,
    serving: bool = False,
) -> Iterator[Stack]:
    """Both parties up and healthy; `env` is added to the services' environment. Without
    `serving` the parties run every service but the serving service (`fedmq local up
    --without serving`: two processes fewer for the tests that serve no model)."""
    root = Path(tempfile.mkdtemp(prefix=f"fedmq-{label}-"))
    saved_cwd, saved_env = Path.cwd(), dict(os.environ)
    os.environ["FEDMQ_GATEWAY_API_TOKENS"] = f'["{token}"]'
    os.environ.update(env or {})
    os.chdir(root)
    clients: list[Client] = []
    try:
        state = local.up(
            [GUEST, HOST],
            root / "local",
            prefix=f"fedmq{label[:1]}{uuid.uuid4().hex[:8]}",
            federation=label,
            amqp_url=amqp_url.rsplit("/", 1)[0],
            redis_url=redis_url.rsplit("/", 1)[0],
            pg_admin_url=pg_admin_url,
            services=local.without_services(local.SERVICES, [] if serving else ["serving"]),
        )
        for party in (GUEST, HOST):
            local.wait_healthy(state, party, timeout=90)
            if wait_for_workers:
                local.wait_healthy(state, party, timeout=90, service="worker")
        guest = Client(f"http://127.0.0.1:{state.parties[GUEST].http_port}", token)
        host = Client(f"http://127.0.0.1:{state.parties[HOST].http_port}", token)
        clients += [guest, host]
        yield Stack(state, guest, host, root)
    finally:
        for client in clients:
            client.close()
        if (root / "local" / local.STATE_FILE).exists():
            local.down(root / "local", purge=True)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        shutil.rmtree(root, ignore_errors=True)


def upload_breast(stack: Stack, *, guest_label: str | None = "y") -> None:
    """Each party uploads its half of the breast data; the host grants its half to the guest
    for psi (what PSI_EVAL needs)."""
    stack.guest.upload_table(
        "breast_hetero_guest",
        DATA / "breast_hetero_guest.csv",
        label_column=guest_label,
        replace=True,
    )
    stack.host.upload_table("breast_hetero_host", DATA / "breast_hetero_host.csv", replace=True)
    stack.host.grant("breast_hetero_host", GUEST, ["psi"])
