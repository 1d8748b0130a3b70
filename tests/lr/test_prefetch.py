"""hetero_lr precomputes the next batch's obfuscators in low-priority background threads: the
weights stay those of plaintext Taylor SGD, every ciphertext sent is fresh, and with
prefetch_threads=0 nothing is computed in the background. The threads are the party's runtime
options, not pipeline params: a pipeline that still sets them is accepted and they are ignored."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedcrypto import EncryptedVector
from fedcrypto.paillier import obfuscation
from fedflow.context import RuntimeOptions
from fedflow.kit import payloads
from fedflow.standalone import LocalWorld
from fedschemas import FederationData

from tests.lr.conftest import (
    GUEST,
    HOST,
    SHORT_KEY_PARAMS,
    lr_tasks,
    run_both,
    synthetic,
    taylor_sgd,
    weights,
)

PARAMS = SHORT_KEY_PARAMS


class Spy:
    """Records every ciphertext array the component sends and every background batch of
    obfuscators (its size and the computing thread's nice value)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[np.ndarray] = []
        self.background: list[tuple[int, int]] = []
        payload, make = payloads.ciphertext_payload, obfuscation.make_obfuscators

        def recording_payload(vec: EncryptedVector) -> FederationData:
            self.sent.append(vec.data.copy())
            return payload(vec)

        def recording_make(key: Any, count: int, **kwargs: Any) -> np.ndarray:
            if threading.current_thread().name.startswith("hetero-lr-prefetch"):
                nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
                self.background.append((count, nice))
            return make(key, count, **kwargs)

        monkeypatch.setattr(payloads, "ciphertext_payload", recording_payload)
        monkeypatch.setattr(obfuscation, "make_obfuscators", recording_make)


def train(
    tmp_path: Path, job: str, params: dict[str, Any], options: RuntimeOptions | None = None
) -> tuple[np.ndarray, np.ndarray]:
    guest, host = synthetic(200, 3, 4, seed=11)
    with LocalWorld([GUEST, HOST], tmp_path / job, options) as world:
        g, h = run_both(world, lr_tasks(world, job, guest, host, params))
        assert not g.error and not h.error, (g.error, h.error)
        return weights(world, job)


def test_background_obfuscators_keep_the_weights_exact_and_every_ciphertext_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    spy = Spy(monkeypatch)

    # Execute
    wg, wh = train(tmp_path, "job-prefetch", PARAMS, RuntimeOptions(prefetch_threads=1))

    # Assert: the arithmetic is untouched
    guest, host = synthetic(200, 3, 4, seed=11)
    expected_g, expected_h = taylor_sgd(guest, host, PARAMS)
    np.testing.assert_allclose(wg, expected_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, expected_h, rtol=0, atol=1e-6)
    # obfuscators were computed in the background, at the lowest priority on Linux
    assert sum(count for count, _ in spy.background) > 0
    if sys.platform.startswith("linux"):
        assert {nice for _, nice in spy.background} == {19}
    # and no ciphertext was ever sent twice (a reused obfuscator would repeat one for equal
    # plaintexts; here every row of every message, both parties, all iterations is distinct)
    rows = [row.tobytes() for sent in spy.sent for row in sent]
    assert len(rows) > 9 * 64 * 2
    assert len(set(rows)) == len(rows)


def test_without_prefetch_threads_nothing_runs_in_the_background_and_the_weights_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)

    with_background = train(tmp_path, "job-on", PARAMS, RuntimeOptions(prefetch_threads=2))
    spy.background.clear()
    without = train(tmp_path, "job-off", PARAMS, RuntimeOptions(prefetch_threads=0))

    assert spy.background == []
    np.testing.assert_allclose(with_background[0], without[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(with_background[1], without[1], rtol=0, atol=1e-12)


def test_the_party_sets_the_prefetch_priority_and_a_pipeline_cannot_change_its_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the party runs no prefetch threads; an old pipeline asks for 4 of them (and 8
    # crypto threads), which it may no longer decide
    spy = Spy(monkeypatch)
    old_params = {**PARAMS, "prefetch_threads": 4, "threads": 8}

    # Execute
    with pytest.warns(DeprecationWarning, match="threads, prefetch_threads are ignored"):
        wg, wh = train(tmp_path, "job-old", old_params, RuntimeOptions(prefetch_threads=0))
    niced = train(tmp_path, "job-nice", PARAMS, RuntimeOptions(prefetch_threads=1, prefetch_nice=5))

    # Assert: the old pipeline still trains to the reference weights, and nothing ran in the
    # background, as the party said; the party's own priority is the one its threads get
    guest, host = synthetic(200, 3, 4, seed=11)
    expected_g, expected_h = taylor_sgd(guest, host, PARAMS)
    np.testing.assert_allclose(wg, expected_g, rtol=0, atol=1e-6)
    np.testing.assert_allclose(wh, expected_h, rtol=0, atol=1e-6)
    np.testing.assert_allclose(niced[0], expected_g, rtol=0, atol=1e-6)
    assert spy.background, "the second run precomputed in the background"
    if sys.platform.startswith("linux"):
        assert {nice for _, nice in spy.background} == {5}


def test_the_worker_takes_its_runtime_options_from_its_own_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedworker.settings import WorkerSettings

    monkeypatch.setenv("FEDMQ_WORKER_PREFETCH_THREADS", "0")
    monkeypatch.setenv("FEDMQ_WORKER_PREFETCH_NICE", "7")
    monkeypatch.setenv("FEDMQ_WORKER_COMPONENT_THREADS", "3")

    options = WorkerSettings().runtime_options

    assert options == RuntimeOptions(threads=3, prefetch_threads=0, prefetch_nice=7)
    monkeypatch.setenv("FEDMQ_WORKER_PREFETCH_NICE", "20")
    with pytest.raises(ValueError, match="prefetch_nice"):
        WorkerSettings()
