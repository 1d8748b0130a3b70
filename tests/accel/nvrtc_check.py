"""Compile a CUDA source with NVRTC through ctypes (no GPU, no CuPy needed): the compiler
cupy.RawModule uses. Helper of test_kernel_source.py."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys


def find_nvrtc() -> str | None:
    """libnvrtc from FEDACCEL_TEST_NVRTC, the loader path, or an installed nvidia-* wheel."""
    hint = os.environ.get("FEDACCEL_TEST_NVRTC")
    if hint:
        return hint
    found = ctypes.util.find_library("nvrtc")
    if found:
        return found
    for site in sys.path:
        hits = sorted(glob.glob(os.path.join(site, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")))
        hits = [h for h in hits if "builtins" not in h and ".alt." not in h]
        if hits:
            return hits[0]
    return None


def nvrtc_compile(lib_path: str, source: str, options: list[str]) -> tuple[int, str]:
    """(nvrtcResult of the compile, compile log)."""
    lib = ctypes.CDLL(lib_path)
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"fa_paillier.cu", 0,
                                None, None)
    if rc != 0:
        return rc, "nvrtcCreateProgram failed"
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, buf)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, buf.value.decode(errors="replace")
