"""The declared messages of the row-alignment check (fedflow.kit.alignment, whose docstring
gives the exchange), light: the pipeline validator, the audit service and the protocol guard
read them without numpy. A vertical model adds them to its protocol with `with_alignment`."""

from __future__ import annotations

import dataclasses
from typing import Final

from fedflow.protocol import NONE, MessageRule, Protocol

SALT_BYTES: Final = 32
DIGEST_BYTES: Final = 32
ALIGNMENT_DIMS: Final = {
    "aligned_tables": "tables whose row alignment is checked: data, and validate_data where "
    "the component takes one"
}

ALIGNMENT_RULES: Final = (
    MessageRule(
        tag="alignment_salt",
        sender="guest",
        receiver="host",
        kinds=("plain_control",),
        order=0,
        shape=f"({SALT_BYTES},)",
        dtypes=("uint8",),
        description="before the key exchange: a fresh random salt for the row-alignment "
        "digests; meta: the guest's row count of each checked table (rows.data, "
        "rows.validate_data)",
    ),
    MessageRule(
        tag="alignment_digest",
        sender="host",
        receiver="guest",
        kinds=("id_set",),
        order=0,
        shape=f"(aligned_tables, {DIGEST_BYTES})",
        dtypes=("uint8",),
        description="per checked table, HMAC-SHA-256(salt, the host's ids in row order, "
        "length-prefixed), or zeros where its row count differs from the guest's; meta: its "
        "row counts. The guest learns the counts and, where they are equal, whether the ids "
        "and their order are the guest's (one bit)",
    ),
    MessageRule(
        tag="alignment_verdict",
        sender="guest",
        receiver="host",
        kinds=("plain_control",),
        order=0,
        shape=NONE,
        description="whether the host's checked tables are aligned with the guest's "
        "(meta: misaligned, the host's misaligned tables, comma-separated) and whether every "
        "other host's are (others_aligned): any misalignment fails the job at every party",
    ),
)
"""The messages of check_alignment, for a component's protocol (with_alignment adds them)."""


def with_alignment(protocol: Protocol) -> Protocol:
    """`protocol` with the row-alignment messages (ALIGNMENT_RULES) and their dim declared."""
    return dataclasses.replace(
        protocol,
        messages=(*ALIGNMENT_RULES, *protocol.messages),
        dims={**protocol.dims, **ALIGNMENT_DIMS},
    )
