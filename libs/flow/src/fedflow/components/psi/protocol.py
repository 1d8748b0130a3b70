"""psi's declared messages (light: no fedcrypto; the package docstring gives the exchange)."""

from __future__ import annotations

from typing import Final

from fedflow.protocol import UNBOUNDED_SEQ, MessageRule, Protocol, ProtocolRole, array_rule

POINT_SIZE: Final = 32
"""Bytes of one Curve25519 point (fedcrypto.psi.POINT_SIZE; the code checks they agree)."""


def _points_rule(
    tag: str, sender: ProtocolRole, receiver: ProtocolRole, order: int, what: str
) -> MessageRule:
    return array_rule(
        tag,
        sender,
        receiver,
        "id_set",
        order,
        f"(*, {POINT_SIZE})",
        what,
        dtype="uint8",
        max_seq=UNBOUNDED_SEQ,
    )


PSI_PROTOCOL = Protocol(
    component_type="psi",
    description="ECDH-PSI (DH-PSI over Curve25519), guest with each host",
    messages=(
        _points_rule("guest_blinded", "guest", "host", 1, "guest's ids hashed and blinded"),
        _points_rule("host_blinded", "host", "guest", 1, "host's ids hashed and blinded"),
        _points_rule("guest_reblinded", "guest", "host", 2, "host's blinded ids, blinded again"),
        _points_rule("host_reblinded", "host", "guest", 2, "guest's blinded ids, blinded again"),
        array_rule(
            "intersection_mask",
            "guest",
            "host",
            "id_set",
            3,
            "(*,)",
            "several hosts: which pairwise-intersection ids are in the final one",
            dtype="bool",
            max_seq=UNBOUNDED_SEQ,
        ),
    ),
)
