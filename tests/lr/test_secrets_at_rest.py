"""hetero_lr keeps its Paillier private key (and mask seed) out of the database: what a party's
checkpoint rows hold is the sealed form only (fedflow.sealing), and a party that dies
mid-training still resumes, with the same key, to the weights of an uninterrupted run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fedcrypto import PrivateKey
from fedflow.checkpoints import SEALED_KEY, CheckpointStore, checkpoints_table
from fedflow.components.hetero_lr import session as lr
from fedflow.sealing import CheckpointSealer, SealedStateError
from fedflow.standalone import LocalWorld
from fedflow.statecodec import decode_state
from fedflow.task import TaskKey
from fedworker.main import checkpoint_sealer
from fedworker.settings import WorkerSettings

from tests.lr.conftest import (
    GUEST,
    HOST,
    SHORT_KEY_PARAMS,
    lr_tasks,
    start,
    synthetic,
    taylor_sgd,
    weights,
)

PARAMS = SHORT_KEY_PARAMS
ITERATIONS = 9  # 200 rows, batches of 64 -> 3 per epoch
PARTY_OF = {"guest": GUEST, "host": HOST}


class SimulatedCrash(Exception):
    """Stands in for the process dying at this point."""


@pytest.fixture(scope="module")
def data() -> Any:
    return synthetic(200, 3, 4, seed=21)


def key_material(key: PrivateKey, mask_seed: bytes) -> dict[str, bytes]:
    """Every form in which the secrets could sit in a row: p and q as decimal and hex text and
    as big- and little-endian bytes, the serialized private key, the mask seed."""
    forms = {"private_key.to_bytes()": key.to_bytes(), "mask_seed": mask_seed}
    for name, prime in (("p", int(key.p)), ("q", int(key.q))):
        width = (prime.bit_length() + 7) // 8
        forms[f"{name} decimal"] = str(prime).encode()
        forms[f"{name} hex"] = format(prime, "x").encode()
        forms[f"{name} HEX"] = format(prime, "X").encode()
        forms[f"{name} big-endian"] = prime.to_bytes(width, "big")
        forms[f"{name} little-endian"] = prime.to_bytes(width, "little")
    return forms


def stored_rows(engine: sa.Engine) -> Iterator[tuple[str, bytes]]:
    """Every value of every table of a party's database, as the bytes the database holds."""
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                for column, value in row._mapping.items():
                    if value is None:
                        continue
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    yield f"{table.name}.{column}", raw


def checkpoint_blob(engine: sa.Engine) -> bytes:
    with engine.connect() as conn:
        blobs = conn.execute(sa.select(checkpoints_table.c.state)).scalars().all()
    assert len(blobs) == 1, "one task, one checkpoint row"
    return bytes(blobs[0])


def party_secrets(world: LocalWorld, key: TaskKey) -> tuple[PrivateKey, bytes]:
    """The party's secrets, opened from its checkpoint with the party's own sealer (so the
    test searches for the key the party really uses)."""
    runtime = world.parties[key.party_id].runtime
    saved = CheckpointStore(runtime.engine).latest(key)
    assert saved is not None
    opened = decode_state(
        runtime.sealer.open(key, lr.SECRETS_PURPOSE, saved.state[SEALED_KEY][lr.SECRETS_PURPOSE])
    )
    private_key = PrivateKey.from_bytes(opened["private_key"], insecure_allow_short=True)
    return private_key, bytes(opened["mask_seed"])


