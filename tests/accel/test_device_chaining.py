"""Chained operations on device-resident ciphertexts (DeviceCiphertexts), the production shape
of the GPU path: upload once, encrypt/add/scale/multi-exponentiate, download once.

Runs on the host-compiled kernels everywhere and on the GPU when one is present; the GPU
class also compares its arrays with the numpy reference bit for bit.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from fedaccel.crt import crt_key
from fedaccel.kernel_backend import KernelBackend
from fedaccel.limbs import from_limbs, limbs_for, to_limbs
from fedaccel.numpy_backend import NumpyBackend
from fedaccel.tables import build_fixed_base_table

from .conftest import Key


def _encrypt_chain(backend: KernelBackend, key: Key, rng: random.Random) -> None:
    n, m = key.n, key.nsq
    exp_bits = key.n.bit_length() // 2
    hs = pow(rng.randrange(1, n), n, m)
    table = build_fixed_base_table(hs, m, exp_bits=exp_bits, window=8)
    k, f = 24, 3
    d = [rng.getrandbits(40) for _ in range(k)]
    x = np.array([[rng.getrandbits(16) for _ in range(f)] for _ in range(k)], np.uint64)
    a = to_limbs([rng.getrandbits(exp_bits) for _ in range(k)], -(-exp_bits // 64))

    enc = backend.encrypt_fixed_base_device(to_limbs(d, limbs_for(n)), table, a, n)
    doubled = backend.add_device(enc, enc)
    tripled = backend.add_device(doubled, enc)
    scaled = backend.scalar_mul_device(tripled, np.full(k, 5, np.uint64))
    grad = backend.multiexp_device(enc, x)

    dk = crt_key(key.p, key.q)
    assert from_limbs(backend.decrypt_crt_device(scaled, dk)) == [15 * v for v in d]
    assert from_limbs(backend.decrypt_crt_device(grad, dk)) == [
        sum(int(x[i, j]) * d[i] for i in range(k)) for j in range(f)
    ]
    assert enc.count == k and grad.count == f and grad.modulus == m


def test_host_kernels_chain_encrypt_add_scale_and_matvec_at_1024_bits(
    host_backend: KernelBackend, key1024: Key, rng: random.Random
) -> None:
    _encrypt_chain(host_backend, key1024, rng)


@pytest.mark.slow
def test_host_kernels_chain_at_2048_bit_keys(host_backend: KernelBackend, key2048: Key,
                                             rng: random.Random) -> None:
    _encrypt_chain(host_backend, key2048, rng)


def test_device_operands_of_different_moduli_are_refused(host_backend: KernelBackend,
                                                         key1024: Key) -> None:
    a = host_backend.upload(to_limbs([3], limbs_for(key1024.nsq)), key1024.nsq)
    b = host_backend.upload(to_limbs([3], limbs_for(key1024.n)), key1024.n)

    with pytest.raises(ValueError, match="share the modulus"):
        host_backend.mulmod_device(a, b)


def test_host_kernels_match_numpy_reference_arrays_bit_for_bit(
    host_backend: KernelBackend, numpy_backend: NumpyBackend, key1024: Key,
    rng: random.Random
) -> None:
    m = key1024.nsq
    a = to_limbs([rng.randrange(m) for _ in range(6)], limbs_for(m))
    b = to_limbs([rng.randrange(m) for _ in range(6)], limbs_for(m))
    e = np.array([rng.getrandbits(64) for _ in range(6)], np.uint64)

    for op in ("mulmod", "powmod"):
        arg = b if op == "mulmod" else e
        got = getattr(host_backend, op)(a, arg, m)
        want = getattr(numpy_backend, op)(a, arg, m)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes(), op


@pytest.mark.gpu
class TestGpuMatchesReference:
    """CupyBackend against NumpyBackend, byte for byte, at the sizes of 1024- and 2048-bit keys
    (n^2 of 2048 and 4096 bits) and at the largest kernel size (6144 bits)."""

    @pytest.mark.parametrize("bits", [2048, 4096, 6144])
    def test_mulmod_and_powmod_arrays_equal_the_reference(
        self, gpu_backend: KernelBackend, numpy_backend: NumpyBackend, bits: int,
        rng: random.Random
    ) -> None:
        m = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        vals = [0, 1, m - 1] + [rng.randrange(m) for _ in range(61)]
        a = to_limbs(vals, limbs_for(m))
        b = to_limbs(list(reversed(vals)), limbs_for(m))
        e = np.array([rng.getrandbits(32) for _ in vals], np.uint64)

        assert gpu_backend.mulmod(a, b, m).tobytes() == numpy_backend.mulmod(a, b, m).tobytes()
        assert gpu_backend.powmod(a, e, m).tobytes() == numpy_backend.powmod(a, e, m).tobytes()

    def test_paillier_operations_equal_the_reference(
        self, gpu_backend: KernelBackend, numpy_backend: NumpyBackend, key1024: Key,
        rng: random.Random
    ) -> None:
        n, m = key1024.n, key1024.nsq
        table = build_fixed_base_table(pow(rng.randrange(1, n), n, m), m, exp_bits=512)
        plain = to_limbs([rng.randrange(n) for _ in range(40)], limbs_for(n))
        a = to_limbs([rng.getrandbits(512) for _ in range(40)], 8)
        x = np.array([[rng.getrandbits(16) for _ in range(2)] for _ in range(40)], np.uint64)
        dk = crt_key(key1024.p, key1024.q)

        c_gpu = gpu_backend.encrypt_fixed_base(plain, table, a, n)
        c_ref = numpy_backend.encrypt_fixed_base(plain, table, a, n)
        assert c_gpu.tobytes() == c_ref.tobytes()
        assert (gpu_backend.decrypt_crt(c_gpu, dk).tobytes()
                == numpy_backend.decrypt_crt(c_ref, dk).tobytes())
        assert (gpu_backend.multiexp(c_gpu, x, m).tobytes()
                == numpy_backend.multiexp(c_ref, x, m).tobytes())

    def test_chain_on_the_gpu(self, gpu_backend: KernelBackend, key2048: Key,
                              rng: random.Random) -> None:
        _encrypt_chain(gpu_backend, key2048, rng)
