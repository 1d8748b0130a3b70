"""Backend selection and CuPy staying optional."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fedaccel import GpuUnavailableError, NumpyBackend, backend, gpu_status, select_backend


def test_importing_fedaccel_does_not_import_cupy() -> None:
    code = "import sys, fedaccel; fedaccel.select_backend(10, 'cpu'); print('cupy' in sys.modules)"

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)

    assert out.stdout.strip() == "False"


def test_cpu_preference_always_gives_the_reference_backend() -> None:
    choice = select_backend(10**6, prefer="cpu")

    assert choice.kind == "cpu" and isinstance(choice.backend, NumpyBackend)
    assert "forced" in choice.reason


def test_auto_keeps_small_batches_on_the_cpu() -> None:
    choice = select_backend(10, prefer="auto", min_gpu_batch=1000)

    assert choice.kind == "cpu"
    assert "below the GPU threshold" in choice.reason or "no usable GPU" in choice.reason


def test_auto_uses_the_gpu_for_large_batches_exactly_when_one_is_usable() -> None:
    ok, why = gpu_status()

    choice = select_backend(10**6, prefer="auto", min_gpu_batch=1000)

    assert choice.kind == ("gpu" if ok else "cpu")
    assert choice.backend.is_gpu is ok
    assert why in choice.reason


def test_forcing_the_gpu_without_one_raises_with_the_reason() -> None:
    ok, why = gpu_status()
    if ok:
        assert backend("gpu").is_gpu
        return
    with pytest.raises(GpuUnavailableError, match="unavailable"):
        backend("gpu")
    assert "CuPy" in why or "CUDA" in why


def test_unknown_preference_is_refused() -> None:
    with pytest.raises(ValueError, match="prefer"):
        select_backend(1, prefer="tpu")  # type: ignore[arg-type]
