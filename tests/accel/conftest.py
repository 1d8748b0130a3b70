"""Fixtures for fedaccel: Paillier keys made with gmpy2, the host-compiled kernels, the GPU."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import gmpy2
import pytest
from fedaccel.host_runtime import host_kernel_backend
from fedaccel.kernel_backend import KernelBackend
from fedaccel.numpy_backend import NumpyBackend

GPU_SKIP_REASON = "no CUDA device / CuPy not installed (CI has no GPU)"


@dataclass(frozen=True)
class Key:
    p: int
    q: int

    @property
    def n(self) -> int:
        return self.p * self.q

    @property
    def nsq(self) -> int:
        return self.n * self.n


def make_key(bits: int, seed: int) -> Key:
    """A Paillier modulus n = p q of ``bits`` bits (primes from gmpy2.next_prime)."""
    rng = random.Random(seed)
    while True:
        half = bits // 2
        p = int(gmpy2.next_prime(rng.getrandbits(half) | (3 << (half - 2))))
        q = int(gmpy2.next_prime(rng.getrandbits(half) | (3 << (half - 2))))
        if p != q and (p * q).bit_length() == bits:
            return Key(p, q)


@pytest.fixture(scope="session")
def key1024() -> Key:
    return make_key(1024, seed=8)


@pytest.fixture(scope="session")
def key2048() -> Key:
    return make_key(2048, seed=9)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20240808)


@pytest.fixture(scope="session")
def numpy_backend() -> NumpyBackend:
    return NumpyBackend()


@pytest.fixture(scope="session")
def host_backend(tmp_path_factory: pytest.TempPathFactory) -> KernelBackend:
    """The CUDA kernel source compiled for the CPU (needs c++, present on every dev/CI box)."""
    return host_kernel_backend(Path(tmp_path_factory.mktemp("fa_host_build")))


@pytest.fixture(scope="session")
def gpu_backend() -> KernelBackend:
    from fedaccel.backend_factory import gpu_status

    ok, why = gpu_status()
    if not ok:
        pytest.skip(f"{GPU_SKIP_REASON}: {why}")
    from fedaccel.cupy_runtime import cupy_backend

    return cupy_backend()
