"""fedaccel: batch Paillier arithmetic on GPUs (CuPy) with an exact numpy reference.

Numbers travel in the layout shared with fedcrypto: ``(count, limbs)`` little-endian uint64,
limb 0 least significant. ``backend("auto" | "cpu" | "gpu")`` or ``select_backend(batch_size,
prefer)`` give a Backend; the GPU one is a KernelBackend on the CUDA kernels in
fedaccel/kernels and keeps data on the device between chained ``*_device`` calls.
Importing fedaccel never imports CuPy.
"""

from fedaccel.backend import Backend, Exponents, GpuUnavailableError
from fedaccel.backend_factory import (
    DEFAULT_MIN_GPU_BATCH,
    BackendChoice,
    backend,
    gpu_status,
    select_backend,
)
from fedaccel.crt import CrtKey, crt_key
from fedaccel.kernel_backend import DeviceCiphertexts, KernelBackend
from fedaccel.limbs import from_limbs, limbs_for, to_limbs
from fedaccel.montgomery import KERNEL_WORDS, Modulus, modulus
from fedaccel.numpy_backend import NumpyBackend
from fedaccel.tables import FixedBaseTable, build_fixed_base_table

__all__ = [
    "DEFAULT_MIN_GPU_BATCH",
    "KERNEL_WORDS",
    "Backend",
    "BackendChoice",
    "CrtKey",
    "DeviceCiphertexts",
    "Exponents",
    "FixedBaseTable",
    "GpuUnavailableError",
    "KernelBackend",
    "Modulus",
    "NumpyBackend",
    "backend",
    "build_fixed_base_table",
    "crt_key",
    "from_limbs",
    "gpu_status",
    "limbs_for",
    "modulus",
    "select_backend",
    "to_limbs",
]
