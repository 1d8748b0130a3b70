"""Cross-party resume (in-process): a party's iter_sum task dies mid-run and is started again;
it resumes from its checkpoint, re-sends with the same ids, and the job ends with the same
result as an uninterrupted run. The worker tests do the same with a real process and SIGKILL.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.federation import TaskCanceled
from fedflow.metrics import MetricsReader
from fedflow.standalone import LocalWorld
from fedflow.task import TaskSpec

from tests.flow.conftest import GUEST, HOST, PARTIES, make_table, put_input
from tests.flow.running import (
    Running,
    crash_after_sends,
    crash_and_restart,
    crash_on_progress,
    start_task,
)

ROUNDS = 6
PARAMS = {"rounds": ROUNDS, "seed": 11}


def start(world: LocalWorld, spec: TaskSpec, **kwargs: Any) -> Running:
    return start_task(world, spec, recv_timeout=30, join_timeout=60, **kwargs)


def specs(world: LocalWorld, job: str) -> dict[str, TaskSpec]:
    put_input(world, HOST, "host", make_table([str(i) for i in range(40)], 4, seed=1), job)
    put_input(world, GUEST, "guest", make_table([str(i) for i in range(40)], 2, seed=2), job)
    return {
        role: world.parties[party].task(
            job, "sum_0", "iter_sum", role, PARTIES, params=PARAMS, inputs={"data": "src.data"}
        )
        for party, role in ((GUEST, "guest"), (HOST, "host"))
    }


def outcome(world: LocalWorld, job: str) -> tuple[list[float], list[tuple[int, float]]]:
    """The guest's result vector and its per-round metric series."""
    reader = MetricsReader(world.parties[GUEST].engine)
    (curve,) = reader.curves(job, "sum_0")
    series = [(m.step, m.value) for m in reader.metrics(job, "sum_0") if m.name == "masked_norm"]
    return curve.y, series


@pytest.fixture
def reference(tmp_path: Path) -> tuple[list[float], list[tuple[int, float]]]:
    """The uninterrupted run."""
    with LocalWorld([GUEST, HOST], tmp_path / "reference") as world:
        tasks = specs(world, "job-ref")
        guest, host = start(world, tasks["guest"]), start(world, tasks["host"])
        guest.join()
        host.join()
        assert not guest.error and not host.error
        return outcome(world, "job-ref")


@pytest.mark.parametrize("party", ["host", "guest"])
def test_a_party_dying_after_a_checkpoint_resumes_and_the_result_is_unchanged(
    tmp_path: Path, party: str, reference: tuple[list[float], list[tuple[int, float]]]
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        # Prepare
        tasks = specs(world, "job-1")

        # Execute: the party dies after round 2's checkpoint, then is started again.
        again, _ = crash_and_restart(
            start, world, tasks, party, on_progress=crash_on_progress(2, ROUNDS)
        )

        # Assert
        assert again.result[0].resumed_from == 2
        result, series = outcome(world, "job-1")
        np.testing.assert_allclose(result, reference[0], rtol=0, atol=1e-9)
        assert series == reference[1]


@pytest.mark.parametrize(("party", "sends"), [("host", 4), ("guest", 3)])
def test_a_party_dying_between_a_send_and_its_checkpoint_resends_the_same_ids(
    tmp_path: Path,
    party: str,
    sends: int,
    monkeypatch: pytest.MonkeyPatch,
    reference: tuple[list[float], list[tuple[int, float]]],
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        # Prepare: the host's 4th send is round 3's masked_sum (the peer may already be ahead);
        # the guest's 3rd send is round 2's ack.
        tasks = specs(world, "job-2")
        crash_after_sends(world, {"host": HOST, "guest": GUEST}[party], sends, monkeypatch)

        # Execute
        again, _ = crash_and_restart(start, world, tasks, party)

        # Assert: resumed from the round before the one it died in; nothing sent twice crossed
        # twice into a component (same ids, dropped by the inbox); same result.
        assert again.result[0].resumed_from == sends - 2
        result, series = outcome(world, "job-2")
        np.testing.assert_allclose(result, reference[0], rtol=0, atol=1e-9)
        assert series == reference[1]


def test_a_lost_answer_is_sent_again_when_the_asker_resumes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reference: tuple[list[float], list[tuple[int, float]]],
) -> None:
    """The guest's ack of round 3 never reaches the host's mailbox (dead-lettered after its
    delivery limit); the host waits for it until it is restarted, resumes from round 2, re-sends
    round 3's masked_sum, and the guest -- which already answered round 3 -- answers again from
    its outbox with the identical id."""
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        # Prepare: the host's mailbox refuses round 3's ack until the host restarts.
        tasks = specs(world, "job-3")
        mailbox = world.parties[HOST].endpoint.mailbox
        original = mailbox.file
        refused = threading.Event()

        def lose_ack_3(envelope: Any, payload: Any, tx: Any) -> None:
            if envelope.tag == "ack" and envelope.iteration == 3 and not refused.is_set():
                raise RuntimeError("database hiccup")
            original(envelope, payload, tx)

        monkeypatch.setattr(mailbox, "file", lose_ack_3)
        world.parties[HOST].consumer.stop()
        world.parties[HOST].consumer.handlers["federation.data"] = lose_ack_3
        world.parties[HOST].consumer.start()
        guest = start(world, tasks["guest"])
        host = start(world, tasks["host"])

        # Execute: wait until the ack is dead-lettered and the host is stuck on it; restart it.
        bus = world.buses[HOST]
        dead: list[Any] = []
        pause = threading.Event()
        for _ in range(300):
            dead += bus.dead_letters("svc.worker")
            if dead:
                break
            pause.wait(0.05)
        assert len(dead) == 1, "the ack was not dead-lettered"
        refused.set()
        host.cancel.set()
        host.join()
        assert isinstance(host.error[0], TaskCanceled)
        again = start(world, tasks["host"])
        again.join()
        guest.join()

        # Assert
        assert not again.error and not guest.error, (again.error, guest.error)
        assert again.result[0].resumed_from == 2
        result, series = outcome(world, "job-3")
        np.testing.assert_allclose(result, reference[0], rtol=0, atol=1e-9)
        assert series == reference[1]
