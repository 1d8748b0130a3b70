"""hetero_secureboost resumes: a party dying mid-tree (after a level's checkpoint, or between a
ciphertext send and its level's checkpoint) is started again and the job ends with exactly the
plaintext reference's model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedflow.artifacts import ModelArtifact
from fedflow.components.hetero_secureboost import math as sbmath
from fedflow.components.hetero_secureboost.params import HeteroSecureBoostParams
from fedflow.standalone import LocalWorld
from fedflow.task import TaskSpec

from tests.flow.running import Running, crash_after_sends, crash_and_restart, crash_on_progress
from tests.flow.running import start_task as start_running
from tests.secureboost.data import GUEST, HOST, example

PARAMS: dict[str, Any] = {
    "num_trees": 2,
    "max_depth": 3,
    "max_bin": 16,
    "key_bits": 512,
    "insecure_short_keys": True,
}
LEVELS = 6  # 2 trees of depth 3: one checkpoint per level


def start(world: LocalWorld, spec: TaskSpec, **kwargs: Any) -> Running:
    return start_running(world, spec, recv_timeout=60, join_timeout=300, **kwargs)


def tasks(world: LocalWorld, job: str, params: dict[str, Any] = PARAMS) -> dict[str, TaskSpec]:
    guest, host = example("breast")
    parties = {"guest": [GUEST], "host": [HOST]}
    for party, role, table in ((GUEST, "guest", guest), (HOST, "host", host)):
        world.parties[party].runtime.artifacts.put(job, "src", party, role, "data", table, 0)
    return {
        role: world.parties[party].task(
            job,
            "boost_0",
            "hetero_secureboost",
            role,
            parties,
            params=params,
            inputs={"data": "src.data"},
        )
        for party, role in ((GUEST, "guest"), (HOST, "host"))
    }


def assert_reference_model(world: LocalWorld, job: str, params: dict[str, Any] = PARAMS) -> None:
    guest, host = example("breast")
    assert guest.labels is not None
    reference = sbmath.fit(
        [guest.features, host.features], guest.labels, HeteroSecureBoostParams(**params)
    )
    got = world.parties[GUEST].runtime.artifacts.get_artifact(job, GUEST, "guest", "boost_0.model")
    assert isinstance(got, ModelArtifact)
    for name in ("kind", "party", "weight"):
        expected = np.stack([getattr(t, name) for t in reference.trees])
        np.testing.assert_array_equal(got.arrays[f"trees/{name}"], expected)


@pytest.mark.parametrize("party", ["guest", "host"])
def test_a_party_dying_after_a_level_checkpoint_resumes_to_the_reference_model(
    tmp_path: Path, party: str
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path) as world:
        # Prepare
        specs = tasks(world, "job-1")

        # Execute: dies after depth 1 of the first tree, then starts again
        again, _ = crash_and_restart(
            start, world, specs, party, on_progress=crash_on_progress(1, LEVELS, "level")
        )

        # Assert
        assert again.result[0].resumed_from == 1
        assert_reference_model(world, "job-1")


@pytest.mark.parametrize(("party", "sends"), [("guest", 9), ("host", 2)])
def test_a_party_dying_between_a_send_and_its_checkpoint_resends_the_same_ciphertexts(
    tmp_path: Path, party: str, sends: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalWorld([GUEST, HOST], tmp_path) as world:
        # Prepare: the guest dies right after tree 1's gh (its 9th send: the key, gh of tree
        # 0, positions and splits of three levels, gh), the host right after its first
        # histograms: both are recorded before they leave and must be re-sent as they were
        specs = tasks(world, "job-2")
        crash_after_sends(world, GUEST if party == "guest" else HOST, sends, monkeypatch)

        # Execute
        crash_and_restart(start, world, specs, party)

        # Assert
        assert_reference_model(world, "job-2")
