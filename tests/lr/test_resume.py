"""hetero_lr resumes: a party dying mid-training (after a checkpoint, or between a ciphertext
send and its iteration's checkpoint) is started again and the job ends with the weights of an
uninterrupted run with the same seed (within 1e-6)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.checkpoints import SEALED_KEY, CheckpointStore
from fedflow.components.hetero_lr.session import SECRETS_PURPOSE
from fedflow.standalone import LocalWorld

from tests.flow.running import (
    SimulatedCrash,
    crash_after_sends,
    crash_and_restart,
    crash_on_progress,
)
from tests.lr.conftest import (
    GUEST,
    HOST,
    SHORT_KEY_PARAMS,
    lr_tasks,
    run_both,
    sigmoid_sgd,
    start,
    synthetic,
    weights,
)

PARAMS = {**SHORT_KEY_PARAMS, "seed": 9}
ITERATIONS = 9  # 200 rows, batches of 64 -> 3 per epoch


@pytest.fixture(scope="module")
def data() -> Any:
    return synthetic(200, 3, 4, seed=7)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data: Any) -> tuple[Any, Any]:
    with LocalWorld([GUEST, HOST], tmp_path_factory.mktemp("ref")) as world:
        g, h = run_both(world, lr_tasks(world, "job-ref", *data, PARAMS))
        assert not g.error and not h.error, (g.error, h.error)
        return weights(world, "job-ref")


def crash_after(iteration: int) -> Callable[[float], None]:
    return crash_on_progress(iteration, ITERATIONS, unit="iteration")


@pytest.mark.parametrize("party", ["guest", "host"])
def test_a_party_dying_after_a_checkpoint_resumes_to_the_same_weights(
    tmp_path: Path, party: str, data: Any, reference: tuple[Any, Any]
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        # Prepare
        tasks = lr_tasks(world, "job-1", *data, PARAMS)

        # Execute: dies after iteration 4's checkpoint (mid-epoch 1), then starts again
        again, _ = crash_and_restart(start, world, tasks, party, on_progress=crash_after(4))

        # Assert
        assert again.result[0].resumed_from == 4
        wg, wh = weights(world, "job-1")
    np.testing.assert_allclose(wg, reference[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, reference[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("party", "sends"), [("guest", 9), ("host", 7), ("host", 10)])
def test_a_party_dying_between_a_send_and_its_checkpoint_resends_the_same_ciphertexts(
    tmp_path: Path,
    party: str,
    sends: int,
    data: Any,
    reference: tuple[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        # Prepare: the party dies right after its `sends`-th message was published, before that
        # iteration's checkpoint: the guest's 9th is iteration 2's guest_gradient, the host's
        # 7th iteration 1's host_gradient and its 10th iteration 2's host_scores (ciphertexts)
        tasks = lr_tasks(world, "job-2", *data, PARAMS)
        crash_after_sends(world, GUEST if party == "guest" else HOST, sends, monkeypatch)

        # Execute
        again, _ = crash_and_restart(start, world, tasks, party)

        # Assert: the re-sent ciphertexts were the recorded ones (a different payload under
        # the same id would have raised NondeterministicResend); same weights
        assert again.result[0].resumed_from is not None
        wg, wh = weights(world, "job-2")
    np.testing.assert_allclose(wg, reference[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, reference[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("party", "sends"), [("guest", 6), ("host", 6)])
def test_reveal_mode_resumes_after_dying_between_a_ciphertext_send_and_its_checkpoint(
    tmp_path: Path, party: str, sends: int, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        # Prepare: after the row-alignment round trip (the guest sends a salt and the verdict,
        # the host its digest: fedflow.kit.alignment), the guest's 6th send is iteration 1's
        # [[d]], the host's 6th iteration 1's masked gradient
        params = {**PARAMS, "reveal_host_scores": True}
        tasks = lr_tasks(world, "job-r", *data, params)
        crash_after_sends(world, GUEST if party == "guest" else HOST, sends, monkeypatch)

        # Execute
        again, _ = crash_and_restart(start, world, tasks, party)

        # Assert
        assert again.result[0].resumed_from == 0
        wg, wh = weights(world, "job-r")
    expected_g, expected_h = sigmoid_sgd(*data, params)
    np.testing.assert_allclose(wg, expected_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, expected_h, rtol=0, atol=1e-6)


def test_a_checkpoint_written_by_the_previous_version_resumes_to_the_same_weights(
    tmp_path: Path, data: Any, reference: tuple[Any, Any]
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path / "run") as world:
        # Prepare: the host dies after iteration 4's checkpoint, which is then rewritten in
        # the layout of the version before the kit: its secrets sealed under "secrets"
        tasks = lr_tasks(world, "job-old", *data, PARAMS)
        peer = start(world, tasks["guest"])
        doomed = start(world, tasks["host"], on_progress=crash_after(4))
        doomed.join()
        assert isinstance(doomed.error[0], SimulatedCrash)
        store = CheckpointStore(world.parties[HOST].runtime.engine)
        saved = store.latest(tasks["host"].key)
        assert saved is not None
        state = dict(saved.state)
        state["secrets"] = state.pop(SEALED_KEY)[SECRETS_PURPOSE]
        store.save(tasks["host"].key, saved.iteration, state)

        # Execute
        again = start(world, tasks["host"])
        again.join()
        peer.join()

        # Assert: the same key came back (the guest's ciphertexts still open), same weights
        assert not again.error and not peer.error, (again.error, peer.error)
        assert again.result[0].resumed_from == 4
        wg, wh = weights(world, "job-old")
    np.testing.assert_allclose(wg, reference[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, reference[1], rtol=0, atol=1e-6)
