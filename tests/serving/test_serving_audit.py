"""Serving lifecycle events reach the party's audit log: the guest's serving registry (SQLite,
as in test_serving_units) forwards each committed action as a serving.event over a memory://
bus to a real audit service (on SQLite here; on PostgreSQL in the stack test), which chains it
into its log once, even when an event is sent twice, and gets the events of a moment the broker
was away once it is back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from fedaudit.main import Audit
from fedaudit.settings import AuditSettings
from fedaudit.store import export_lines, iter_records
from fedaudit.verify import parse_export, verify_export
from fedbus import HEADER_DEAD_REASON, Bus, connect
from fedbus.runtime import EnvelopePublisher
from fedcrypto.signing import SigningKey
from fedschemas import PartyRef, topics
from fedserving.audit_events import AuditForwarder
from fedserving.handlers import Serving
from fedserving.models import events_table

from tests.polling import wait_for, wait_for_dead_letters
from tests.serving.test_serving_units import GUEST, HOST, JOB, Wire, ok, party


class Audited:
    def __init__(self, audit: Audit, bus: Bus, guest: Serving, forwarder: AuditForwarder) -> None:
        self.audit, self.bus, self.guest, self.forwarder = audit, bus, guest, forwarder

    def serving_records(self) -> list[dict[str, Any]]:
        with self.audit.engine.connect() as conn:
            return [r for r in iter_records(conn) if r["type"] == "serving.event"]

    def registry_actions(self) -> list[str]:
        return [e["action"] for e in self.guest.registry.events()]


@pytest.fixture
def audited(pg_url: str, unique_name: str, tmp_path: Path, redis_url: str) -> Iterator[Audited]:
    bus = connect(f"memory://{unique_name}")
    settings = AuditSettings(
        party_id=GUEST,
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        signing_key=SigningKey.generate().to_bytes().hex(),
        checkpoint_every=4,
        peer_checkpoint_interval_s=3600,
        http_port=-1,
        log_json=False,
    )
    audit = Audit(settings, bus=bus)
    audit.start()
    client = redis.Redis.from_url(redis_url)
    wire = Wire()
    guest = party(wire, GUEST, tmp_path, client)
    host = party(wire, HOST, tmp_path, client)
    host.accept_models_from = ("*",)
    bus.declare(topics.SERVING_EVENTS)
    forwarder = AuditForwarder(
        guest.registry, EnvelopePublisher(bus, PartyRef(party_id=GUEST, role="local"))
    )
    guest.registry.on_events = forwarder.wake
    forwarder.start()
    yield Audited(audit, bus, guest, forwarder)
    forwarder.stop()
    for serving in (guest, host):
        serving.close()
    audit.stop()
    bus.close()
    client.close()


def test_each_lifecycle_action_is_one_record_in_the_audit_chain(audited: Audited) -> None:
    # Prepare / Execute: a model published, bound, canaried, switched and rolled back
    guest = audited.guest
    for _ in range(2):
        ok(guest, "model_publish", job_id=JOB, name="credit")
    ok(guest, "service_bind", service_id="risk", name="credit", version=1)
    ok(guest, "service_canary", service_id="risk", version=2, percent=10)
    ok(guest, "service_switch", service_id="risk", version=2)
    ok(guest, "service_rollback", service_id="risk")

    # Assert: the audit holds every action once, in order, with what changed
    expected = ["publish", "publish", "bind", "canary", "switch", "rollback"]
    assert audited.registry_actions() == expected
    records = wait_for(
        lambda: (r := audited.serving_records()) and len(r) == len(expected) and r,
        what="the audit records the six serving events",
    )
    assert [r["facts"]["serving_action"] for r in records] == expected
    switch = records[4]
    assert (switch["source_party"], switch["direction"], switch["job_id"]) == (GUEST, "local", "")
    assert (switch["facts"]["service_id"], switch["facts"]["version"]) == ("risk", 2)
    assert json.loads(switch["facts"]["detail"])["before"]["version"] == 1
    assert records[0]["facts"]["owner_party"] == GUEST
    with audited.audit.engine.connect() as conn:
        lines = list(export_lines(conn, GUEST, audited.audit.public_key_hex))
    assert verify_export(parse_export(lines)) == []
    # The outbox is empty once the audit has them
    assert guest.registry.unaudited_events() == []


def test_an_event_sent_twice_is_recorded_once(audited: Audited) -> None:
    # Prepare: two actions the audit has
    ok(audited.guest, "model_publish", job_id=JOB, name="credit")
    ok(audited.guest, "service_bind", service_id="risk", name="credit", version=1)
    wait_for(lambda: len(audited.serving_records()) == 2 or None, what="two records")
    # Execute: the forwarder crashed before marking them (both sent again), then a new action
    with audited.guest.registry.engine.begin() as conn:
        conn.execute(sa.update(events_table).values(audited=False))
    ok(audited.guest, "service_unbind", service_id="risk", drain_timeout_s=1)

    # Assert: the resent ones are duplicates to the audit; the two new ones are recorded
    records = wait_for(
        lambda: (r := audited.serving_records()) and len(r) == 4 and r,
        what="the unbind's two events",
    )
    wait_for(lambda: audited.guest.registry.unaudited_events() == [] or None, what="all sent")
    assert [r["facts"]["serving_action"] for r in records] == [
        "publish",
        "bind",
        "unbind_started",
        "unbind",
    ]
    duplicates = audited.audit.metrics.registry.get_sample_value("fedmq_audit_duplicates_total")
    assert duplicates is not None and duplicates >= 2


def test_events_of_a_moment_the_broker_was_away_reach_the_audit_later(
    audited: Audited, unique_name: str
) -> None:
    # Prepare: a forwarder whose broker connection is gone
    audited.forwarder.stop()
    lost = connect(f"memory://{unique_name}")
    lost.close()
    away = AuditForwarder(
        audited.guest.registry, EnvelopePublisher(lost, PartyRef(party_id=GUEST, role="local"))
    )
    audited.guest.registry.on_events = None
    ok(audited.guest, "model_publish", job_id=JOB, name="credit")
    with pytest.raises(Exception):
        away.forward()
    assert [e["action"] for e in audited.guest.registry.unaudited_events()] == ["publish"]

    # Execute: the broker is back (the service's forwarder passes again)
    sent = AuditForwarder(
        audited.guest.registry,
        EnvelopePublisher(audited.bus, PartyRef(party_id=GUEST, role="local")),
    ).forward()

    # Assert
    assert sent == 1
    records = wait_for(lambda: audited.serving_records() or None, what="the publish record")
    assert [r["facts"]["serving_action"] for r in records] == ["publish"]


def test_an_event_another_service_published_is_dead_lettered(
    unique_name: str, tmp_path: Path, redis_url: str
) -> None:
    # Prepare: the audit connects as <site>-audit, so it takes events from <site>-serving only
    site = f"memory://site-{{}}@{unique_name}"
    audit_bus = connect(site.format("audit"))
    settings = AuditSettings(
        party_id=GUEST,
        bus_url=site.format("audit"),
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        signing_key=SigningKey.generate().to_bytes().hex(),
        http_port=-1,
        log_json=False,
    )
    audit = Audit(settings, bus=audit_bus)
    audit.start()
    client = redis.Redis.from_url(redis_url)
    guest = party(Wire(), GUEST, tmp_path, client)
    ok(guest, "model_publish", job_id=JOB, name="credit", guest_only=True)
    buses = {name: connect(site.format(name)) for name in ("serving", "worker")}
    try:
        # Execute: the same event sent by the worker's user, then by the serving service's
        for name in ("worker", "serving"):
            publisher = EnvelopePublisher(buses[name], PartyRef(party_id=GUEST, role="local"))
            AuditForwarder(guest.registry, publisher).forward()
            with guest.registry.engine.begin() as conn:
                conn.execute(sa.update(events_table).values(audited=False))

        # Assert: the worker's copy is dead-lettered naming its publisher; the serving's recorded
        dead = wait_for_dead_letters(audit_bus, topics.SERVING_EVENTS, 1)
        assert "published by 'site-worker'" in dead[0].headers[HEADER_DEAD_REASON]

        def recorded() -> list[dict[str, Any]]:
            with audit.engine.connect() as conn:
                return [r for r in iter_records(conn) if r["type"] == "serving.event"]

        got = wait_for(lambda: recorded() or None, what="the serving service's copy recorded")
        assert [r["facts"]["serving_action"] for r in got] == ["publish"]
    finally:
        guest.close()
        audit.stop()
        for bus in (*buses.values(), audit_bus):
            bus.close()
        client.close()
