"""The Federation over the bus: receive by tag and iteration in any order, refuse what the
protocol does not allow on both sides, time out naming the party, stop on cancel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fedbus.sql_inbox import SqlInbox
from fedflow.bus_federation import BusFederation
from fedflow.components import protocol_of
from fedflow.federation import RecvTimeout, TaskCanceled
from fedflow.mailbox import AnsweringInbox, NondeterministicResend
from fedflow.protocol import ProtocolGuard, ProtocolViolation
from fedflow.standalone import LocalWorld
from fedflow.task import TaskKey
from fedschemas import FederationData, PartyRef, new_envelope

from tests.flow.conftest import GUEST, HOST, PARTIES

JOB = "job-fed"


def fed(world: LocalWorld, party: str, role: str, *, job: str = JOB) -> BusFederation:
    key = TaskKey(job, "sum_0", 0, party, role)
    guard = ProtocolGuard(protocol_of("iter_sum"), role)
    endpoint = world.parties[party].endpoint
    return BusFederation(endpoint, key, "iter_sum", PARTIES, guard, default_timeout=10)


def vector(values: list[float]) -> FederationData:
    return FederationData(kind="masked_vector", array=np.array(values))


def test_messages_are_received_by_tag_and_iteration_in_any_order(world: LocalWorld) -> None:
    # Prepare
    host, guest = fed(world, HOST, "host"), fed(world, GUEST, "guest")

    # Execute: iterations sent 2, 0, 1; received 0, 1, 2.
    for iteration in (2, 0, 1):
        host.send(vector([iteration, 1.0]), to="guest", tag="masked_sum", iteration=iteration)
    received = [guest.recv(frm="host", tag="masked_sum", iteration=i) for i in range(3)]

    # Assert
    assert [r.array.tolist() for r in received if r.array is not None] == [[0, 1], [1, 1], [2, 1]]
    crossings = world.crossings.snapshot()
    assert [(c.source, c.destination, c.tag, c.kind) for c in crossings] == [
        (HOST, GUEST, "masked_sum", "masked_vector")
    ] * 3


def test_an_undeclared_send_is_refused_and_nothing_crosses(world: LocalWorld) -> None:
    # Prepare: the guest tries to ship its labels under a tag the protocol does not declare.
    guest = fed(world, GUEST, "guest")
    labels = np.ones(569)

    # Execute / Assert
    with pytest.raises(ProtocolViolation, match=r"iter_sum protocol: tag 'labels' is not declared"):
        guest.send(FederationData(kind="aggregate", array=labels), to="host", tag="labels")
    with pytest.raises(
        ProtocolViolation, match=r"declared host -> guest; refusing to send it guest -> host"
    ):
        guest.send(vector([1.0]), to="host", tag="masked_sum", iteration=0)
    time.sleep(0.2)
    assert world.crossings.snapshot() == []
    assert (
        world.parties[GUEST].endpoint.outbox.recorded(TaskKey(JOB, "sum_0", 0, GUEST, "guest"), 0)
        == []
    )


def _forge(world: LocalWorld, payload: FederationData, tag: str, iteration: int) -> None:
    """The host publishes straight to its outbound topic, bypassing its own guard."""
    endpoint = world.parties[HOST].endpoint
    envelope = new_envelope(
        payload,
        job_id=JOB,
        component="sum_0",
        task_id=TaskKey(JOB, "sum_0", 0, HOST, "host").task_id,
        attempt=0,
        source=PartyRef(party_id=HOST, role="host"),
        destination=PartyRef(party_id=GUEST, role="guest"),
        tag=tag,
        iteration=iteration,
        seq=0,
        created_at=datetime.now(UTC),
    )
    endpoint.publisher.send(f"out.{GUEST}", envelope)


def test_a_message_the_protocol_does_not_allow_is_refused_on_receipt(world: LocalWorld) -> None:
    # Prepare: a host that bypasses its guard sends raw features as a "masked" vector.
    guest = fed(world, GUEST, "guest")
    raw = np.random.default_rng(0).normal(size=(569, 20))
    _forge(world, FederationData(kind="masked_vector", array=raw), "masked_sum", 0)
    _forge(world, vector([1.0]), "ack", 0)

    # Execute / Assert: the receiver refuses to hand either to the component.
    with pytest.raises(
        ProtocolViolation, match=r"must have shape \(k,\); got an array of shape \(569, 20\)"
    ):
        guest.recv(frm="host", tag="masked_sum", iteration=0)
    with pytest.raises(
        ProtocolViolation,
        match=r"'ack' is declared guest -> host; refusing to accept it host -> guest",
    ):
        guest.recv(frm="host", tag="ack", iteration=0)


def test_a_receive_that_never_comes_times_out_naming_the_party(world: LocalWorld) -> None:
    guest = fed(world, GUEST, "guest")
    with pytest.raises(
        RecvTimeout, match=r"party 9999 \(guest\) got no 'masked_sum' .* from party 10000 \(host\)"
    ):
        guest.recv(frm="host", tag="masked_sum", iteration=4, timeout=0.2)


def test_a_waiting_receive_stops_when_the_task_is_canceled(world: LocalWorld) -> None:
    guest = fed(world, GUEST, "guest")
    threading.Timer(0.2, guest.cancel.set).start()
    began = time.monotonic()
    with pytest.raises(TaskCanceled):
        guest.recv(frm="host", tag="masked_sum", iteration=0, timeout=30)
    assert time.monotonic() - began < 5


def test_a_resend_with_a_different_payload_under_the_same_id_is_refused(world: LocalWorld) -> None:
    host = fed(world, HOST, "host")
    host.send(vector([1.0, 2.0]), to="guest", tag="masked_sum", iteration=0)
    host.send(vector([1.0, 2.0]), to="guest", tag="masked_sum", iteration=0)  # same: fine
    with pytest.raises(NondeterministicResend, match="different payload"):
        host.send(vector([1.0, 2.5]), to="guest", tag="masked_sum", iteration=0)


def test_a_message_filed_before_a_restart_is_still_received_after_it(world: LocalWorld) -> None:
    # Prepare: the guest's message arrives and is filed; the receiving task is not running yet.
    host = fed(world, HOST, "host")
    guest = fed(world, GUEST, "guest")
    guest.send(
        FederationData(kind="plain_control", meta={"round": 0}), to="host", tag="ack", iteration=0
    )
    time.sleep(0.3)
    # Execute: a new Federation (a restarted task) on the same database receives it.
    again = fed(world, HOST, "host")
    got = again.recv(frm="guest", tag="ack", iteration=0)
    assert got.meta == {"round": 0}
    assert host.resolve("guest") == [PartyRef(party_id=GUEST, role="guest")]


def test_addressing_by_party_id_and_by_role_reach_the_same_party(world: LocalWorld) -> None:
    host = fed(world, HOST, "host")
    guest = fed(world, GUEST, "guest")
    host.send(vector([3.0]), to=GUEST, tag="masked_sum", iteration=0)
    assert guest.recv(frm=HOST, tag="masked_sum", iteration=0).meta == {}
    with pytest.raises(ValueError, match="not a party of this job"):
        host.send(vector([3.0]), to="77", tag="masked_sum", iteration=1)
    with pytest.raises(ValueError, match="no party plays arbiter"):
        host.send(vector([3.0]), to="arbiter", tag="masked_sum", iteration=1)


def test_the_answering_inbox_reports_every_dropped_duplicate_one_by_one_or_in_batches(
    tmp_path: Path,
) -> None:
    # Prepare
    duplicates: list[str] = []
    inbox = AnsweringInbox(SqlInbox(f"sqlite:///{tmp_path / 'inbox.db'}"), duplicates.append)
    effects: list[str] = []

    def effect(name: str) -> Callable[[object], None]:
        return lambda _tx: effects.append(name)

    # Execute
    assert inbox.process("m1", effect("m1")) is True
    assert inbox.process("m1", effect("m1 again")) is False
    ran = inbox.process_batch(
        [("m2", effect("m2")), ("m1", effect("m1 third")), ("m2", effect("x"))]
    )

    # Assert
    assert ran == [True, False, False]
    assert effects == ["m1", "m2"]
    assert duplicates == ["m1", "m1", "m2"]
