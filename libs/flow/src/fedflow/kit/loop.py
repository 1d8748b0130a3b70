"""The iteration loop of a component: cancellation checked before, progress reported after;
and the loss watch that stops a diverging model before its numbers overflow.

    for t in iterations(ctx, start, total, stopped=lambda: state.stopped):
        ...                      # one iteration, ending with its checkpoint
Progress (t + 1) / total is reported only once the body returns, i.e. after the iteration's
checkpoint: what a progress report says is done is durable.

    watch = LossWatch.restore(extra.get("watch"), "hetero_lr", advice, tol=..., early_stop=...)
    watch.batch(mean_loss, epoch=e, iteration=t)   # every iteration: TrainingDiverged if it blew up
    stop = watch.epoch(mean_loss, epoch=e)          # every epoch: early stopping
    extra["watch"] = watch.state()                  # into the checkpoint

Divergence is checked every iteration, not only every epoch: a model trained on unscaled
features grows its scores by orders of magnitude per step, and within one epoch reaches values
that overflow a float (or the fixed-point encoding under Paillier).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

DIVERGENCE_FACTOR: Final = 100.0
"""A model diverges when its mean loss per row exceeds this many times the loss it started
from (its initial weights'), or is not finite. Weights start at zero, so the start is the loss
of "no information" (hetero_lr: log 2); SGD that works stays near or below it."""
MIN_START_LOSS: Final = 1.0
"""The bound is at least DIVERGENCE_FACTOR times this (a start loss near 0, e.g. a regression
label near 0 everywhere, must not make every step look like divergence)."""


class TrainingDiverged(ArithmeticError):
    """The model's loss blew up; the message says which epoch and what to change."""


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


@dataclass
class LossWatch:
    """Divergence and early stopping from a model's mean loss per row.

    `advice` completes the divergence error: what the user should change, in the pipeline's
    parameter names (e.g. "add a feature_scale component before hetero_lr, or lower
    learning_rate (now 0.15)")."""

    component: str
    advice: str
    tol: float
    early_stop: bool
    start: float | None = None
    """The mean loss of the first batch (the initial weights); the bound is a multiple of it."""
    last: float | None = None
    """The previous epoch's mean loss."""

    @classmethod
    def restore(
        cls,
        saved: Mapping[str, Any] | None,
        component: str,
        advice: str,
        *,
        tol: float,
        early_stop: bool,
    ) -> LossWatch:
        """A watch from its `state()` in a checkpoint (None: a fresh one)."""
        watch = cls(component, advice, tol, early_stop)
        if saved:
            start, last = saved.get("start"), saved.get("last")
            watch.start = None if start is None else float(start)
            watch.last = None if last is None else float(last)
        return watch

    def state(self) -> dict[str, float | None]:
        return {"start": self.start, "last": self.last}

    @property
    def bound(self) -> float:
        return DIVERGENCE_FACTOR * max(self.start or 0.0, MIN_START_LOSS)

    def batch(self, mean_loss: float, *, epoch: int, iteration: int) -> None:
        """Check one iteration's mean loss per row; TrainingDiverged past the bound."""
        if self.start is None and math.isfinite(mean_loss):
            self.start = mean_loss
        self._check(mean_loss, f"epoch {epoch}, iteration {iteration}")

    def epoch(self, mean_loss: float, *, epoch: int) -> bool:
        """Check an epoch's mean loss per row; whether to stop early: only when the loss
        improved, by less than `tol` (a loss that got worse never stops training early)."""
        self._check(mean_loss, f"epoch {epoch}")
        improvement = None if self.last is None else self.last - mean_loss
        self.last = mean_loss
        return bool(self.early_stop and improvement is not None and 0.0 <= improvement < self.tol)

    def _check(self, mean_loss: float, where: str) -> None:
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"{self.component} diverged at {where}: the loss is {mean_loss} (not finite); "
                f"{self.advice}"
            )
        if mean_loss > self.bound:
            raise TrainingDiverged(
                f"{self.component} diverged at {where}: the mean loss per row is "
                f"{mean_loss:.4g}, more than {DIVERGENCE_FACTOR:g} times the "
                f"{self.start if self.start is not None else float('nan'):.4g} it started "
                f"from; {self.advice}"
            )
