"""Keeping the memory of large bodies for reuse (glibc's malloc).

A gateway copies every large body several times (bus chunks joined, envelope decoded, signed
bytes built, stripe chunks joined). By default glibc serves each allocation of 32 MiB or more
with a fresh mmap and unmaps it when freed, so every copy of such a body first takes a page
fault per 4 KiB page of its destination: on this project's machines that made a 32 MiB copy
cost 15 to 20 ms of CPU instead of 3 to 5 (docs/wan.md, "CPU of large bodies"). With the
thresholds raised, freed buffers stay in the heap and the next body reuses pages that are
already mapped; at most `keep_bytes` of free memory is kept at the top of the heap before it
is given back to the system.

`python -m fedgateway` calls `keep_freed_memory()` at start. Setting MALLOC_MMAP_THRESHOLD_ or
MALLOC_TRIM_THRESHOLD_ in the environment (glibc's own variables) leaves the choice to the
operator: nothing is changed then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

DEFAULT_KEEP_BYTES = 256 << 20
"""Allocations below this come from the heap; free heap memory above it is returned."""

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory(keep_bytes: int = DEFAULT_KEEP_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds to `keep_bytes` for this process. Returns whether
    they were changed (False: not glibc, or the environment sets them)."""
    if keep_bytes <= 0:
        raise ValueError("keep_bytes must be positive")
    if any(name in os.environ for name in _ENV):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    keep = min(keep_bytes, 2**31 - 1)
    changed = bool(mallopt(_M_MMAP_THRESHOLD, keep)) and bool(mallopt(_M_TRIM_THRESHOLD, keep))
    if not changed:
        import structlog  # here: a test runs this module in a bare process

        structlog.get_logger("fedgateway").warning("malloc_thresholds_not_set", keep_bytes=keep)
    return changed
