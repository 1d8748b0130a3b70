"""make_message_id: deterministic, distinct for any changed field, chunks add their index."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fedschemas import PartyRef, chunk_message_id, make_message_id

GUEST = PartyRef(party_id="9999", role="guest")
HOST = PartyRef(party_id="10000", role="host")
BASE: dict[str, Any] = {
    "job_id": "job-1",
    "component": "hetero_lr_0",
    "attempt": 0,
    "tag": "lr.gradient",
    "iteration": 4,
    "seq": 2,
    "source": GUEST,
    "destination": HOST,
}
CHANGES: dict[str, Any] = {
    "job_id": "job-2",
    "component": "hetero_lr_1",
    "attempt": 1,
    "tag": "lr.hessian",
    "iteration": 5,
    "seq": 3,
    "source": PartyRef(party_id="9999", role="arbiter"),
    "destination": PartyRef(party_id="10001", role="host"),
}


def test_same_inputs_give_the_same_id() -> None:
    first = make_message_id(**BASE)
    again = make_message_id(**dict(reversed(list(BASE.items()))))

    assert first == again
    assert re.fullmatch(r"[0-9a-f]{32}", first)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_changing_any_field_gives_a_new_id(field: str) -> None:
    changed = make_message_id(**{**BASE, field: CHANGES[field]})

    assert changed != make_message_id(**BASE)


def test_a_rerun_attempt_gets_new_ids_for_every_message() -> None:
    first_attempt = {make_message_id(**{**BASE, "seq": s}) for s in range(50)}
    second_attempt = {make_message_id(**{**BASE, "seq": s, "attempt": 1}) for s in range(50)}

    assert len(first_attempt) == len(second_attempt) == 50
    assert first_attempt.isdisjoint(second_attempt)


def test_moving_characters_between_fields_gives_a_new_id() -> None:
    # A separator-joined encoding would map both of these to "ab|c"-like strings.
    joined_left = make_message_id(**{**BASE, "job_id": "ab", "component": "c"})
    joined_right = make_message_id(**{**BASE, "job_id": "a", "component": "bc"})
    with_colon = make_message_id(**{**BASE, "job_id": "a:b", "component": "c"})
    colon_moved = make_message_id(**{**BASE, "job_id": "a", "component": "b:c"})

    assert len({joined_left, joined_right, with_colon, colon_moved}) == 4


def test_swapping_source_and_destination_gives_a_new_id() -> None:
    forward = make_message_id(**BASE)
    backward = make_message_id(**{**BASE, "source": HOST, "destination": GUEST})

    assert forward != backward


def test_not_iterative_minus_one_is_distinct_from_iteration_zero() -> None:
    assert make_message_id(**{**BASE, "iteration": -1}) != make_message_id(
        **{**BASE, "iteration": 0}
    )


def test_chunks_append_their_index_to_the_parent_id() -> None:
    parent = make_message_id(**BASE)

    chunks = [make_message_id(**BASE, chunk=i) for i in range(20)]

    assert chunks[0] == f"{parent}:c0"
    assert chunks[13] == chunk_message_id(parent, 13)
    assert len(set(chunks)) == 20
    assert parent not in chunks


@pytest.mark.parametrize("bad", [-1, True, 1.0])
def test_chunk_index_must_be_a_non_negative_int(bad: Any) -> None:
    with pytest.raises(ValueError, match="chunk index"):
        chunk_message_id("0" * 32, bad)


def test_non_int_numeric_fields_are_refused() -> None:
    with pytest.raises(TypeError, match="str or int"):
        make_message_id(**{**BASE, "seq": True})
