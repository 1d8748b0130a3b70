"""CUDA C sources of the batch kernels (data files; see kernel_source())."""

from __future__ import annotations

from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
SOURCE = KERNEL_DIR / "fa_paillier.cu"
HEADER = KERNEL_DIR / "fa_bigint.cuh"
_INCLUDE = '#include "fa_bigint.cuh"'


def kernel_source() -> str:
    """fa_paillier.cu with fa_bigint.cuh inlined: one translation unit for NVRTC, which then
    needs no include path."""
    header = HEADER.read_text().replace("#pragma once\n", "")
    src = SOURCE.read_text()
    if _INCLUDE not in src:
        raise RuntimeError(f"{SOURCE.name} no longer includes {HEADER.name}")
    return src.replace(_INCLUDE, header)
