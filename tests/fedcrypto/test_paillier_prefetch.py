"""Background obfuscators (ObfuscatorPool.prefetch) stay single-use while jobs land and takes
run at the same time; X.T @ [[d]] without inverted bases gives the very ciphertexts of the
inverse method."""

from __future__ import annotations

import threading
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np
import pytest
from fedcrypto import ObfuscatorPool, encrypted_dot
from fedcrypto.paillier import kernels
from fedcrypto.paillier import obfuscation as obfuscation_module
from fedcrypto.paillier import vector as vector_module
from fedcrypto.paillier.limbs import to_mpz

from tests.fedcrypto.paillier_keys import PK, SK
from tests.polling import wait_until

X = np.linspace(-3.0, 3.0, 40)


def rows(array: np.ndarray) -> list[int]:
    return [int(c) for c in to_mpz(array)]


def test_prefetch_fills_the_pool_in_the_background_up_to_the_target_and_no_further() -> None:
    with ThreadPoolExecutor(1) as background:
        pool = ObfuscatorPool(SK, refill=False)

        asked = pool.prefetch(100, background, chunk_size=16)
        wait_until(lambda: pool.remaining == 100, 30, "the pool to fill to 100", interval=0.01)
        again = pool.prefetch(100, background)  # already there: nothing more is computed
        more = pool.prefetch(130, background, chunk_size=16)
        wait_until(lambda: pool.remaining == 130, 30, "the pool to fill to 130", interval=0.01)

    assert (asked, again, more) == (100, 0, 30)
    assert pool.in_flight == 0
    vec = SK.encrypt(X, pool=pool)
    np.testing.assert_array_equal(SK.decrypt(vec), X)
    assert pool.remaining == 130 - len(X)


def test_obfuscators_taken_while_background_jobs_land_are_all_distinct() -> None:
    # Prepare: many small jobs on two threads, taken from while they arrive
    pool = ObfuscatorPool(SK, refill=True)
    taken: list[int] = []
    with ThreadPoolExecutor(2) as background:
        pool.prefetch(600, background, chunk_size=8)

        # Execute
        for _ in range(30):
            taken += rows(pool.take(25))
        wait_until(lambda: pool.in_flight == 0, 30, "no refill in flight", interval=0.01)
    left = pool.remaining
    taken += rows(pool.take(left))

    # Assert: every obfuscator handed out once (what the takes missed was computed for them)
    assert len(taken) == 30 * 25 + left and left <= 600
    assert len(set(taken)) == len(taken)
    assert 0 not in taken
    assert not np.any(pool._store[: pool._cursor])  # handed-out rows no longer in the pool


def test_a_short_pool_computes_the_rest_on_the_take_executor() -> None:
    pool = ObfuscatorPool(SK, 3, refill=True)
    with ThreadPoolExecutor(2) as executor:
        got = pool.take(2000, executor=executor)

    assert got.shape == (2000, PK.limbs)
    assert len(set(rows(got))) == 2000
    assert pool.remaining == 0


def test_closing_the_pool_drops_queued_jobs_wipes_it_and_refuses_more_prefetching() -> None:
    gate = threading.Event()
    with ThreadPoolExecutor(1) as background:
        background.submit(gate.wait)  # holds the only thread: every job below stays queued
        pool = ObfuscatorPool(SK, 10)
        pool.prefetch(200, background, chunk_size=10)

        pool.close()
        gate.set()

    assert pool.in_flight == 0 and pool.remaining == 0
    assert not np.any(pool._store)
    with pytest.raises(RuntimeError, match="closed"):
        pool.prefetch(10, background)


def test_a_failed_background_job_surfaces_at_the_next_take(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> np.ndarray:
        raise MemoryError("no room for obfuscators")

    pool = ObfuscatorPool(SK, 5, refill=True)
    monkeypatch.setattr(obfuscation_module, "make_obfuscators", broken)
    with ThreadPoolExecutor(1) as background:
        pool.prefetch(20, background)

    with pytest.raises(RuntimeError, match="background obfuscator job failed"):
        pool.take(1)
    assert len(pool.take(5)) == 5  # reported once; the pool goes on


def reference_dot(x: np.ndarray, d_data: np.ndarray, precision: float | None) -> np.ndarray:
    """prod_i c_i^(x_ij) with inverted bases for negative exponents (the method replaced)."""
    encoded = vector_module._quantize_matrix(x, PK.max_int, precision)
    inverse = vector_module._inverses_for_negative(d_data, encoded.mantissas, PK, None)
    return kernels.k_multiexp(
        PK.nsquare_bytes, d_data, inverse, np.ascontiguousarray(encoded.mantissas)
    )


@pytest.mark.parametrize("columns", [1, 3, 8, 10, 16])
@pytest.mark.parametrize("threads", [0, 2])
def test_encrypted_dot_with_negative_entries_gives_the_inverse_methods_ciphertexts(
    columns: int, threads: int
) -> None:
    # Prepare: centred features (negative entries in almost every row); 8 and 16 columns
    # leave no free SIMD lane for the surplus, the others do
    rng = np.random.default_rng(columns)
    x = rng.normal(size=(600, columns))
    d = SK.encrypt(rng.normal(size=600))
    executor: Executor | None = ThreadPoolExecutor(threads) if threads else None

    # Execute
    got = encrypted_dot(x, d, executor=executor)

    # Assert
    if executor is not None:
        executor.shutdown()
    np.testing.assert_array_equal(got.data, reference_dot(x, d.data, None))
    np.testing.assert_allclose(SK.decrypt(got), x.T @ SK.decrypt(d), atol=1e-5)


def test_exponents_too_large_to_shift_fall_back_to_inverted_bases() -> None:
    # |x| = 2^61 at precision 1: shifting by 2^61 would reach the extension's 2^62 limit
    x = np.array([[2.0**61, 1.0], [-(2.0**61), -1.0], [3.0, -(2.0**61)]])
    d = SK.encrypt(np.array([1.0, 2.0, 3.0]))

    got = encrypted_dot(x, d, precision=1.0)

    np.testing.assert_array_equal(got.data, reference_dot(x, d.data, 1.0))
    np.testing.assert_allclose(SK.decrypt(got), x.T @ np.array([1.0, 2.0, 3.0]), rtol=1e-12)
