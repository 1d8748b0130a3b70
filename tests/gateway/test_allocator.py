"""fedgateway.allocator: freed large buffers are reused instead of mapped afresh (docs/wan.md)."""

import os
import subprocess
import sys

import pytest
from fedgateway.allocator import keep_freed_memory

PAGES_PER_COPY = (32 << 20) // 4096

# Eight copies of a 32 MiB body, each freed before the next; prints the minor page faults.
_COPIES = """
import os, resource, sys
from fedgateway.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
body = os.urandom(32 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    copy = bytes(memoryview(body)[1:])
    del copy
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", _COPIES, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_memory_spares_a_page_fault_per_page_of_each_copy():
    # Each process of its own: the thresholds are per process and this one is left alone
    default = _faults("default")
    kept = _faults("keep")

    # Before: every copy maps fresh pages; after: only the first copy does
    assert default > 6 * PAGES_PER_COPY
    assert kept < 2 * PAGES_PER_COPY


def test_the_environment_leaves_the_choice_to_the_operator(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert keep_freed_memory() is False


def test_a_size_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="positive"):
        keep_freed_memory(0)
