"""Standalone mode: two parties in one process exchange federation data through the relay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedschemas import FederationData

from fedmq.standalone import RecvTimeout, Standalone


def test_a_payload_sent_by_tag_arrives_at_the_other_party_and_is_logged(tmp_path: Path) -> None:
    # Prepare
    with Standalone({"9999": "guest", "10000": "host"}, tmp_path) as world:
        guest, host = world.parties["9999"], world.parties["10000"]
        sent = np.arange(12, dtype=np.float64).reshape(3, 4)

        # Execute: sent out of order; received by (tag, iteration), not by arrival
        guest_fed = guest.federation("job-1", "demo")
        host_fed = host.federation("job-1", "demo")
        guest_fed.send(
            FederationData(kind="masked_vector", array=sent), to=host.ref, tag="g", iteration=1
        )
        guest_fed.send(
            FederationData(kind="masked_vector", array=sent * 2), to=host.ref, tag="g", iteration=0
        )
        first = host_fed.recv(frm=guest.ref, tag="g", iteration=0, timeout=10)
        second = host_fed.recv(frm=guest.ref, tag="g", iteration=1, timeout=10)

        # Assert
        assert first.array is not None and second.array is not None
        np.testing.assert_array_equal(first.array, sent * 2)
        np.testing.assert_array_equal(second.array, sent)
        crossings = world.crossings.entries
        assert [(c.source, c.destination, c.kind) for c in crossings] == [
            ("9999", "10000", "masked_vector")
        ] * 2
        assert all(c.bytes > sent.nbytes for c in crossings)


def test_a_receive_that_never_comes_times_out_naming_the_party(tmp_path: Path) -> None:
    with Standalone({"9999": "guest", "10000": "host"}, tmp_path) as world:
        host = world.parties["10000"]
        fed = host.federation("job-2", "demo")
        with pytest.raises(RecvTimeout, match="from party 9999"):
            fed.recv(frm=world.parties["9999"].ref, tag="never", timeout=0.2)


def test_the_same_message_sent_twice_is_filed_once(tmp_path: Path) -> None:
    # A sender that crashed and resumed re-sends with the same deterministic id.
    with Standalone({"9999": "guest", "10000": "host"}, tmp_path) as world:
        guest, host = world.parties["9999"], world.parties["10000"]
        fed = guest.federation("job-3", "demo")
        payload = FederationData(kind="aggregate", array=np.ones(3))
        fed.send(payload, to=host.ref, tag="t")
        fed.send(payload, to=host.ref, tag="t")
        # FIFO on one queue with one consumer: once "after" is filed, both copies were handled.
        fed.send(payload, to=host.ref, tag="after")
        host.federation("job-3", "demo").recv(frm=guest.ref, tag="after", timeout=10)
        import sqlalchemy as sa

        from fedmq.standalone import MailboxRow

        with host.engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(MailboxRow)).scalar_one()
        assert count == 2  # "t" once, "after" once
        assert len(world.crossings.entries) == 3
