"""The threads a component may use, as the party's runtime options allow (ctx.runtime).

`crypto_threads(ctx)` gives (executor, background): the executor for homomorphic batch work
(ctx.executor, else a pool of `threads`, else None: the task's thread), and a pool of
`prefetch_threads` at CPU priority `prefetch_nice` for precomputation (None when 0). Both are
shut down when the block ends; queued precomputation is dropped, not finished.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def _at_priority(nice: int) -> None:
    """Thread initializer: CPU priority `nice` for this thread (Linux: nice is per thread), so
    precomputation only takes a core that the protocol's own work leaves idle; elsewhere the
    thread keeps the normal priority."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


@contextlib.contextmanager
def crypto_threads(ctx: ComponentContext) -> Iterator[tuple[Executor | None, Executor | None]]:
    options = ctx.runtime
    name = ctx.component_type.replace("_", "-")
    with contextlib.ExitStack() as stack:
        background: ThreadPoolExecutor | None = None
        if options.prefetch_threads > 0:
            background = ThreadPoolExecutor(
                options.prefetch_threads,
                thread_name_prefix=f"{name}-prefetch",
                initializer=_at_priority,
                initargs=(options.prefetch_nice,),
            )
            stack.callback(background.shutdown, wait=True, cancel_futures=True)
        executor: Executor | None = ctx.executor
        if executor is None and options.threads > 0:
            executor = stack.enter_context(
                ThreadPoolExecutor(options.threads, thread_name_prefix=name)
            )
        yield executor, background
