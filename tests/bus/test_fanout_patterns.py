"""Fan-out topic patterns: the AMQP topic-exchange rules that memory:// and pulsar:// apply
themselves (RabbitMQ applies them natively; the bus contract checks the adapters agree)."""

from __future__ import annotations

import re

import pytest
from fedbus.fanout import matches, normalize_patterns, pattern_regex
from fedbus.pulsar_bus import fanout_topics_regex

CASES = [
    # pattern, topic, matches?
    ("out.*", "out.9999", True),
    ("out.*", "out.9999.x", False),
    ("out.*", "out", False),
    ("svc.#", "svc", True),
    ("svc.#", "svc.worker", True),
    ("svc.#", "svc.worker.rpc", True),
    ("svc.#", "svcx.worker", False),
    ("#.rpc", "rpc", True),
    ("#.rpc", "svc.data.rpc", True),
    ("#.rpc", "svc.data.rpcx", False),
    ("a.#.z", "a.z", True),
    ("a.#.z", "a.b.c.z", True),
    ("a.#.z", "a.b.c", False),
    ("#", "anything.at.all", True),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    ("#.*", "a", True),
    ("control.job-1", "control.job-1", True),
    ("a.b", "a.b.c", False),
    ("a+b.c", "a+b.c", True),  # regex characters in a word are literal
    ("a+b.c", "aab.c", False),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), CASES)
def test_pattern_matches_like_a_rabbitmq_topic_exchange(
    pattern: str, topic: str, expected: bool
) -> None:
    assert matches([pattern], topic) is expected


def test_repeated_hashes_and_duplicate_patterns_are_normalised() -> None:
    assert normalize_patterns(["a.#.#.z", "a.#.z", "b"]) == ("a.#.z", "b")
    assert normalize_patterns("out.*") == ("out.*",)  # one string is one pattern
    assert matches(["a.#.#.z"], "a.z") and matches(["a.#.#.z"], "a.b.c.z")


@pytest.mark.parametrize("bad", ["", "out.", "out.p*", "a..b", "a.#x", "with space"])
def test_malformed_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        normalize_patterns([bad])


def test_pulsar_fanout_regex_leaves_out_dead_letter_reply_and_fanout_topics() -> None:
    prefix = "persistent://public/default/"
    regex = re.compile(fanout_topics_regex(prefix, ("out.*", "#")))

    assert regex.fullmatch(prefix + "out.9999")
    assert regex.fullmatch(prefix + "svc.worker")
    assert not regex.fullmatch(prefix + "out.9999-DLQ")
    assert not regex.fullmatch(prefix + "fedmq-reply-0123")
    assert not regex.fullmatch(prefix + "fedmq.fanout.audit")
    assert not regex.fullmatch("persistent://public/other/out.9999")


def test_pattern_regex_is_plain_enough_for_ecmascript() -> None:
    # Pulsar's C++ client compiles the regex with std::regex (ECMAScript): no Python-only
    # syntax such as lookbehind or named groups.
    for pattern, _topic, _expected in CASES:
        assert "(?<" not in pattern_regex(pattern) and "(?P" not in pattern_regex(pattern)
