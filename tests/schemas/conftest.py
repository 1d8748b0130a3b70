"""Fixtures for the wire-contract tests: a fully populated envelope and a factory for variants."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fedschemas import DemoPing, Envelope, PartyRef, encode_payload

GUEST = PartyRef(party_id="9999", role="guest")
HOST = PartyRef(party_id="10000", role="host")
CREATED = datetime(2026, 11, 22, 7, 47, 45, 123456, tzinfo=UTC)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def envelope_fields(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for an Envelope with every field set (signature included)."""
    fields: dict[str, Any] = {
        "message_id": "0123456789abcdef0123456789abcdef",
        "schema_version": 1,
        "type": "demo.ping",
        "job_id": "job-202611220747",
        "task_id": "job-202611220747:lr_0",
        "attempt": 2,
        "source": GUEST,
        "destination": HOST,
        "tag": "lr.gradient",
        "iteration": 7,
        "seq": 3,
        "created_at": CREATED,
        "traceparent": TRACEPARENT,
        "signature": bytes(range(64)),
        "signer_key_id": "9999-k1",
        "payload": encode_payload(DemoPing(text="hello", n=1)),
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def envelope_kwargs() -> Callable[..., dict[str, Any]]:
    """Factory: Envelope keyword arguments with every field set, `overrides` applied."""
    return envelope_fields


@pytest.fixture
def make_envelope() -> Callable[..., Envelope]:
    def make(**overrides: Any) -> Envelope:
        return Envelope(**envelope_fields(**overrides))

    return make
