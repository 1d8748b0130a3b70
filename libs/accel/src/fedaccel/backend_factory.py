"""Backend selection: the GPU when CuPy sees a device and the batch pays for the transfer.

No logging and no environment reads here: callers pass their setting (``prefer``) and the
threshold, and log the returned reason themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from fedaccel.backend import Backend, GpuUnavailableError
from fedaccel.numpy_backend import NumpyBackend

Preference = Literal["auto", "cpu", "gpu"]

DEFAULT_MIN_GPU_BATCH = 1024
"""Below this many elements the CPU path is chosen in "auto" mode: transfers and launch
latency dominate small batches. A starting point, to be set from GPU measurements."""


@dataclass(frozen=True)
class BackendChoice:
    """What select_backend picked and why (a short sentence for the caller's log)."""

    kind: Literal["cpu", "gpu"]
    backend: Backend
    reason: str


@lru_cache(maxsize=1)
def _gpu_backend() -> Backend:
    # One KernelBackend per process: it holds the compiled modules and the device-resident
    # moduli and fixed-base tables, which are expensive to rebuild.
    from fedaccel.cupy_runtime import cupy_backend

    return cupy_backend()


def gpu_status() -> tuple[bool, str]:
    """Whether a GPU backend can be made, with the reason (CuPy is imported lazily)."""
    from fedaccel.cupy_runtime import gpu_status as probe

    return probe()


def select_backend(batch_size: int, prefer: Preference = "auto",
                   min_gpu_batch: int = DEFAULT_MIN_GPU_BATCH) -> BackendChoice:
    """Pick the backend for a batch of ``batch_size`` elements.

    "cpu" always gives the exact CPU reference (callers with a faster CPU path, such as
    fedcrypto's gmpy2 loop, use that when kind == "cpu"); "gpu" raises GpuUnavailableError
    without a usable GPU; "auto" takes the GPU only when one is usable and
    batch_size >= min_gpu_batch.
    """
    if prefer == "cpu":
        return BackendChoice("cpu", NumpyBackend(), "cpu forced by setting")
    ok, why = gpu_status()
    if prefer == "gpu":
        if not ok:
            raise GpuUnavailableError(f"gpu forced by setting but unavailable: {why}")
        return BackendChoice("gpu", _gpu_backend(), f"gpu forced by setting: {why}")
    if prefer != "auto":
        raise ValueError(f"prefer must be auto, cpu or gpu, not {prefer!r}")
    if not ok:
        return BackendChoice("cpu", NumpyBackend(), f"no usable GPU: {why}")
    if batch_size < min_gpu_batch:
        return BackendChoice(
            "cpu", NumpyBackend(),
            f"batch of {batch_size} below the GPU threshold of {min_gpu_batch}",
        )
    return BackendChoice("gpu", _gpu_backend(), f"batch of {batch_size} on {why}")


def backend(name: Preference = "auto") -> Backend:
    """A backend by name: "cpu" (numpy reference), "gpu" (CuPy, raises without one), or
    "auto" (the GPU when usable, whatever the batch size)."""
    return select_backend(batch_size=0, prefer=name, min_gpu_batch=0).backend
