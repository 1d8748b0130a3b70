"""HostRunner: the CUDA kernels compiled by the host C++ compiler and run on the CPU.

fa_paillier.cu compiles as plain C++ when neither __CUDACC__ nor __CUDACC_RTC__ is defined:
kernels become extern "C" functions and threadIdx/blockIdx/blockDim/gridDim become globals
that fa_host_set_thread() sets before each emulated thread runs. Every kernel uses a
grid-stride loop, so a small emulated grid (default 2 blocks of 2 threads) covers any batch
and still exercises the striding. This lets CI run the kernel source bit for bit against the
numpy reference without a GPU. It checks the arithmetic and the wrappers, not anything that
only a GPU shows (NVRTC acceptance, registers, occupancy, speed).

Needs a C++17 compiler (``c++`` by default). Builds are cached in ``build_dir`` under a name
derived from the sources, so edits rebuild.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedaccel.kernel_backend import KernelBackend
from fedaccel.kernels import HEADER, KERNEL_DIR, SOURCE

_CTYPES: dict[type[np.generic], type[Any]] = {
    np.int32: ctypes.c_int,
    np.int64: ctypes.c_longlong,
    np.uint32: ctypes.c_uint,
}


class HostRunner:
    """Runs kernels/fa_paillier.cu on the CPU (one emulated thread at a time)."""

    name = "host-emulated-cuda"
    is_gpu = False
    xp: Any = np

    def __init__(self, build_dir: Path, compiler: str = "c++", grid: int = 2,
                 block: int = 2) -> None:
        self.build_dir = Path(build_dir)
        self.compiler = compiler
        self.grid = grid
        self.block = block
        self._libs: dict[int, ctypes.CDLL] = {}

    def library_path(self, words: int) -> Path:
        digest = hashlib.sha256(
            HEADER.read_bytes() + SOURCE.read_bytes() + f"{words}:{self.compiler}".encode()
        ).hexdigest()[:16]
        return self.build_dir / f"fa_host_{words}_{digest}.so"

    def _lib(self, words: int) -> ctypes.CDLL:
        lib = self._libs.get(words)
        if lib is not None:
            return lib
        path = self.library_path(words)
        if not path.exists():
            self.build_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            cmd = [self.compiler, "-O1", "-std=c++17", "-shared", "-fPIC", "-x", "c++",
                   f"-DFA_LIMBS={words}", f"-I{KERNEL_DIR}", "-o", str(tmp), str(SOURCE)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"host build of the kernels failed:\n{proc.stderr}")
            tmp.replace(path)  # atomic: parallel test workers may race to build
        lib = ctypes.CDLL(str(path))
        if lib.fa_host_limbs() != words:
            raise RuntimeError(f"{path} was built for another limb count")
        self._libs[words] = lib
        return lib

    def to_device(self, host: NDArray[Any]) -> NDArray[Any]:
        return np.ascontiguousarray(host).copy()

    def to_host(self, dev: NDArray[Any]) -> NDArray[Any]:
        return np.asarray(dev).copy()

    def launch(self, words: int, kernel: str, rows: int, args: Sequence[object]) -> None:
        lib = self._lib(words)
        fn = getattr(lib, kernel)
        fn.restype = None
        cargs: list[Any] = []
        for a in args:
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous or a.dtype.itemsize != 4:
                    raise TypeError(f"{kernel}: arrays must be C-contiguous 32-bit words")
                cargs.append(ctypes.c_void_p(a.ctypes.data))
            else:
                cargs.append(_CTYPES[type(a)](a))  # type: ignore[index]
        for bx in range(self.grid):
            for tx in range(self.block):
                lib.fa_host_set_thread(self.grid, self.block, bx, tx)
                fn(*cargs)


def host_kernel_backend(build_dir: Path, compiler: str = "c++") -> KernelBackend:
    """KernelBackend on the host-compiled kernels (testing without a GPU)."""
    return KernelBackend(HostRunner(build_dir, compiler=compiler))