@pytest.mark.parametrize("party", ["guest", "host"])
def test_no_checkpoint_ever_written_holds_the_private_key_and_a_resume_gives_the_same_weights(
    tmp_path: Path, party: str, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        # Prepare: keep a copy of every checkpoint row the party writes, as the database has it
        # (the key checkpoint before the first send, the "pending" ones, every iteration's)
        tasks = lr_tasks(world, "job-k", *data, PARAMS)
        engine = world.parties[PARTY_OF[party]].runtime.engine
        written: list[bytes] = []
        original_save = CheckpointStore.save

        def save_and_copy(self: CheckpointStore, key: TaskKey, iteration: int, state: Any) -> None:
            original_save(self, key, iteration, state)
            if key.party_id == PARTY_OF[party]:
                written.append(checkpoint_blob(engine))

        monkeypatch.setattr(CheckpointStore, "save", save_and_copy)
        stored_at_crash: list[tuple[str, bytes]] = []

        def die_after_iteration_4(fraction: float) -> None:
            if round(fraction * ITERATIONS) == 5:
                stored_at_crash.extend(stored_rows(engine))
                raise SimulatedCrash("after the checkpoint of iteration 4")

        other = "host" if party == "guest" else "guest"
        peer = start(world, tasks[other])

        # Execute: the party dies mid-training, its database as it was then is searched; it is
        # started again (same process: the runtime's in-memory sealing secret)
        doomed = start(world, tasks[party], on_progress=die_after_iteration_4)
        doomed.join()
        assert isinstance(doomed.error[0], SimulatedCrash)
        private_key, mask_seed = party_secrets(world, tasks[party].key)
        again = start(world, tasks[party])
        again.join()
        peer.join()

        # Assert: the secrets are in no checkpoint written and nowhere in the database at the
        # crash; the resumed run used the same key and ends with the uninterrupted weights
        assert not again.error and not peer.error, (again.error, peer.error)
        assert again.result[0].resumed_from == 4
        wg, wh = weights(world, "job-k")
    assert len(written) > ITERATIONS and stored_at_crash
    forms = key_material(private_key, mask_seed)
    for i, blob in enumerate(written):
        found = [name for name, form in forms.items() if form in blob]
        assert not found, f"checkpoint {i} holds {found}"
    for where, raw in stored_at_crash:
        found = [name for name, form in forms.items() if form in raw]
        assert not found, f"{where} holds {found}"
    expected_g, expected_h = taylor_sgd(*data, PARAMS)
    np.testing.assert_allclose(wg, expected_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, expected_h, rtol=0, atol=1e-6)


def test_a_restarted_worker_with_the_same_checkpoint_key_resumes_and_one_without_fails_clearly(
    tmp_path: Path, data: Any
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        # Prepare: the host's worker is configured with a checkpoint key
        secret = os.urandom(32)
        host = world.parties[HOST].runtime
        host.sealer = CheckpointSealer(secret)
        tasks = lr_tasks(world, "job-w", *data, PARAMS)
        peer = start(world, tasks["guest"])

        def die_after_iteration_2(fraction: float) -> None:
            if round(fraction * ITERATIONS) == 3:
                raise SimulatedCrash("after the checkpoint of iteration 2")

        doomed = start(world, tasks["host"], on_progress=die_after_iteration_2)
        doomed.join()
        assert isinstance(doomed.error[0], SimulatedCrash)

        # Execute: a new process without the key (an in-memory secret of its own) cannot open
        # the sealed secrets; a new process with the key (a new sealer, same secret) resumes
        host.sealer = CheckpointSealer.in_memory()
        keyless = start(world, tasks["host"])
        keyless.join()
        host.sealer = CheckpointSealer(secret)
        keyed = start(world, tasks["host"])
        keyed.join()
        peer.join()

        # Assert
        assert len(keyless.error) == 1 and isinstance(keyless.error[0], SealedStateError)
        assert "ephemeral" in str(keyless.error[0])
        assert not keyed.error and not peer.error, (keyed.error, peer.error)
        assert keyed.result[0].resumed_from == 2
        wg, wh = weights(world, "job-w")
    expected_g, expected_h = taylor_sgd(*data, PARAMS)
    np.testing.assert_allclose(wg, expected_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, expected_h, rtol=0, atol=1e-6)


KEY = TaskKey("job-1", "lr_0", 0, GUEST, "guest")


def test_a_sealed_secret_opens_only_for_its_task_purpose_and_party_secret() -> None:
    # Prepare
    secret = os.urandom(32)
    sealer = CheckpointSealer(secret)
    sealed = sealer.seal(KEY, "hetero_lr.secrets", b"p and q")

    # Execute / Assert: the same secret opens it (another instance, as after a restart) ...
    assert CheckpointSealer(secret).open(KEY, "hetero_lr.secrets", sealed) == b"p and q"
    assert b"p and q" not in sealed["sealed"]
    # ... nothing else does
    other_task = TaskKey("job-1", "lr_0", 1, GUEST, "guest")
    with pytest.raises(SealedStateError, match="another checkpoint key"):
        sealer.open(other_task, "hetero_lr.secrets", sealed)
    with pytest.raises(SealedStateError):
        sealer.open(KEY, "psi.secrets", sealed)
    with pytest.raises(SealedStateError):
        CheckpointSealer(os.urandom(32)).open(KEY, "hetero_lr.secrets", sealed)
    altered = {**sealed, "sealed": bytes([sealed["sealed"][0] ^ 1]) + sealed["sealed"][1:]}
    with pytest.raises(SealedStateError):
        sealer.open(KEY, "hetero_lr.secrets", altered)


def test_a_short_checkpoint_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        CheckpointSealer(b"changeme")


def test_the_worker_seals_with_its_checkpoint_key_and_refuses_a_short_one() -> None:
    # Prepare
    secret = os.urandom(32).hex()

    # Execute
    keyed = checkpoint_sealer(WorkerSettings(checkpoint_key=secret))
    unset = checkpoint_sealer(WorkerSettings(checkpoint_key=""))

    # Assert: another replica (the same key) opens what the worker sealed; unset is ephemeral
    sealed = keyed.seal(KEY, lr.SECRETS_PURPOSE, b"p and q")
    assert CheckpointSealer(secret.encode()).open(KEY, lr.SECRETS_PURPOSE, sealed) == b"p and q"
    assert not keyed.ephemeral and unset.ephemeral
    with pytest.raises(ValueError, match="at least 32 characters"):
        WorkerSettings(checkpoint_key="changeme-but-longer")
