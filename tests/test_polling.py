"""The shared polling helper: it returns what it awaited, or fails naming it and the last value."""

from __future__ import annotations

import itertools
from typing import Any, cast

import pytest
from fedbus import HEADER_DEAD_REASON, Delivery

from tests.polling import poll, wait_for, wait_for_dead_letters, wait_until


def test_wait_for_returns_the_first_truthy_value_of_the_check() -> None:
    # Prepare: a check that is empty twice, then answers.
    answers = iter([[], [], ["row"]])

    # Execute
    value = wait_for(lambda: next(answers), timeout=5, interval=0)

    # Assert
    assert value == ["row"]


def test_a_timeout_names_what_was_awaited_and_the_last_value_seen() -> None:
    # Prepare: a list of finished tasks that stays empty, then a count that stays at zero.
    counter = itertools.count()

    # Execute
    with pytest.raises(AssertionError) as failure:
        wait_for(lambda: [] if next(counter) >= 0 else ["never"], 0.05, "job done")
    message = str(failure.value)

    # Assert
    assert "job done" in message
    assert "0.05 s" in message
    assert "last value seen: []" in message


def test_the_last_value_and_the_described_state_appear_in_the_failure() -> None:
    # Prepare: a predicate that is False, with a state the reader would want to see.
    statuses = iter(["queued", "running", "running", "running"] + ["failed"] * 1000)

    # Execute
    with pytest.raises(AssertionError) as failure:
        wait_until(
            lambda: next(statuses) == "succeeded",
            0.05,
            "the job to succeed",
            describe=lambda: {"job": "j1", "status": "failed"},
        )

    # Assert
    assert "the job to succeed" in str(failure.value)
    assert "last value seen: False" in str(failure.value)
    assert "'status': 'failed'" in str(failure.value)


def test_exceptions_listed_in_retry_on_count_as_not_yet_and_are_reported_on_timeout() -> None:
    # Prepare: a server that refuses twice, then answers.
    attempts = iter([False, False, True])

    def probe() -> str:
        if not next(attempts):
            raise ConnectionError("refused")
        return "up"

    # Execute / Assert: retried to success...
    assert wait_for(probe, 5, "the server", interval=0, retry_on=(ConnectionError,)) == "up"

    # ...and on timeout the last exception is the last value seen.
    def never() -> str:
        raise ConnectionError("still refused")

    with pytest.raises(AssertionError, match="still refused"):
        wait_for(never, 0.05, "the server", retry_on=(ConnectionError,))


def test_an_exception_not_listed_in_retry_on_fails_at_once() -> None:
    def broken() -> bool:
        raise KeyError("no such job")

    with pytest.raises(KeyError):
        wait_until(broken, 30, "never reached")


class _EmptyButLoud:
    """Falsy, with a very long repr: what a big empty result object looks like to the helper."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "x" * 10_000


def test_a_huge_last_value_is_shortened_in_the_message() -> None:
    with pytest.raises(AssertionError) as failure:
        wait_for(_EmptyButLoud, 0.01, "text")
    assert "last value seen: xxx" in str(failure.value)
    assert len(str(failure.value)) < 1_000


def test_poll_returns_the_last_value_instead_of_failing_when_time_runs_out() -> None:
    # Prepare: a count that grows to 3 but is waited on for 5.
    counts = iter([1, 2, 3] + [3] * 10_000)
    seen: list[int] = []

    def enough() -> bool:
        seen.append(next(counts))
        return seen[-1] >= 5

    # Execute
    last = poll(enough, 0.05, interval=0.001)

    # Assert: no failure; the caller gets the last answer and asserts on its own terms.
    assert last is False
    assert seen[-1] == 3


class _DeadLetterQueue:
    """What wait_for_dead_letters reads of a bus: each call drains what arrived since the last."""

    def __init__(self, batches: list[list[Delivery]]) -> None:
        self.batches = batches

    def dead_letters(self, topic: str) -> list[Delivery]:
        return self.batches.pop(0) if self.batches else []


def _dead(message_id: str, reason: str) -> Delivery:
    return Delivery(
        topic="svc",
        body=b"",
        message_id=message_id,
        headers={HEADER_DEAD_REASON: reason},
        delivery_count=1,
    )


def test_dead_letters_arriving_over_several_reads_are_all_returned() -> None:
    queue = _DeadLetterQueue([[], [_dead("m1", "bad")], [], [_dead("m2", "worse")]])

    found = wait_for_dead_letters(cast(Any, queue), "svc", 2, timeout=5)

    assert [d.message_id for d in found] == ["m1", "m2"]


def test_too_few_dead_letters_fail_naming_the_reasons_seen() -> None:
    queue = _DeadLetterQueue([[_dead("m1", "addressed to party 777")]])

    with pytest.raises(AssertionError, match=r"2 dead letter.*addressed to party 777"):
        wait_for_dead_letters(cast(Any, queue), "svc", 2, timeout=0.05)
