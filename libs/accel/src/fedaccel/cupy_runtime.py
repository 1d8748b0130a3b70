"""CupyRunner: the kernels on a CUDA GPU through cupy.RawModule (NVRTC).

CuPy is optional (the ``gpu`` extra): it is imported only when a GPU backend is asked for or
probed. One RawModule is compiled per limb count (-DFA_LIMBS=...) on first use; CuPy caches
the compiled binary on disk, so later processes load it without compiling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from numpy.typing import NDArray

from fedaccel.kernel_backend import KernelBackend
from fedaccel.kernels import kernel_source

DEFAULT_BLOCK = 128
"""Threads per block. The kernels use up to 255 registers per thread at 64+ limbs, so 128
keeps a block within the 64K-register file; to be tuned on the GPU."""


def gpu_status() -> tuple[bool, str]:
    """Whether CuPy imports and sees a CUDA device, and a reason string for logs."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising on import
        return False, f"CuPy not installed or not importable ({type(exc).__name__}: {exc})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:
        return False, f"no CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "no CUDA device"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        label = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        label = "device 0"
    return True, f"CUDA {label} ({count} device(s))"


class CupyRunner:
    """Compiles and launches kernels/fa_paillier.cu with CuPy."""

    name = "cupy"
    is_gpu = True

    def __init__(self, block: int = DEFAULT_BLOCK) -> None:
        import cupy

        self.xp: Any = cupy
        self.block = block
        self._modules: dict[int, Any] = {}
        self._source = kernel_source()

    def module(self, words: int) -> Any:
        mod = self._modules.get(words)
        if mod is None:
            mod = self.xp.RawModule(
                code=self._source,
                options=("-std=c++17", f"-DFA_LIMBS={words}"),
            )
            self._modules[words] = mod
        return mod

    def to_device(self, host: NDArray[Any]) -> Any:
        return self.xp.ascontiguousarray(self.xp.asarray(host))

    def to_host(self, dev: Any) -> NDArray[Any]:
        out: NDArray[Any] = self.xp.asnumpy(dev)
        return out

    def launch(self, words: int, kernel: str, rows: int, args: Sequence[object]) -> None:
        fn = self.module(words).get_function(kernel)
        grid = max(1, min(-(-rows // self.block), 2**31 - 1))
        fn((grid,), (self.block,), tuple(args))

    def synchronize(self) -> None:
        self.xp.cuda.runtime.deviceSynchronize()


def cupy_backend(block: int = DEFAULT_BLOCK) -> KernelBackend:
    """KernelBackend on the GPU. Raises ImportError when CuPy is missing."""
    return KernelBackend(CupyRunner(block=block))
