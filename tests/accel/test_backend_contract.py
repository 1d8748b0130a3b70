"""One contract for every Backend, checked against Python ints (gmpy2 for the primes).

Run against the numpy reference, the CUDA kernels compiled for the host, and (marker gpu)
the CUDA kernels on a GPU. All outputs are canonical residues in the shared layout, so two
backends that pass are bit-identical on these inputs; TestGpuMatchesReference also compares
the arrays directly.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from fedaccel.backend import Backend
from fedaccel.crt import crt_key
from fedaccel.kernel_backend import KernelBackend
from fedaccel.limbs import Limbs, from_limbs, limbs_for, to_limbs
from fedaccel.numpy_backend import NumpyBackend
from fedaccel.tables import build_fixed_base_table
from phe import paillier

from .conftest import Key


def _assert_ints(out: Limbs, expected: list[int], modulus: int) -> None:
    assert out.dtype == np.dtype("<u8")
    assert out.shape == (len(expected), limbs_for(modulus))
    assert from_limbs(out) == expected


def _residues(rng: random.Random, mod: int, count: int) -> list[int]:
    """Edge cases first (0, 1, mod - 1, mod - 2), then uniform values."""
    edge = [0, 1, mod - 1, mod - 2]
    return (edge + [rng.randrange(mod) for _ in range(count)])[: max(count, len(edge))]


class BackendContract:
    backend: Backend

    @pytest.fixture(autouse=True)
    def _bind(self, make_backend: Backend) -> None:
        self.backend = make_backend

    # --- modular arithmetic at the n^2 of a 1024-bit key (2048-bit modulus) ----------------

    def test_mulmod_matches_python_ints_including_edge_values(self, key1024: Key,
                                                              rng: random.Random) -> None:
        m = key1024.nsq
        a = _residues(rng, m, 8)
        b = list(reversed(_residues(rng, m, 8)))

        out = self.backend.mulmod(to_limbs(a, limbs_for(m)), to_limbs(b, limbs_for(m)), m)

        _assert_ints(out, [x * y % m for x, y in zip(a, b, strict=True)], m)

    def test_mulmod_broadcasts_a_single_right_operand(self, key1024: Key,
                                                      rng: random.Random) -> None:
        m = key1024.nsq
        a = _residues(rng, m, 5)
        b = rng.randrange(m)

        out = self.backend.mulmod(to_limbs(a, limbs_for(m)), to_limbs([b], limbs_for(m)), m)

        _assert_ints(out, [x * b % m for x in a], m)

    def test_mulmod_with_all_ones_modulus_survives_long_carry_chains(self) -> None:
        m = (1 << 2048) - 1  # every word 0xffffffff: carries ripple across the whole number
        a = [m - 1, m - 2, (1 << 1024) - 1, 1 << 2047]

        out = self.backend.mulmod(to_limbs(a, 32), to_limbs(a, 32), m)

        _assert_ints(out, [x * x % m for x in a], m)

    def test_powmod_with_per_element_64_bit_exponents(self, key1024: Key,
                                                      rng: random.Random) -> None:
        m = key1024.nsq
        base = _residues(rng, m, 6)
        exps = [0, 1, 2**64 - 1, 2**63, rng.getrandbits(64), 16]

        out = self.backend.powmod(to_limbs(base, limbs_for(m)), np.array(exps, np.uint64), m)

        _assert_ints(out, [pow(b, e, m) for b, e in zip(base, exps, strict=True)], m)

    def test_powmod_with_one_shared_wide_exponent(self, key1024: Key,
                                                  rng: random.Random) -> None:
        m = key1024.nsq
        base = _residues(rng, m, 4)
        e = rng.getrandbits(256) | (1 << 255)

        out = self.backend.powmod(to_limbs(base, limbs_for(m)), e, m)

        _assert_ints(out, [pow(b, e, m) for b in base], m)

    @pytest.mark.parametrize("bits", [4096, 6144])
    def test_mulmod_and_powmod_at_large_moduli(self, bits: int, rng: random.Random) -> None:
        m = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        a = _residues(rng, m, 4)
        b = [rng.randrange(m) for _ in a]
        exps = [0, 1, 2**32 - 1, rng.getrandbits(32)]
        limbs = limbs_for(m)

        prod = self.backend.mulmod(to_limbs(a, limbs), to_limbs(b, limbs), m)
        powr = self.backend.powmod(to_limbs(a, limbs), np.array(exps, np.uint64), m)

        _assert_ints(prod, [x * y % m for x, y in zip(a, b, strict=True)], m)
        _assert_ints(powr, [pow(x, e, m) for x, e in zip(a, exps, strict=True)], m)

    def test_fixed_base_pow_equals_pow_of_the_base(self, key1024: Key,
                                                   rng: random.Random) -> None:
        m = key1024.nsq
        hs = pow(rng.randrange(key1024.n), key1024.n, m)
        table = build_fixed_base_table(hs, m, exp_bits=512, window=8)
        exps = [0, 1, 2**512 - 1] + [rng.getrandbits(512) for _ in range(3)]

        out = self.backend.fixed_base_pow(table, to_limbs(exps, 8), len(exps))

        _assert_ints(out, [pow(hs, e, m) for e in exps], m)

    def test_fixed_base_pow_refuses_exponents_beyond_the_table(self, key1024: Key) -> None:
        table = build_fixed_base_table(3, key1024.nsq, exp_bits=64, window=8)

        with pytest.raises(ValueError, match="exceed"):
            self.backend.fixed_base_pow(table, to_limbs([2**64], 2), 1)

    def test_multiexp_computes_x_transpose_times_encrypted_vector(self, key1024: Key,
                                                                  rng: random.Random) -> None:
        m = key1024.nsq
        k, f = 40, 3
        d = [rng.randrange(m) for _ in range(k)]
        x = np.array([[rng.getrandbits(12) for _ in range(f)] for _ in range(k)], np.uint64)
        x[0, 0], x[1, 1] = 0, 2**12 - 1

        out = self.backend.multiexp(to_limbs(d, limbs_for(m)), x, m)

        expected = []
        for j in range(f):
            acc = 1
            for i in range(k):
                acc = acc * pow(d[i], int(x[i, j]), m) % m
            expected.append(acc)
        _assert_ints(out, expected, m)

    # --- Paillier at a 1024-bit key ----------------------------------------------------------

    def test_encrypt_equals_phe_raw_encrypt_with_the_same_randomness(
        self, key1024: Key, rng: random.Random
    ) -> None:
        n, m = key1024.n, key1024.nsq
        pub = paillier.PaillierPublicKey(n)
        plain = [0, 1, 12345, pub.max_int - 1, rng.randrange(pub.max_int)]
        r = [rng.randrange(1, n) for _ in plain]
        obf = [pow(x, n, m) for x in r]

        out = self.backend.encrypt(to_limbs(plain, limbs_for(n)), to_limbs(obf, limbs_for(m)), n)

        expected = [pub.raw_encrypt(x, r_value=rv) for x, rv in zip(plain, r, strict=True)]
        _assert_ints(out, expected, m)

    def test_decrypt_crt_equals_phe_raw_decrypt(self, key1024: Key, rng: random.Random) -> None:
        n, m = key1024.n, key1024.nsq
        pub = paillier.PaillierPublicKey(n)
        priv = paillier.PaillierPrivateKey(pub, key1024.p, key1024.q)
        plain = [0, 1, n - 1, rng.randrange(n), rng.randrange(n)]
        cts = [(1 + x * n) * pow(rng.randrange(1, n), n, m) % m for x in plain]

        out = self.backend.decrypt_crt(to_limbs(cts, limbs_for(m)), crt_key(key1024.p, key1024.q))

        _assert_ints(out, [priv.raw_decrypt(c) for c in cts], n)
        assert from_limbs(out) == plain

    def test_encrypt_with_fixed_base_obfuscator_matches_explicit_obfuscator(
        self, key1024: Key, rng: random.Random
    ) -> None:
        n, m = key1024.n, key1024.nsq
        hs = pow(rng.randrange(1, n), n, m)  # DJN: h^n, obfuscator hs^a with a ~ n/2 bits
        table = build_fixed_base_table(hs, m, exp_bits=512, window=8)
        plain = [0, 7, n - 1, rng.randrange(n)]
        a = [rng.getrandbits(512) for _ in plain]

        out = self.backend.encrypt_fixed_base(to_limbs(plain, limbs_for(n)), table,
                                              to_limbs(a, 8), n)

        expected = [(1 + x * n) * pow(hs, e, m) % m for x, e in zip(plain, a, strict=True)]
        _assert_ints(out, expected, m)

    def test_homomorphic_add_and_scalar_mul_decrypt_to_plaintext_arithmetic(
        self, key1024: Key, rng: random.Random
    ) -> None:
        n, m = key1024.n, key1024.nsq
        key = crt_key(key1024.p, key1024.q)
        x = [rng.getrandbits(60) for _ in range(4)]
        y = [rng.getrandbits(60) for _ in range(4)]
        k = [0, 1, 3, 2**32 - 1]
        enc = [to_limbs([(1 + v * n) * pow(rng.randrange(1, n), n, m) % m for v in vals],
                       limbs_for(m)) for vals in (x, y)]

        total = self.backend.add(enc[0], enc[1], n)
        scaled = self.backend.scalar_mul(enc[0], np.array(k, np.uint64), n)

        assert from_limbs(self.backend.decrypt_crt(total, key)) == [
            a + b for a, b in zip(x, y, strict=True)]
        assert from_limbs(self.backend.decrypt_crt(scaled, key)) == [
            a * s % n for a, s in zip(x, k, strict=True)]

    def test_matmul_signed_decrypts_to_the_signed_product(self, key1024: Key,
                                                          rng: random.Random) -> None:
        n, m = key1024.n, key1024.nsq
        k, f = 12, 2
        d = [rng.randrange(-1000, 1000) for _ in range(k)]
        enc = to_limbs([(1 + (v % n) * n) * pow(rng.randrange(1, n), n, m) % m for v in d],
                       limbs_for(m))
        x = np.array([[rng.randrange(-50, 50) for _ in range(f)] for _ in range(k)], np.int64)

        out = self.backend.matmul_signed(enc, x, n)

        plain = from_limbs(self.backend.decrypt_crt(out, crt_key(key1024.p, key1024.q)))
        expected = [sum(int(x[i, j]) * d[i] for i in range(k)) % n for j in range(f)]
        assert plain == expected

    # --- packing -----------------------------------------------------------------------------

    @pytest.mark.parametrize("slot_bits", [7, 32, 45, 64])
    def test_pack_then_unpack_round_trips_quantized_slots(self, slot_bits: int,
                                                          rng: random.Random) -> None:
        k = (16 * 64) // slot_bits
        slots = np.array([[rng.getrandbits(slot_bits) for _ in range(k)] for _ in range(3)],
                         dtype=np.uint64)
        slots[0, :] = 0
        slots[1, -1] = (1 << slot_bits) - 1

        packed = self.backend.pack(slots, slot_bits, 16)
        back = self.backend.unpack(packed, slot_bits, k)

        expected = [sum(int(v) << (slot_bits * s) for s, v in enumerate(row)) for row in slots]
        _assert_ints(packed, expected, 1 << (16 * 64 - 1))
        assert back.dtype == np.uint64 and np.array_equal(back, slots)

    def test_pack_refuses_a_slot_wider_than_its_bits(self) -> None:
        with pytest.raises(ValueError, match="does not fit"):
            self.backend.pack(np.array([[8]], dtype=np.uint64), 3, 1)

    # --- argument checks ---------------------------------------------------------------------

    def test_operands_at_or_above_the_modulus_are_refused(self, key1024: Key) -> None:
        m = key1024.nsq

        with pytest.raises(ValueError, match="below the modulus"):
            self.backend.mulmod(to_limbs([m], limbs_for(m)), to_limbs([1], limbs_for(m)), m)

    def test_plaintexts_at_or_above_n_are_refused(self, key1024: Key) -> None:
        n, m = key1024.n, key1024.nsq

        with pytest.raises(ValueError, match="below n"):
            self.backend.encrypt(to_limbs([n], limbs_for(m)), to_limbs([1], limbs_for(m)), n)


class TestNumpyBackend(BackendContract):
    @pytest.fixture
    def make_backend(self, numpy_backend: NumpyBackend) -> Backend:
        return numpy_backend


class TestHostCompiledKernels(BackendContract):
    """The CUDA source itself, compiled by c++ and run one emulated thread at a time."""

    @pytest.fixture
    def make_backend(self, host_backend: KernelBackend) -> Backend:
        return host_backend


@pytest.mark.gpu
class TestCupyBackend(BackendContract):
    @pytest.fixture
    def make_backend(self, gpu_backend: KernelBackend) -> Backend:
        return gpu_backend
