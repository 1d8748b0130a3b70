"""fedgateway.allocator: freed large buffers are reused instead of mapped afresh (docs/wan.md)."""

import os
import subprocess
import sys

import pytest
from fedgateway.allocator import keep_freed_memory

PAGES_PER_COPY = (32 << 20) // 4096
COPIES = 4

# Minor page faults of COPIES copies of a 32 MiB body (each freed before the next) with glibc's
# defaults, then the same after keep_freed_memory(): one process, one line each.
_COPIES = f"""
import resource
from fedgateway.allocator import keep_freed_memory
body = b"x" * (32 << 20)
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range({COPIES}):
        copy = bytes(memoryview(body)[1:])
        del copy
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults())
assert keep_freed_memory()
print(faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_memory_spares_a_page_fault_per_page_of_each_copy():
    # Prepare: a process of its own (the thresholds are per process; this one is left alone)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    # Execute
    done = subprocess.run(
        [sys.executable, "-c", _COPIES], env=env, capture_output=True, text=True, timeout=60
    )

    # Assert: before, every copy mapped fresh pages; after, only the first one
    assert done.returncode == 0, done.stderr
    default, kept = (int(line) for line in done.stdout.split())
    assert default > (COPIES - 1) * PAGES_PER_COPY
    assert kept < 2 * PAGES_PER_COPY


def test_the_environment_leaves_the_choice_to_the_operator(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert keep_freed_memory() is False


def test_a_size_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="positive"):
        keep_freed_memory(0)
