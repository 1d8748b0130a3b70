"""Fixtures for the gateway tests: a two-party federation on the real RabbitMQ/PostgreSQL, run by
the local launcher's functions (gateways as separate processes), a counting consumer with an
SqlInbox at party 10000, and a publisher at party 9999.

Each test module gets its own vhosts and databases (prefix `fedmqt<random>`), deleted at the
end. `deployment` gives each test freshly started gateways and empty queues; a module whose tests
kill no gateway for good can use `shared_deployment` instead (one pair for the module, each test
reading the counts and logs from its own start: `counted`, `log`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fedbus import Bus, Delivery, Message, connect
from fedbus.sql_inbox import SqlInbox
from fedgateway.settings import PLACEHOLDER_API_TOKEN
from fedschemas import (
    DemoPing,
    Envelope,
    PartyRef,
    decode_envelope,
    encode_envelope,
    new_envelope,
    topics,
)
from fedschemas.payloads import JobEnded

from fedmq import local
from tests.polling import poll, wait_until
from tests.relay_helpers import gateway_federation

SENDER, RECEIVER = "9999", "10000"
SOURCE = PartyRef(party_id=SENDER, role="guest")
DESTINATION = PartyRef(party_id=RECEIVER, role="host")
TOPICS = ("out.9999", "out.10000", "svc.worker", "svc.scheduler", "svc.audit")


@pytest.fixture(scope="module")
def federation(amqp_url: str, pg_admin_url: str, redis_url: str) -> Iterator[local.LocalState]:
    """Two parties' vhosts, databases, CA, keys and certificates, gateway settings files."""
    with gateway_federation(
        [SENDER, RECEIVER],
        amqp_url=amqp_url,
        redis_url=redis_url,
        pg_admin_url=pg_admin_url,
        label="gateway-test",
        stop_timeout=5,
        services=("gateway",),
    ) as state:
        yield state


