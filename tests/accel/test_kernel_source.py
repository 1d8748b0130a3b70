"""The CUDA source: every launched kernel exists with the argument kinds the wrappers pass,
and (where nvcc is installed) the source compiles for sm_90 (H100).

These are consistency checks, not a substitute for running the kernels on a GPU (that is
test_backend_contract.TestCupyBackend, marker gpu).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fedaccel.kernel_backend import KERNEL_SIGNATURES
from fedaccel.kernels import HEADER, KERNEL_DIR, SOURCE, kernel_source
from fedaccel.montgomery import KERNEL_WORDS

from .nvrtc_check import find_nvrtc, nvrtc_compile

_DECL = re.compile(r"FA_KERNEL\s+(fa_\w+)\s*\(([^)]*)\)", re.S)


def _kind(param: str) -> str:
    p = " ".join(param.split())
    if "*" in p:
        return "p"
    if p.startswith("long long"):
        return "i64"
    if p.startswith("u32") or p.startswith("unsigned int"):
        return "u32"
    if p.startswith("int"):
        return "i32"
    raise AssertionError(f"unexpected parameter type: {param}")


def _declared() -> dict[str, tuple[str, ...]]:
    src = SOURCE.read_text()
    return {name: tuple(_kind(p) for p in params.split(",")) for name, params in
            _DECL.findall(src)}


def test_every_wrapped_kernel_is_declared_with_the_wrappers_argument_kinds() -> None:
    declared = _declared()

    assert set(KERNEL_SIGNATURES) <= set(declared), set(KERNEL_SIGNATURES) - set(declared)
    for name, kinds in KERNEL_SIGNATURES.items():
        assert declared[name] == kinds, name


def test_the_source_declares_no_kernel_the_wrappers_do_not_know() -> None:
    assert set(_declared()) == set(KERNEL_SIGNATURES)


def test_nvrtc_source_inlines_the_header_into_one_translation_unit() -> None:
    src = kernel_source()

    assert '#include "fa_bigint.cuh"' not in src
    assert "fa_mont_mul" in src and "#pragma once" not in src
    assert HEADER.exists() and SOURCE.exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
@pytest.mark.parametrize("words", [16, 64])
def test_kernels_compile_with_nvcc_for_sm_90(words: int, tmp_path: Path) -> None:
    assert words in KERNEL_WORDS
    obj = tmp_path / f"fa_{words}.o"

    proc = subprocess.run(
        ["nvcc", "-c", "--std=c++17", "-arch=sm_90", f"-DFA_LIMBS={words}", f"-I{KERNEL_DIR}",
         "-o", str(obj), str(SOURCE)],
        capture_output=True, text=True, check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    assert obj.stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_inlined_nvrtc_source_compiles_with_nvcc(tmp_path: Path) -> None:
    unit = tmp_path / "fa_inlined.cu"
    unit.write_text(kernel_source())

    proc = subprocess.run(
        ["nvcc", "-c", "--std=c++17", "-arch=sm_90", "-DFA_LIMBS=32", "-o",
         str(tmp_path / "fa_inlined.o"), str(unit)],
        capture_output=True, text=True, check=False,
    )

    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(find_nvrtc() is None,
                    reason="libnvrtc not found (set FEDACCEL_TEST_NVRTC or install "
                           "nvidia-cuda-nvrtc-cu12)")
@pytest.mark.parametrize("words", [16, 48])
def test_nvrtc_accepts_the_source_as_cupy_rawmodule_passes_it(words: int) -> None:
    lib = find_nvrtc()
    assert lib is not None

    rc, log = nvrtc_compile(lib, kernel_source(),
                            ["-std=c++17", f"-DFA_LIMBS={words}", "-arch=compute_90"])

    assert rc == 0, log
    assert "warning" not in log.lower(), log
