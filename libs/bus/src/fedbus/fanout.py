"""Fan-out subscriptions: names, topic patterns and how a pattern matches a topic.

A fan-out subscription is a durable queue of its own, named `fanout_queue(name)`, that gets a
copy of every message published on a topic matching one of its patterns. Patterns use the AMQP
topic-exchange syntax so that RabbitMQ can match them itself: a topic is words separated by
".", `*` stands for exactly one word and `#` for zero or more words ("out.*" matches "out.9999"
but not "out.9999.x"; "svc.#" matches "svc", "svc.worker" and "svc.worker.x"). memory:// and
pulsar:// match with `pattern_regex`, which gives the same answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

FANOUT_QUEUE_PREFIX = "fedmq.fanout."
"""Queues of fan-out subscriptions; topics may not start with it (`check_topic`)."""

_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_WORD = re.compile(r"[^.*#\s]+")


def fanout_queue(name: str) -> str:
    """The queue (and dead-letter queue stem) of the fan-out subscription `name`."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"fan-out subscription name {name!r}: use letters, digits, '_', '-' and '.'"
        )
    return FANOUT_QUEUE_PREFIX + name


def check_topic(topic: str) -> None:
    """Refuse topic names that would collide with a fan-out subscription's queue."""
    if topic.startswith(FANOUT_QUEUE_PREFIX):
        raise ValueError(f"topic names starting with {FANOUT_QUEUE_PREFIX!r} are reserved")


def normalize_patterns(patterns: str | Iterable[str]) -> tuple[str, ...]:
    """The patterns, checked, in order, without repeats; a single string is one pattern."""
    given = [patterns] if isinstance(patterns, str) else list(patterns)
    if not given:
        raise ValueError("a fan-out subscription needs at least one topic pattern")
    out: list[str] = []
    for pattern in given:
        words = pattern.split(".")
        if not all(w in ("*", "#") or _WORD.fullmatch(w) for w in words):
            raise ValueError(
                f"topic pattern {pattern!r}: words separated by '.', where '*' and '#' "
                "stand alone as a word"
            )
        # "#.#" matches what "#" matches; RabbitMQ treats them alike, and one "#" keeps the
        # regular expression below simple.
        collapsed = [w for i, w in enumerate(words) if not (w == "#" and i and words[i - 1] == "#")]
        normal = ".".join(collapsed)
        if normal not in out:
            out.append(normal)
    return tuple(out)


@lru_cache(maxsize=256)
def pattern_regex(pattern: str) -> str:
    """A regular expression (Python and ECMAScript alike) matching exactly the topics that the
    AMQP topic pattern `pattern` matches; use it with a full match."""
    words = pattern.split(".")
    if words == ["#"]:
        return r"[^.]+(?:\.[^.]+)*"
    parts: list[str] = []
    for i, word in enumerate(words):
        if word == "#":
            # Leading "#" eats whole words with their dot after them; elsewhere, with the dot
            # before them, so that matching zero words leaves the neighbours' dots right.
            parts.append(r"(?:[^.]+\.)*" if i == 0 else r"(?:\.[^.]+)*")
            continue
        piece = r"[^.]+" if word == "*" else re.escape(word)
        after_leading_hash = i == 1 and words[0] == "#"
        parts.append(piece if i == 0 or after_leading_hash else r"\." + piece)
    return "".join(parts)


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern_regex(pattern))


def matches(patterns: Iterable[str], topic: str) -> bool:
    """Whether any of `patterns` matches `topic`."""
    return any(_compiled(p).fullmatch(topic) is not None for p in patterns)
