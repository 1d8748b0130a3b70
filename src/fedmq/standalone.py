"""Standalone mode for hand-written exchanges (`fedmq demo`): parties in one process.

Pipelines run in standalone mode through fedflow.standalone.run_pipeline (`fedmq standalone
run`); this module keeps the small API the demo is written against -- `Standalone`, `Party`,
and a per-component `Federation` addressed by PartyRef, without a component protocol -- on the
same LocalRelay (fedflow.local_relay).

The parties keep the topic conventions of the real stacks (docs/architecture.md): a party sends
to remote party P by publishing to `out.<P>` on its own broker; an in-process relay plays both
gateways, signs the envelope with the source party's Ed25519 key, verifies it as the receiving
gateway would, records what crossed, and publishes it on the destination party's broker at
`svc.worker`. Each party consumes `svc.worker` through the same EnvelopeConsumer and SQL inbox
(SQLite here) as the worker service, and files `federation.data` payloads into a durable mailbox
table in the same transaction as the done marker, so a receive survives a restart.

Only the relay sees envelopes of both parties, and only as the wire sees them: encoded, signed,
payloads opaque to it except for the declared kind and size it records.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa
from fedbus import Bus, connect
from fedbus.runtime import EnvelopeConsumer, EnvelopePublisher
from fedbus.sql_inbox import SqlInbox, make_engine
from fedcrypto.signing import SigningKey
from fedflow.local_relay import (
    INBOUND_TOPIC,
    Crossing,
    CrossingLog,
    LocalRelay,
    outbound_topic,
)
from fedschemas import (
    Envelope,
    FederationData,
    PartyRef,
    Payload,
    decode_envelope,
    decode_payload,
    encode_envelope,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

__all__ = [
    "INBOUND_TOPIC",
    "Crossing",
    "CrossingLog",
    "Federation",
    "LocalRelay",
    "MailboxRow",
    "Party",
    "RecvTimeout",
    "Standalone",
    "outbound_topic",
]


class _Base(DeclarativeBase):
    pass


class MailboxRow(_Base):
    """A received federation.data envelope, waiting for the component that receives it."""

    __tablename__ = "fedmq_mailbox"

    message_id: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    tag: Mapped[str] = mapped_column(sa.String(128))
    iteration: Mapped[int] = mapped_column(sa.Integer)
    seq: Mapped[int] = mapped_column(sa.Integer)
    source_party: Mapped[str] = mapped_column(sa.String(64))
    envelope: Mapped[bytes] = mapped_column(sa.LargeBinary)


class RecvTimeout(TimeoutError):
    """A party did not receive an expected message in time."""


class Party:
    """One party's runtime in standalone mode: its broker, inbox, mailbox and publisher."""

    def __init__(self, party_id: str, role: str, bus: Bus, database_url: str) -> None:
        self.ref = PartyRef(party_id=party_id, role=role)  # type: ignore[arg-type]
        self.bus = bus
        self.engine = make_engine(database_url)
        _Base.metadata.create_all(self.engine)
        self.publisher = EnvelopePublisher(bus, self.ref)
        self._arrived = threading.Condition()
        self.consumer = EnvelopeConsumer(
            bus,
            INBOUND_TOPIC,
            {"federation.data": self._file_in_mailbox},
            SqlInbox(self.engine),
        )

    def start(self) -> None:
        self.consumer.start()

    def _file_in_mailbox(self, envelope: Envelope, payload: Payload, tx: object) -> None:
        session: Session = tx.require_session()  # type: ignore[attr-defined]
        session.add(
            MailboxRow(
                message_id=envelope.message_id,
                job_id=envelope.job_id,
                tag=envelope.tag,
                iteration=envelope.iteration,
                seq=envelope.seq,
                source_party=envelope.source.party_id,
                envelope=encode_envelope(envelope),
            )
        )

    def federation(self, job_id: str, component: str, attempt: int = 0) -> Federation:
        return Federation(self, job_id, component, attempt)

    def close(self) -> None:
        self.consumer.stop()
        self.engine.dispose()


class Federation:
    """Send and receive by tag and iteration, for one component run (job, component, attempt)."""

    def __init__(self, party: Party, job_id: str, component: str, attempt: int) -> None:
        self._party = party
        self.job_id = job_id
        self.component = component
        self.attempt = attempt
        self.task_id = f"{job_id}.{component}.{party.ref.party_id}"

    def send(
        self, payload: Payload, *, to: PartyRef, tag: str, iteration: int = -1, seq: int = 0
    ) -> None:
        publisher = self._party.publisher
        envelope = publisher.envelope(
            payload,
            destination=to,
            job_id=self.job_id,
            component=self.component,
            task_id=self.task_id,
            attempt=self.attempt,
            tag=tag,
            iteration=iteration,
            seq=seq,
        )
        publisher.send(outbound_topic(to.party_id), envelope)

    def recv(
        self,
        *,
        frm: PartyRef,
        tag: str,
        iteration: int = -1,
        seq: int = 0,
        timeout: float = 120.0,
    ) -> FederationData:
        """Wait for the payload sent with this tag/iteration/seq by `frm` (order-independent)."""
        query = sa.select(MailboxRow.envelope).where(
            MailboxRow.job_id == self.job_id,
            MailboxRow.tag == tag,
            MailboxRow.iteration == iteration,
            MailboxRow.seq == seq,
            MailboxRow.source_party == frm.party_id,
        )
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            with Session(self._party.engine) as session:
                row = session.execute(query).scalar_one_or_none()
            if row is not None:
                return decode_payload(decode_envelope(row), FederationData)
            if time.monotonic() > deadline:
                raise RecvTimeout(
                    f"party {self._party.ref.party_id} got no {tag!r} (iteration {iteration}) "
                    f"from party {frm.party_id} within {timeout:.0f} s"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


class Standalone:
    """All parties of a job in one process: one in-memory broker and SQLite file per party."""

    def __init__(self, parties: dict[str, str], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.crossings = CrossingLog()
        self.parties: dict[str, Party] = {}
        buses: dict[str, Bus] = {}
        keys: dict[str, SigningKey] = {}
        run = time.time_ns()
        for party_id, role in parties.items():
            # A fresh broker name per run keeps two runs in one process apart.
            buses[party_id] = connect(f"memory://standalone-{run}-{party_id}")
            keys[party_id] = SigningKey.generate()
            database = workdir / f"party-{party_id}.db"
            database.unlink(missing_ok=True)
            self.parties[party_id] = Party(party_id, role, buses[party_id], f"sqlite:///{database}")
        self._buses = buses
        self.relay = LocalRelay(buses, keys, self.crossings)

    def __enter__(self) -> Standalone:
        for party in self.parties.values():
            party.start()
        self.relay.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.relay.stop()
        for party in self.parties.values():
            party.close()
        for bus in self._buses.values():
            bus.close()
