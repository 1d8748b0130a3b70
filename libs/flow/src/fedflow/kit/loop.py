"""The iteration loop of a component: cancellation checked before, progress reported after.

    for t in iterations(ctx, start, total, stopped=lambda: state.stopped):
        ...                      # one iteration, ending with its checkpoint
Progress (t + 1) / total is reported only once the body returns, i.e. after the iteration's
checkpoint: what a progress report says is done is durable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedflow.context import ComponentContext


def iterations(
    ctx: ComponentContext, start: int, total: int, stopped: Callable[[], bool] = lambda: False
) -> Iterator[int]:
    """Iterations start..total-1, until `stopped()` (checked before each one)."""
    t = start
    while t < total and not stopped():
        ctx.check_canceled()
        yield t
        ctx.report_progress((t + 1) / total)
        t += 1


@contextmanager
def timed(ctx: ComponentContext, metric: str) -> Iterator[None]:
    """Log the seconds the block took as the task's metric `metric`."""
    began = time.perf_counter()
    yield
    ctx.metrics.log(metric, time.perf_counter() - began)
