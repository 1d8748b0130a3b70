"""fedflow.kit.he's idle-only precomputation: obfuscators are computed in the background only
while the party waits for a peer, and nothing is computed once no iteration needs them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import numpy as np
from fedcrypto import generate_keypair
from fedflow.kit.he import HeParty

from tests.polling import poll


def party(**kwargs: Any) -> HeParty:
    _, private_key = generate_keypair(512, insecure_allow_short=True)
    ctx: Any = SimpleNamespace(component_type="prefetch_test")
    return HeParty(ctx, private_key, b"\0" * 32, **kwargs)


def test_idle_only_precomputation_runs_only_while_the_party_waits_for_a_peer() -> None:
    # Prepare: 256 encryptions per iteration, 3 iterations left (2 are prefetched ahead)
    he = party()
    background = ThreadPoolExecutor(1)
    he.start_prefetch(background, 256, 3, idle_only=True)
    assert he.pool is not None

    # Execute / Assert: while the party works nothing is computed; while it waits, the next
    # two iterations' obfuscators are
    time.sleep(0.3)
    assert he.pool.remaining == 0
    with he.waiting():
        poll(lambda: he.pool is not None and he.pool.remaining >= 512)
    assert he.pool.remaining == 512

    # the encryption takes from the pool, and its ciphertexts decrypt
    values = np.linspace(-1.0, 1.0, 256)
    encrypted = he.encrypt(values)
    assert he.pool.remaining == 256
    np.testing.assert_allclose(he.private_key.decrypt(encrypted), values, atol=1e-9)
    he.close()
    background.shutdown(wait=True)


def test_idle_only_precomputation_stops_when_no_iteration_is_left() -> None:
    # Prepare: jobs queued behind the closed gate (the party never waited)
    he = party()
    background = ThreadPoolExecutor(1)
    he.start_prefetch(background, 512, 2, idle_only=True)
    assert he.pool is not None and he.pool.in_flight == 1024

    # Execute: the last iteration's encryption is done
    he.prefetch(0)

    # Assert: every queued job ends without computing anything (none is left waiting at the
    # gate, so the threads shut down)
    poll(lambda: he.pool is not None and he.pool.in_flight == 0)
    assert he.pool.in_flight == 0 and he.pool.remaining == 0
    background.shutdown(wait=True)
    he.close()
