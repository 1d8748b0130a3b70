"""homo_lr resumes (in-process, each party's runtime with its own database, every message
through the signed relay): a client or the aggregator dies mid-round, between a send and the
next checkpoint, or right after a round's checkpoint; the restarted task re-sends the bytes it
sent before (the outbox would raise NondeterministicResend otherwise) and every party ends with
the model of an uninterrupted run with the same seed: FedAvg's, exactly as the plaintext
reference. tests/homo/test_homo_lr_rabbitmq.py SIGKILLs a worker process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.bus_federation import BusFederation
from fedflow.checkpoints import SEALED_KEY, CheckpointStore
from fedflow.components.homo_lr import math as hmath
from fedflow.components.homo_lr import resume
from fedflow.standalone import LocalWorld
from fedflow.tables import Table
from fedflow.task import TaskKey, TaskSpec

from tests.flow.conftest import GUEST, HOST, PARTIES, make_table
from tests.flow.running import (
    Running,
    SimulatedCrash,
    crash_after_sends,
    crash_and_restart,
    crash_on_progress,
    start_task,
)
from tests.homo.conftest import training

ROUNDS = 3
INPUTS = {"data": "src.data"}
PARAMS: dict[str, Any] = {
    "rounds": ROUNDS,
    "batch_size": 16,
    "learning_rate": 0.2,
    "seed": 4,
    "round_timeout_s": 60.0,
}


def start(world: LocalWorld, spec: TaskSpec, **kwargs: Any) -> Running:
    return start_task(world, spec, recv_timeout=60, join_timeout=120, **kwargs)


def tables() -> list[Table]:
    return [make_table([f"{p}-{i}" for i in range(48)], 3, seed=s) for p, s in (("g", 1), ("h", 2))]


def tasks(world: LocalWorld, job: str, params: dict[str, Any]) -> dict[str, TaskSpec]:
    for (party, role), table in zip(((GUEST, "guest"), (HOST, "host")), tables(), strict=True):
        world.parties[party].runtime.artifacts.put(job, "src", party, role, "data", table, 0)
    return {
        role: world.parties[party].task(
            job, "homo_0", "homo_lr", role, PARTIES, params=params, inputs={"data": "src.data"}
        )
        for party, role in ((GUEST, "guest"), (HOST, "host"))
    }


def models(world: LocalWorld, job: str) -> list[hmath.Floats]:
    return [
        world.parties[p].runtime.artifacts.get(job, p, r, "homo_0.model").features[:, 0]
        for p, r in ((GUEST, "guest"), (HOST, "host"))
    ]


def expected(params: dict[str, Any]) -> hmath.Floats:
    parts = [(t.features, t.labels) for t in tables()]
    rule = hmath.ServerRule(
        params.get("server_optimizer", "sgd"), params.get("server_learning_rate", 1.0)
    )
    return hmath.reference_fedavg(parts, training(params), ROUNDS, server=rule)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("party", "sends"),
    [
        # The host's sends per round: sa_keys, sa_shares, sa_masked, sa_unmask_shares. Its 5th
        # is round 1's keys (restored with its private keys), its 6th round 1's encrypted
        # shares (restored with its own shares and the ciphertexts it sent).
        ("host", 5),
        ("host", 6),
        # The guest (the aggregator, also a client) sends global_model, sa_directory,
        # sa_routed, sa_unmask per round: its 7th is round 1's routed shares, which carry its
        # own client's encrypted shares.
        ("guest", 7),
    ],
)
def test_a_party_dying_mid_round_resends_the_same_bytes_and_ends_with_the_same_model(
    tmp_path: Path, party: str, sends: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: FedAdam on the aggregator, so its checkpoint must carry the moments too
    params = {**PARAMS, "server_optimizer": "adam", "server_learning_rate": 0.05}
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        specs = tasks(world, "job-1", params)
        crash_after_sends(world, GUEST if party == "guest" else HOST, sends, monkeypatch)

        # Execute
        again, _ = crash_and_restart(start, world, specs, party)

        # Assert: resumed from within round 1 (checkpoint iteration 0), same model everywhere
        assert again.result[0].resumed_from == 0
        got = models(world, "job-1")
    for model in got:
        np.testing.assert_allclose(model, expected(params), rtol=0, atol=1e-9)


@pytest.mark.parametrize("party", ["guest", "host"])
def test_a_party_dying_after_a_rounds_checkpoint_resumes_from_the_next_round(
    tmp_path: Path, party: str
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        specs = tasks(world, "job-2", PARAMS)

        # Execute: dies right after round 1's checkpoint (progress is reported after it)
        again, _ = crash_and_restart(
            start, world, specs, party, on_progress=crash_on_progress(1, ROUNDS)
        )

        # Assert
        assert again.result[0].resumed_from == 1
        got = models(world, "job-2")
    for model in got:
        np.testing.assert_allclose(model, expected(PARAMS), rtol=0, atol=1e-9)


def test_the_mid_round_checkpoint_keeps_the_clients_secrets_sealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the host dies after round 0's shares, its checkpoint is the mid-round one
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        specs = tasks(world, "job-3", PARAMS)
        crash_after_sends(world, HOST, 2, monkeypatch)
        peer = start(world, specs["guest"])
        crashed = start(world, specs["host"])
        crashed.join()

        # Execute: read the host's checkpoint as the database holds it
        store = CheckpointStore(world.parties[HOST].runtime.engine)
        saved = store.latest(TaskKey("job-3", "homo_0", 0, HOST, "host"))
        peer.cancel.set()
        peer.join()

    # Assert: the round state names its phase and the sent ciphertexts, and the private keys,
    # self-mask seed and own shares only sealed
    assert saved is not None and saved.iteration == -1
    mid = saved.state["round"]
    assert mid["phase"] == "shared" and set(mid["sealed"]) and SEALED_KEY not in mid
    assert set(mid) == {"phase", "client_id", "directory", "sent", "sealed"}
    assert resume.PURPOSE == "homo_lr.secagg_client"


def test_a_restarted_aggregator_drops_the_clients_it_had_dropped_even_if_they_are_late(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: three clients; client 3's masked input of round 1 is held back past the
    # aggregator's timeout (it drops client 3 and unmasks without it), then the aggregator dies
    # right after its unmasking request; client 3's masked input arrives before the restart
    third = "10001"
    parties = {"guest": [GUEST], "host": [HOST, third]}
    params = {**PARAMS, "round_timeout_s": 5.0}  # client 3 drops; the others are in time
    data = [*tables(), make_table([f"t-{i}" for i in range(48)], 3, seed=3)]
    held: list[tuple[BusFederation, Any, dict[str, Any]]] = []
    send = BusFederation.send

    def hold_back(self: BusFederation, payload: Any, **kw: Any) -> None:
        if self.party_id == third and kw["tag"] == "sa_masked" and kw["iteration"] == 1:
            held.append((self, payload, kw))
            return
        send(self, payload, **kw)

    monkeypatch.setattr(BusFederation, "send", hold_back)
    with LocalWorld([GUEST, HOST, third], tmp_path / "run") as world:
        roles = ((GUEST, "guest"), (HOST, "host"), (third, "host"))
        specs = {}
        for (party, role), table in zip(roles, data, strict=True):
            runtime = world.parties[party].runtime
            runtime.artifacts.put("job-4", "src", party, role, "data", table, 0)
            specs[party] = world.parties[party].task(
                "job-4", "homo_0", "homo_lr", role, parties, params=params, inputs=INPUTS
            )
        # The guest's sends per round: two of each message (one per host); in round 1 its 15th
        # and 16th are the unmasking request and client 3's exclusion.
        crash_after_sends(world, GUEST, 16, monkeypatch)
        hosts = [start(world, specs[HOST]), start(world, specs[third])]
        crashed = start(world, specs[GUEST])
        crashed.join()
        assert isinstance(crashed.error[0], SimulatedCrash)

        # Execute: the late masked input lands in the aggregator's mailbox; it restarts
        for fed, payload, kw in held:
            send(fed, payload, **kw)
        again = start(world, specs[GUEST])
        again.join()
        for h in hosts:
            h.join()

        # Assert: client 3 is out of round 1 as before the crash (including it now would have
        # re-sent another unmasking request under the same id); FedAvg without it in round 1
        assert not again.error and not any(h.error for h in hosts), again.error
        assert again.result[0].resumed_from == 0
        got = [
            world.parties[p].runtime.artifacts.get("job-4", p, r, "homo_0.model").features[:, 0]
            for p, r in roles
        ]
    parts = [(t.features, t.labels) for t in data]
    reference = hmath.reference_fedavg(parts, training(params), ROUNDS, skip=[(1, 2)])  # type: ignore[arg-type]
    for model in got:
        np.testing.assert_allclose(model, reference, rtol=0, atol=1e-9)
