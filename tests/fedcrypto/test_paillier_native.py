"""The C extension fedcrypto._native against the gmpy2 kernels, bit for bit.

Three backends compute every kernel: gmpy2 (always there), the extension's scalar GMP engine,
and its AVX-512 IFMA engine (where the CPU has it). The same inputs, randomness included, must
give identical limbs on each; the public API is checked the same way, with and without a
ThreadPoolExecutor.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
import pytest
from fedcrypto import CiphertextError, EncryptedVector, FixedBaseTable, generate_keypair, to_phe
from fedcrypto.paillier import kernels, native_available
from fedcrypto.paillier.limbs import from_mpz, int_to_bytes, limbs_for, to_mpz
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

TINY = generate_keypair(128, insecure_allow_short=True)
SMALL = generate_keypair(1024, insecure_allow_short=True)
KEYS = {"128-bit": TINY, "1024-bit": SMALL}

NATIVE = native_available()
SIMD = NATIVE and bool(kernels.native_simd)
BACKENDS = ["gmpy2"] + (["native-gmp"] if NATIVE else []) + (["native-simd"] if SIMD else [])


@contextmanager
def backend(name: str) -> Iterator[None]:
    """Run the library on one backend (every module that imported the extension is patched)."""
    modules = [
        mod
        for key, mod in list(sys.modules.items())
        if key.startswith("fedcrypto.paillier") and hasattr(mod, "native_simd")
    ]
    with pytest.MonkeyPatch.context() as mp:
        for mod in modules:
            if name == "gmpy2":
                if hasattr(mod, "native"):
                    mp.setattr(mod, "native", None)
                mp.setattr(mod, "native_simd", False)
            elif name == "native-gmp":
                mp.setattr(mod, "native_simd", False)
        yield


def on_every_backend(fn: Callable[[], Any]) -> dict[str, Any]:
    out = {}
    for name in BACKENDS:
        with backend(name):
            out[name] = fn()
    return out


def assert_identical(results: dict[str, Any]) -> None:
    reference = results["gmpy2"]
    for name, value in results.items():
        if isinstance(reference, np.ndarray):
            assert value.dtype == reference.dtype and value.shape == reference.shape, name
            assert np.array_equal(value, reference), f"{name} differs from gmpy2"
        else:
            assert value == reference, f"{name} differs from gmpy2"


def units_mod(n: mpz, count: int) -> list[mpz]:
    """Random residues mod n^2 coprime to n (valid ciphertexts)."""
    n2 = n * n
    out = []
    while len(out) < count:
        x = mpz(secrets.randbelow(int(n2)))
        if gmpy2.gcd(x, n) == 1:
            out.append(x)
    return out


def rand(count: int, width: int) -> np.ndarray:
    return np.frombuffer(secrets.token_bytes(count * width), dtype=np.uint8).reshape(count, width)


def test_extension_is_built_where_gmp_headers_exist() -> None:
    headers = [Path("/usr/include/gmp.h"), *Path("/usr/include").glob("*/gmp.h")]
    if any(h.exists() for h in headers):
        assert native_available(), "libgmp-dev is installed but fedcrypto._native was not built"
    assert native_available() == (kernels.native is not None)


@pytest.mark.parametrize("count", [0, 1, 21])
@pytest.mark.parametrize("key", list(KEYS))
def test_ciphertext_kernels_agree_bit_for_bit(key: str, count: int) -> None:
    pk, sk = KEYS[key]
    limbs = pk.limbs
    a = from_mpz(units_mod(pk.n, count), limbs)
    b = from_mpz(units_mod(pk.n, count), limbs)
    plain = from_mpz([mpz(secrets.randbelow(int(pk.n))) for _ in range(count)], pk.plain_limbs)
    small = np.array([secrets.randbits(40) for _ in range(count)], dtype="<u8")
    per_row = small.view(np.uint8).reshape(-1, 8)
    negate = np.array([i % 3 == 0 for i in range(count)])
    shared = np.frombuffer(int_to_bytes(0x5EB851EB851EB8), dtype=np.uint8).reshape(1, -1)
    n2_b = pk.nsquare_bytes

    cases: dict[str, Callable[[], Any]] = {
        "mul": lambda: kernels.k_mul(n2_b, a, b),
        "add_plain": lambda: kernels.k_add_plain(pk.n_bytes, a, plain),
        "encrypt_with": lambda: kernels.k_encrypt_with(pk.n_bytes, plain, b),
        "encrypt_unobfuscated": lambda: kernels.k_encrypt_with(pk.n_bytes, plain, None),
        "invert": lambda: kernels.k_invert(n2_b, a),
        "pow_shared": lambda: kernels.k_pow(n2_b, a, shared, np.array([False])),
        "pow_shared_negated": lambda: kernels.k_pow(n2_b, a, shared, np.array([True])),
        "pow_per_row": lambda: kernels.k_pow(n2_b, a, per_row, negate),
        "decrypt": lambda: kernels.k_decrypt(
            int_to_bytes(sk.p), int_to_bytes(sk.q), kernels.k_encrypt_with(pk.n_bytes, plain, b)
        ),
        "prod_segments": lambda: kernels.k_prod_segments(
            n2_b, a, np.array([count // 2, 0, count - count // 2], dtype=np.int64)
        ),
    }
    for name, fn in cases.items():
        results = on_every_backend(fn)
        assert_identical(results)
        assert results["gmpy2"].shape[0] in (count, 3), name


@pytest.mark.parametrize("obfuscation", ["djn", "textbook"])
@pytest.mark.parametrize("holder", ["public", "private"])
def test_obfuscators_and_encryption_agree_given_the_same_randomness(
    holder: str, obfuscation: Any
) -> None:
    pk, sk = SMALL
    key = pk if holder == "public" else sk
    spec = key.obfuscation_spec(obfuscation)
    count = 19
    r = rand(count, kernels.randomness_bytes(spec))
    plain = from_mpz([mpz(secrets.randbelow(int(pk.n))) for _ in range(count)], pk.plain_limbs)
    c = from_mpz(units_mod(pk.n, count), pk.limbs)

    obf = on_every_backend(lambda: kernels.k_obfuscators(spec, r))
    enc = on_every_backend(lambda: kernels.k_encrypt(spec, plain, r))
    rerand = on_every_backend(lambda: kernels.k_rerandomize(spec, c, r))

    assert_identical(obf)
    assert_identical(enc)
    assert_identical(rerand)
    back = kernels.k_decrypt(int_to_bytes(sk.p), int_to_bytes(sk.q), enc["gmpy2"])
    assert np.array_equal(back, plain)


def test_multi_exponentiation_agrees_with_negative_exponents() -> None:
    pk, _ = SMALL
    m, cols = 37, 11
    bases = from_mpz(units_mod(pk.n, m), pk.limbs)
    exps = np.random.default_rng(3).integers(-(2**25), 2**25, size=(m, cols), dtype=np.int64)
    exps[5] = 0
    inverse = kernels.k_invert(pk.nsquare_bytes, bases)
    inverse[np.flatnonzero((exps >= 0).all(axis=1))] = 0  # zero rows where none is needed

    results = on_every_backend(lambda: kernels.k_multiexp(pk.nsquare_bytes, bases, inverse, exps))

    assert_identical(results)
    n2 = pk.nsquare
    for j in (0, cols - 1):
        expected = mpz(1)
        for x, e in zip(to_mpz(bases), exps[:, j].tolist(), strict=True):
            expected = expected * gmpy2.powmod(x, e, n2) % n2
        assert to_mpz(results["gmpy2"])[j] == expected


def test_multi_exponentiation_refuses_a_negative_exponent_without_an_inverse() -> None:
    pk, _ = TINY
    bases = from_mpz(units_mod(pk.n, 3), pk.limbs)
    exps = np.array([[1], [-2], [3]], dtype=np.int64)

    for name in BACKENDS:
        with backend(name), pytest.raises(ValueError, match="inverse"):
            kernels.k_multiexp(pk.nsquare_bytes, bases, np.zeros_like(bases), exps)


def test_unreduced_rows_are_reduced_as_gmpy2_does() -> None:
    pk, _ = SMALL
    n2 = pk.nsquare
    top = mpz(2) ** (64 * pk.limbs) - 1
    rows = from_mpz([n2, n2 + 1, top, top - 7, mpz(0), mpz(1)], pk.limbs)
    exps = np.frombuffer(int_to_bytes(65537), dtype=np.uint8).reshape(1, -1)

    assert_identical(on_every_backend(lambda: kernels.k_mul(pk.nsquare_bytes, rows, rows[::-1])))
    assert_identical(
        on_every_backend(lambda: kernels.k_pow(pk.nsquare_bytes, rows, exps, np.array([False])))
    )


def test_a_non_invertible_ciphertext_is_reported_on_every_backend() -> None:
    pk, _ = SMALL
    rows = from_mpz([mpz(5), pk.n * 3, mpz(7)], pk.limbs)

    for name in BACKENDS:
        with backend(name), pytest.raises(CiphertextError):
            kernels.k_invert(pk.nsquare_bytes, rows)


def test_fixed_base_tables_are_built_identically() -> None:
    pk, sk = SMALL
    base = sk.public_key.djn_base

    tables = on_every_backend(
        lambda: FixedBaseTable.build(base, pk.nsquare, pk.djn_exponent_bits, window=5).to_array()
    )

    assert_identical(tables)
    table = FixedBaseTable.from_array(tables["gmpy2"], pk.nsquare, pk.djn_exponent_bits, 5)
    a = rand(3, table.exponent_bytes)
    expected = [
        gmpy2.powmod(base, mpz.from_bytes(row.tobytes(), "little"), pk.nsquare) for row in a
    ]
    assert table.pow_many(a) == expected


@pytest.mark.skipif(not NATIVE, reason="needs the C extension")
@settings(max_examples=40, deadline=None)
@given(
    bits=st.integers(3, 4200),
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(1, 17),
    exp_bits=st.integers(0, 300),
)
def test_extension_matches_python_integers_for_any_odd_modulus(
    bits: int, seed: int, count: int, exp_bits: int
) -> None:
    from fedcrypto import _native

    rng = np.random.default_rng(seed)
    modulus = int.from_bytes(rng.bytes(bits // 8 + 1), "little") % 2**bits | 1 << (bits - 1) | 1
    limbs = limbs_for(modulus)
    top = 2 ** (64 * limbs)
    xs = [int.from_bytes(rng.bytes(8 * limbs), "little") % top for _ in range(count)]
    ys = [int.from_bytes(rng.bytes(8 * limbs), "little") % modulus for _ in range(count)]
    e = int.from_bytes(rng.bytes(40), "little") >> (320 - exp_bits)
    a, b = from_mpz(xs, limbs), from_mpz(ys, limbs)
    e_row = np.frombuffer(int_to_bytes(e), dtype=np.uint8).reshape(1, -1)
    mod_b = int_to_bytes(modulus)

    for simd in {False, SIMD}:
        out = np.empty_like(a)
        _native.mulmod(out, a, b, mod_b, limbs, simd)
        assert to_mpz(out) == [x * y % modulus for x, y in zip(xs, ys, strict=True)]
        _native.powmod(out, limbs, a, limbs, e_row, e_row.shape[1], mod_b, simd)
        assert to_mpz(out) == [pow(x, e, modulus) for x in xs]


@pytest.mark.skipif(not NATIVE, reason="needs the C extension")
def test_extension_rejects_buffers_of_the_wrong_size() -> None:
    from fedcrypto import _native

    pk, _ = TINY
    a = from_mpz(units_mod(pk.n, 4), pk.limbs)

    with pytest.raises(ValueError, match="expected"):
        _native.mulmod(np.empty((3, pk.limbs), np.uint64), a, a, pk.nsquare_bytes, pk.limbs, True)
    with pytest.raises(ValueError, match="modulus"):
        _native.mulmod(np.empty_like(a), a, a, pk.nsquare_bytes, pk.limbs + 1, True)
    with pytest.raises(ValueError):
        _native.powmod(np.empty_like(a), pk.limbs, a, pk.limbs, rand(2, 3), 3, pk.nsquare_bytes, 1)


def _seeded_random_bytes(count: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(count * 7919 + width)
    return rng.integers(0, 256, size=(count, width), dtype=np.uint8)


@pytest.mark.parametrize("obfuscation", ["djn", "textbook"])
def test_public_api_gives_the_same_ciphertexts_on_every_backend(
    monkeypatch: pytest.MonkeyPatch, obfuscation: Any
) -> None:
    from fedcrypto.paillier import keys

    pk, sk = SMALL
    monkeypatch.setattr(keys, "random_bytes", _seeded_random_bytes)
    x = np.linspace(-3.5, 7.25, 13).reshape(13)

    public = on_every_backend(lambda: pk.encrypt(x, obfuscation=obfuscation).data)
    private = on_every_backend(lambda: sk.encrypt(x, obfuscation=obfuscation).data)

    assert_identical(public)
    assert_identical(private)
    vec = EncryptedVector.from_limbs(pk, public["gmpy2"], pk.encrypt(x).exponent)
    assert [sk.to_phe().decrypt(c) for c in to_phe(vec)] == x.tolist()


def test_vector_operations_are_identical_on_every_backend() -> None:
    pk, sk = SMALL
    rng = np.random.default_rng(11)
    x = rng.uniform(-1, 1, (4, 5))
    y = rng.uniform(-1, 1, (4, 5))
    w = rng.uniform(-2, 2, (5, 3))
    vx, vy = pk.encrypt(x), pk.encrypt(y)

    ops: dict[str, Callable[[], Any]] = {
        "add": lambda: (vx + vy).data,
        "sub": lambda: (vx - vy).data,
        "add_plain": lambda: (vx + 0.37).data,
        "mul_scalar": lambda: (vx * -0.37).data,
        "mul_array": lambda: (vx * y).data,
        "sum_axis": lambda: vx.sum(axis=0).data,
        "sum_all": lambda: vx.sum().data,
        "matmul": lambda: (vx @ w).data,
        "decrypt": lambda: sk.decrypt(vx @ w),
    }
    for op in ops.values():
        assert_identical(on_every_backend(op))
    assert np.allclose(sk.decrypt(vx @ w), x @ w, atol=1e-5)
    assert np.allclose(sk.decrypt(vx * y), x * y, atol=1e-12)


def test_thread_pool_results_equal_serial_results() -> None:
    pk, sk = SMALL
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, 700)
    xs = rng.uniform(-1, 1, (700, 6))
    vec = pk.encrypt(x)

    with ThreadPoolExecutor(2) as ex:
        enc = sk.encrypt(x, executor=ex)
        threaded = {
            "add": vec.add(vec, executor=ex).data,
            "mul": vec.mul(0.37, executor=ex).data,
            "neg": vec.neg(executor=ex).data,
            "dot": vec.matmul(xs, executor=ex).data,
            "sum": vec.reshape(70, 10).sum(axis=0, executor=ex).data,
            "total": vec.sum(executor=ex).data,
            "decrypt": sk.decrypt(vec, executor=ex),
        }
        decrypted = sk.decrypt(enc, executor=ex)

    serial = {
        "add": vec.add(vec).data,
        "mul": vec.mul(0.37).data,
        "neg": vec.neg().data,
        "dot": vec.matmul(xs).data,
        "sum": vec.reshape(70, 10).sum(axis=0).data,
        "total": vec.sum().data,
        "decrypt": sk.decrypt(vec),
    }
    for name, value in serial.items():
        assert np.array_equal(threaded[name], value), name
    assert np.array_equal(decrypted, x)


def test_encryption_is_the_same_serially_on_threads_and_on_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedcrypto.paillier import keys

    pk, sk = SMALL
    monkeypatch.setattr(keys, "random_bytes", _seeded_random_bytes)
    x = np.random.default_rng(9).uniform(-1, 1, 2100)

    serial = sk.encrypt(x).data
    with ThreadPoolExecutor(2) as threads:
        threaded = sk.encrypt(x, executor=threads).data
        public_threaded = pk.encrypt(x, executor=threads).data
    with ProcessPoolExecutor(2) as processes:
        shipped = sk.encrypt(x, executor=processes).data
        public_shipped = pk.encrypt(x, executor=processes).data

    assert np.array_equal(threaded, serial)
    assert np.array_equal(shipped, serial)
    assert np.array_equal(public_threaded, public_shipped)
    assert np.array_equal(
        sk.decrypt(EncryptedVector.from_limbs(pk, serial, sk.encrypt(x).exponent)), x
    )


@pytest.mark.slow
def test_a_2048_bit_key_agrees_on_every_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedcrypto.paillier import keys

    pk, sk = generate_keypair(2048)
    monkeypatch.setattr(keys, "random_bytes", _seeded_random_bytes)
    x = np.array([-1.0, 0.5, 0.25, 0.125, 0.0, 7.0, -2.5, 3.0, 9.5])

    public = on_every_backend(lambda: pk.encrypt(x).data)
    private = on_every_backend(lambda: sk.encrypt(x).data)
    decrypted = on_every_backend(lambda: sk.decrypt(pk.encrypt(x)))

    assert_identical(public)
    assert_identical(private)
    assert_identical(decrypted)
    assert np.array_equal(decrypted["gmpy2"], x)
    vec = EncryptedVector.from_limbs(pk, private["gmpy2"], pk.encrypt(x).exponent)
    assert [sk.to_phe().decrypt(c) for c in to_phe(vec)] == x.tolist()
