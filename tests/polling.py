"""The one polling helper of the test suite: wait until something becomes true, or fail saying what.

Tests that watch another thread, process or server cannot assert at once; they poll. Every such
wait goes through `wait_for` (or `wait_until` when the caller needs no value back), so that a
timeout always fails the test the same way: an AssertionError naming what was awaited, how long
the test waited, and the last value the check returned (or the exception it last raised), which
is usually what tells a reader why the wait failed. `poll` is the same loop without the failure,
for the few waits whose caller asserts afterwards with a better message of its own;
`wait_for_dead_letters` is the wait most bus tests share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from fedbus import HEADER_DEAD_REASON

if TYPE_CHECKING:
    from fedbus import Bus, Delivery

T = TypeVar("T")

_LAST_VALUE_CHARS = 300  # enough to show a status or a short list; a huge repr hides the message


class _Unset:
    def __repr__(self) -> str:
        return "<never returned>"


_UNSET = _Unset()


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > _LAST_VALUE_CHARS:
        text = text[:_LAST_VALUE_CHARS] + f"... ({len(text)} chars)"
    return text


def poll(
    check: Callable[[], T | None],
    timeout: float = 10.0,
    *,
    interval: float = 0.02,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T | object:
    """Call `check` every `interval` s until it returns something truthy or `timeout` s pass;
    return the last value (or the last exception of a `retry_on` type) without failing.

    For waits whose caller asserts afterwards with a richer message than a timeout could give
    (a log tail, a count to compare); everything else uses `wait_for`.
    """
    deadline = time.monotonic() + timeout
    last: object = _UNSET
    while True:
        try:
            value = check()
        except retry_on as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            return last
        time.sleep(interval)


def wait_for(
    check: Callable[[], T | None],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = 0.02,
    retry_on: tuple[type[BaseException], ...] = (),
    describe: Callable[[], object] | None = None,
) -> T:
    """Call `check` every `interval` s until it returns something truthy, and return that value.

    `check` runs at least once, even with a zero timeout. Exceptions of the types in `retry_on`
    count as "not yet" (a server still starting, a row not yet written); any other exception
    fails the test at once. After `timeout` s the test fails with an AssertionError naming
    `what`, the timeout and the last value `check` returned; `describe`, when given, is called
    then and its result is added, for waits whose check only says yes or no.
    """
    last = poll(check, timeout, interval=interval, retry_on=retry_on)
    if last and not isinstance(last, BaseException):
        return last  # type: ignore[return-value]
    message = f"timed out after {timeout} s waiting for {what}; last value seen: {_describe(last)}"
    if describe is not None:
        message += f"; state: {_describe(describe())}"
    raise AssertionError(message)


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    interval: float = 0.02,
    retry_on: tuple[type[BaseException], ...] = (),
    describe: Callable[[], object] | None = None,
) -> None:
    """`wait_for` for a check whose value the caller does not need."""
    wait_for(
        predicate,
        timeout,
        what,
        interval=interval,
        retry_on=retry_on,
        describe=describe,
    )


def wait_for_dead_letters(
    bus: Bus, topic: str, count: int, timeout: float = 10.0
) -> list[Delivery]:
    """The dead letters of `topic` once at least `count` came out (each `dead_letters` call
    takes what arrived since the last); fails naming the reasons seen so far otherwise."""
    found: list[Delivery] = []

    def enough() -> bool:
        found.extend(bus.dead_letters(topic))
        return len(found) >= count

    wait_until(
        enough,
        timeout,
        f"{count} dead letter(s) on {topic}",
        describe=lambda: [d.headers.get(HEADER_DEAD_REASON) for d in found],
    )
    return found
