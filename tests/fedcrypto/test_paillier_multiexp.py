"""Building blocks checked against plain gmpy2: fixed-base tables, batch inversion, Pippenger."""

from __future__ import annotations

import secrets
from concurrent.futures import Executor

import gmpy2
import numpy as np
from fedcrypto import FixedBaseTable
from fedcrypto.paillier.multiexp import batch_invert, choose_window, multi_exponentiate
from hypothesis import given, settings
from hypothesis import strategies as st

MOD = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(512)) | (1 << 511))


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([1, 3, 4, 8, 11]), st.integers(1, 8))
def test_fixed_base_table_matches_powmod(window: int, exponent_bytes: int) -> None:
    base = gmpy2.mpz(secrets.randbits(500))
    table = FixedBaseTable.build(base, MOD, exponent_bytes * 8, window)
    exps = np.frombuffer(secrets.token_bytes(6 * exponent_bytes), dtype=np.uint8).reshape(6, -1)
    exps = np.vstack([exps, np.zeros((1, exponent_bytes), np.uint8)])

    out = table.pow_many(exps)

    expected = [gmpy2.powmod(base, int.from_bytes(r.tobytes(), "little"), MOD) for r in exps]
    assert out == expected


def test_fixed_base_table_survives_pickling_as_a_limb_array() -> None:
    import pickle

    table = FixedBaseTable.build(12345, MOD, 64, 8)
    exps = np.frombuffer(secrets.token_bytes(16), dtype=np.uint8).reshape(2, 8)

    clone = pickle.loads(pickle.dumps(table))

    assert clone.pow_many(exps) == table.pow_many(exps)
    assert len(pickle.dumps(table)) < table.nbytes * 1.1


def test_batch_invert_matches_one_inversion_per_element() -> None:
    values = [gmpy2.mpz(secrets.randbits(500)) | 1 for _ in range(50)]

    inv = batch_invert(values, MOD)

    assert inv == [gmpy2.invert(v, MOD) for v in values]
    assert batch_invert([], MOD) == []


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60), st.integers(1, 40), st.booleans())
def test_multi_exponentiation_matches_the_naive_product(
    count: int, bits: int, signed: bool
) -> None:
    rng = np.random.default_rng(count * 100 + bits)
    bases = [gmpy2.mpz(secrets.randbits(500)) | 1 for _ in range(count)]
    low = -(2**bits - 1) if signed else 0
    exps = rng.integers(low, 2**bits, count, dtype=np.int64)
    inverses = batch_invert(bases, MOD)

    out = multi_exponentiate(bases, inverses, exps, MOD)

    expected = gmpy2.mpz(1)
    for b, e in zip(bases, exps.tolist(), strict=True):
        expected = expected * gmpy2.powmod(b, e, MOD) % MOD
    assert out == expected


def test_window_choice_grows_with_the_number_of_bases() -> None:
    assert choose_window(10, 24) < choose_window(2000, 24) <= 12


class _InlineProcessLikeExecutor(Executor):
    """Stands for a process pool of two workers (runs inline; only the type and size matter)."""

    _max_workers = 2


def test_batches_are_split_for_a_process_executor_only_when_chunks_are_worth_shipping() -> None:
    from fedcrypto.paillier.parallel import chunk_bounds

    ex = _InlineProcessLikeExecutor()
    small = chunk_bounds(600, ex, None, min_chunk=1024)
    large = chunk_bounds(5000, ex, None, min_chunk=1024)
    forced = chunk_bounds(10, ex, 3)

    assert chunk_bounds(5000, None, None) == [(0, 5000)]
    assert small == [(0, 600)]
    assert large == [(0, 1256), (1256, 2512), (2512, 3768), (3768, 5000)]
    assert forced == [(0, 3), (3, 6), (6, 9), (9, 10)]


def test_thread_executor_gets_small_lane_aligned_chunks_several_per_worker() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from fedcrypto.paillier.parallel import LANES, THREAD_MIN_CHUNK, chunk_bounds

    with ThreadPoolExecutor(2) as ex:
        small = chunk_bounds(600, ex, None, min_chunk=1024)
        large = chunk_bounds(5000, ex, None, min_chunk=1024)
        tiny = chunk_bounds(THREAD_MIN_CHUNK, ex, None, min_chunk=1024)
        columns = chunk_bounds(20, ex, None, min_chunk=1)

    assert small == [(0, 304), (304, 600)]  # worth splitting once nothing is shipped
    assert len(large) == 8 and all(lo % LANES == 0 for lo, _ in large)
    assert large[-1][1] == 5000
    assert tiny == [(0, THREAD_MIN_CHUNK)]
    assert [hi - lo for lo, hi in columns] == [3, 3, 3, 3, 3, 3, 2]  # no lane rounding
