"""The CUDA source: every launched kernel exists with the argument kinds the wrappers pass,
and (where nvcc is installed) the source compiles for sm_90 (H100).

These are consistency checks, not a substitute for running the kernels on a GPU (that is
test_backend_contract.TestCupyBackend, marker gpu).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
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
    return {name: tuple(_kind(p) for p in params.split(",")) for name, params in _DECL.findall(src)}


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


NVCC_WORDS = (16, 64)
"""The smallest and largest kernel sizes the nvcc check compiles the source for."""


class NvccRuns:
    """The nvcc compiles of this module, all started at once: each is one single-threaded
    compiler run of up to a minute or more on a loaded machine, so side by side they take
    the time of the longest, not the sum. `result(name)` waits for one."""

    def __init__(self, directory: Path) -> None:
        arch = ["nvcc", "-c", "--std=c++17", "-arch=sm_90"]
        unit = directory / "fa_inlined.cu"
        unit.write_text(kernel_source())
        commands = {
            f"source-{words}": [
                *arch,
                f"-DFA_LIMBS={words}",
                f"-I{KERNEL_DIR}",
                "-o",
                str(directory / f"fa_{words}.o"),
                str(SOURCE),
            ]
            for words in NVCC_WORDS
        }
        commands["inlined-32"] = [
            *arch,
            "-DFA_LIMBS=32",
            "-o",
            str(directory / "fa_inlined.o"),
            str(unit),
        ]
        self.objects = {name: Path(cmd[cmd.index("-o") + 1]) for name, cmd in commands.items()}
        self._procs = {
            name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name, cmd in commands.items()
        }

    def result(self, name: str) -> tuple[int, str]:
        """(exit status, stderr) of the compile `name`."""
        _, stderr = self._procs[name].communicate()
        return self._procs[name].returncode, stderr

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def nvcc_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NvccRuns]:
    runs = NvccRuns(tmp_path_factory.mktemp("nvcc"))
    try:
        yield runs
    finally:
        runs.stop()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
@pytest.mark.parametrize("words", NVCC_WORDS)
def test_kernels_compile_with_nvcc_for_sm_90(words: int, nvcc_runs: NvccRuns) -> None:
    assert words in KERNEL_WORDS

    returncode, stderr = nvcc_runs.result(f"source-{words}")

    assert returncode == 0, stderr
    assert "warning" not in stderr.lower(), stderr
    assert nvcc_runs.objects[f"source-{words}"].stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed on this machine")
def test_inlined_nvrtc_source_compiles_with_nvcc(nvcc_runs: NvccRuns) -> None:
    returncode, stderr = nvcc_runs.result("inlined-32")

    assert returncode == 0, stderr


@pytest.mark.slow
@pytest.mark.skipif(
    find_nvrtc() is None,
    reason="libnvrtc not found (set FEDACCEL_TEST_NVRTC or install nvidia-cuda-nvrtc-cu12)",
)
@pytest.mark.parametrize("words", [16, 48])
def test_nvrtc_accepts_the_source_as_cupy_rawmodule_passes_it(words: int) -> None:
    lib = find_nvrtc()
    assert lib is not None

    rc, log = nvrtc_compile(
        lib, kernel_source(), ["-std=c++17", f"-DFA_LIMBS={words}", "-arch=compute_90"]
    )

    assert rc == 0, log
    assert "warning" not in log.lower(), log