class Deployment:
    """The running gateways of a test, with kill / restart by party."""

    def __init__(self, state: local.LocalState) -> None:
        self.state = state
        self.buses: dict[str, Bus] = {}
        # Where this test began (begin_test): each party's counter samples and log size then.
        self._counts_from: dict[str, dict[str, float]] = {}
        self._log_from: dict[str, int] = {}
        self.stopped: set[str] = set()  # parties whose gateway this object stopped or killed

    def bus(self, party: str) -> Bus:
        if party not in self.buses:
            self.buses[party] = connect(self.state.parties[party].bus_url)
        return self.buses[party]

    def start(self, party: str) -> None:
        local.start_service(self.state, party, "gateway")
        local.wait_healthy(self.state, party, timeout=45)
        self._counts_from.pop(party, None)  # a new process counts from zero
        self.stopped.discard(party)

    def begin_test(self) -> None:
        """From now on `counted` and `log` leave out what earlier tests on these gateways did."""
        for party in self.state.parties:
            self._counts_from[party] = self._samples(party)
            path = local.log_file(self.state, party, "gateway")
            self._log_from[party] = path.stat().st_size if path.exists() else 0

    def kill(self, party: str) -> None:
        """SIGKILL: no graceful anything, like a crashed machine's process."""
        assert local.stop_service(self.state, party, "gateway", kill=True)
        self.stopped.add(party)

    def stop(self, party: str) -> None:
        local.stop_service(self.state, party, "gateway", timeout=20)
        self.stopped.add(party)

    def pid(self, party: str) -> int:
        pid = local.read_pid(self.state, party, "gateway")
        assert pid is not None
        return pid

    def log(self, party: str) -> list[dict[str, Any]]:
        """The gateway's structlog events (JSON lines) since this test began."""
        events = []
        text = local.log_file(self.state, party, "gateway").read_bytes()[
            self._log_from.get(party, 0) :
        ]
        for line in text.decode(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def tail(self, lines: int = 25) -> str:
        """The end of both gateways' logs, for assertion messages."""
        out = []
        for party in self.state.parties:
            path = local.log_file(self.state, party, "gateway")
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            out.append(f"--- gateway {party}:\n" + "\n".join(t[:300] for t in text))
        return "\n".join(out)

    def http(self, party: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        url = f"http://127.0.0.1:{self.state.parties[party].http_port}{path}"
        data = json.dumps(body).encode() if body is not None else None
        # /api/v1/* needs an API token: the launcher's gateways take theirs from the
        # environment, else the development default.
        tokens = json.loads(os.environ.get("FEDMQ_GATEWAY_API_TOKENS", "[]"))
        token = tokens[0] if tokens else PLACEHOLDER_API_TOKEN
        request = urllib.request.Request(
            url,
            data=data,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return bytes(resp.read())

    def _samples(self, party: str) -> dict[str, float]:
        """Every Prometheus sample of the party's gateway, by series (name and labels)."""
        samples = {}
        for line in self.http(party, "/metrics").decode().splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                samples[series] = float(value)
        return samples

    @staticmethod
    def _sum(samples: dict[str, float], name: str, labels: dict[str, str]) -> float:
        return sum(
            value
            for series, value in samples.items()
            if series.split("{")[0] == name
            and all(f'{k}="{v}"' in series for k, v in labels.items())
        )

    def metric(self, party: str, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample over series whose labels include `labels`."""
        return self._sum(self._samples(party), name, labels)

    def counted(self, party: str, name: str, **labels: str) -> float:
        """What counter `name` (summed like `metric`) went up by since this test began, or
        since the gateway was started in this test."""
        now = self._sum(self._samples(party), name, labels)
        return now - self._sum(self._counts_from.get(party, {}), name, labels)

    def party_dir(self, party: str) -> Path:
        return self.state.party_dir(party)

    def end_attempt(self, party: str, job_id: str, attempt: int) -> None:
        """What `party`'s scheduler does when a job attempt ends (gateway.job_ended on
        svc.gateway); returns once its gateway has applied it to the replay guard."""
        me = PartyRef(party_id=party, role="local")
        ended = new_envelope(
            JobEnded(job_id=job_id, attempt=attempt, state="failed"),
            job_id=job_id,
            component="scheduler",
            task_id="",
            attempt=attempt,
            source=me,
            destination=me,
            tag="job_ended",
            iteration=-1,
            seq=0,
            created_at=dt.datetime.now(dt.UTC),
        )
        self.bus(party).publish(
            Message(topic=topics.GATEWAY, body=encode_envelope(ended), message_id=ended.message_id)
        )
        wait_until(
            lambda: any(
                e.get("event") == "replay_guard_updated" and e.get("job_id") == job_id
                for e in self.log(party)
            ),
            20,
            f"gateway {party} applied gateway.job_ended of {job_id}",
        )


@contextlib.contextmanager
def running_gateways(federation: local.LocalState) -> Iterator[Deployment]:
    """Both gateways started (receiver first), queues declared; stopped and cleaned after."""
    d = Deployment(federation)
    for party in (RECEIVER, SENDER):
        for topic in TOPICS:
            d.bus(party).declare(topic)
    d.start(RECEIVER)
    d.start(SENDER)
    try:
        yield d
    finally:
        for party in (SENDER, RECEIVER):
            d.stop(party)
        for bus in d.buses.values():
            for topic in TOPICS:
                bus.delete(topic)
            bus.close()


@pytest.fixture
def deployment(federation: local.LocalState) -> Iterator[Deployment]:
    """Both gateways started fresh for this test."""
    with running_gateways(federation) as d:
        yield d


@pytest.fixture(scope="module")
def gateway_pair(federation: local.LocalState) -> Iterator[Deployment]:
    """One pair of running gateways for the whole module (see shared_deployment)."""
    with running_gateways(federation) as d:
        yield d


@pytest.fixture
def shared_deployment(gateway_pair: Deployment) -> Deployment:
    """The module's gateway pair for one test: a gateway an earlier test stopped is started
    again, and the link between them is up; counts and logs start here (`counted`, `log`)."""
    restarted = [p for p in (RECEIVER, SENDER) if p in gateway_pair.stopped]
    for party in restarted:
        gateway_pair.start(party)
    if restarted:
        for party, peer in ((SENDER, RECEIVER), (RECEIVER, SENDER)):
            wait_until(
                lambda p=party, q=peer: (
                    gateway_pair.metric(p, "fedmq_gateway_link_up", peer=q) == 1
                ),
                30,
                f"gateway {party}'s link to {peer} up again",
            )
    gateway_pair.begin_test()
    return gateway_pair


def make_envelope(
    seq: int,
    *,
    job_id: str = "job-1",
    attempt: int = 0,
    created_at: dt.datetime | None = None,
    text: str = "ping",
) -> Envelope:
    return new_envelope(
        DemoPing(text=text, n=seq),
        job_id=job_id,
        component="relay-test",
        task_id="task-1",
        attempt=attempt,
        source=SOURCE,
        destination=DESTINATION,
        tag="ping",
        iteration=-1,
        seq=seq,
        created_at=created_at or dt.datetime.now(dt.UTC),
    )


def as_message(env: Envelope) -> Message:
    return Message(topic=f"out.{RECEIVER}", body=encode_envelope(env), message_id=env.message_id)


@pytest.fixture
def envelope() -> Callable[..., Envelope]:
    return make_envelope


@pytest.fixture
def to_message() -> Callable[[Envelope], Message]:
    return as_message


class Sink:
    """A handler at party 10000: records each message it handles in the same transaction as
    the inbox's done marker (effectively-once), and counts effects and dropped duplicates."""

    def __init__(self, bus: Bus, database_url: str, table: str) -> None:
        self._inbox = SqlInbox(database_url)
        self.engine = self._inbox.engine
        self.table = sa.Table(
            table,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("message_id", sa.String(128), nullable=False),
            sa.Column("signer_key_id", sa.String(128)),
        )
        self.table.metadata.create_all(self.engine)
        self.duplicates = 0
        self._lock = threading.Lock()
        self._subs = [bus.subscribe("svc.worker", self._handle, prefetch=16) for _ in range(2)]

    def _handle(self, delivery: Delivery) -> None:
        env = decode_envelope(delivery.body)

        def effect(tx: Any) -> None:
            tx.require_session().execute(
                self.table.insert().values(
                    message_id=delivery.message_id, signer_key_id=env.signer_key_id
                )
            )

        if not self._inbox.process(delivery.message_id, effect):
            with self._lock:
                self.duplicates += 1

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one()
            )

    def rows(self) -> list[tuple[str, str | None]]:
        with self.engine.connect() as conn:
            return [
                (r.message_id, r.signer_key_id)
                for r in conn.execute(
                    sa.select(self.table.c.message_id, self.table.c.signer_key_id)
                )
            ]

    def wait_for(self, n: int, timeout: float) -> int:
        """How many effects there are once `n` are in or `timeout` s passed (callers assert)."""
        poll(lambda: self.count() >= n, timeout, interval=0.1)
        return self.count()

    def close(self) -> None:
        for sub in self._subs:
            sub.cancel()
        with self.engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{self.table.name}"'))
        self._inbox.close()


@pytest.fixture
def sink(deployment: Deployment, unique_name: str) -> Iterator[Sink]:
    s = Sink(
        deployment.bus(RECEIVER),
        deployment.state.parties[RECEIVER].database_url,
        f"effects_{unique_name}",
    )
    try:
        yield s
    finally:
        s.close()


class PacedPublisher:
    """Publishes envelopes into party 9999's out.10000 in small batches on a thread, so that a
    kill in the middle of the stream really lands in the middle.

    `hold_at`: once that many are published, wait for `resume()` before the rest (a test that
    must change something while part of the stream is still to come, however far the
    receiving side lags behind the publisher)."""

    def __init__(
        self,
        bus: Bus,
        envelopes: list[Envelope],
        batch: int,
        interval: float,
        hold_at: int | None = None,
    ) -> None:
        self._bus = bus
        self._envelopes = envelopes
        self._batch = batch
        self._interval = interval
        self._hold_at = hold_at
        self._resumed = threading.Event()
        self.published = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def resume(self) -> None:
        self._resumed.set()

    def _run(self) -> None:
        try:
            for i in range(0, len(self._envelopes), self._batch):
                if self._hold_at is not None and i >= self._hold_at:
                    self._resumed.wait(60)
                chunk = self._envelopes[i : i + self._batch]
                self._bus.publish_many([as_message(e) for e in chunk])
                self.published += len(chunk)
                time.sleep(self._interval)
        except BaseException as exc:
            self.error = exc

    def start(self) -> PacedPublisher:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "publisher did not finish"
        assert self.error is None, f"publisher failed: {self.error!r}"


@pytest.fixture
def paced_publisher(deployment: Deployment) -> Callable[..., PacedPublisher]:
    def make(
        envelopes: list[Envelope],
        batch: int = 25,
        interval: float = 0.05,
        hold_at: int | None = None,
    ) -> PacedPublisher:
        return PacedPublisher(deployment.bus(SENDER), envelopes, batch, interval, hold_at).start()

    return make
