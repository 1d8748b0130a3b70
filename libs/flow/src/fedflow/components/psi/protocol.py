"""psi's declared messages (light: no fedcrypto; the package docstring gives the exchange)."""

from __future__ import annotations

from typing import Final

from fedflow.protocol import UNBOUNDED_SEQ, MessageRule, Protocol

POINT_SIZE: Final = 32
"""Bytes of one Curve25519 point (fedcrypto.psi.POINT_SIZE; the code checks they agree)."""


def _points_rule(tag: str, sender: str, receiver: str, order: int, what: str) -> MessageRule:
    return MessageRule(
        tag=tag,
        sender=sender,  # type: ignore[arg-type]
        receiver=receiver,  # type: ignore[arg-type]
        kinds=("id_set",),
        order=order,
        shape=f"(*, {POINT_SIZE})",
        dtypes=("uint8",),
        max_seq=UNBOUNDED_SEQ,
        description=what,
    )


PSI_PROTOCOL = Protocol(
    component_type="psi",
    description="ECDH-PSI (DH-PSI over Curve25519), guest with each host",
    messages=(
        _points_rule("guest_blinded", "guest", "host", 1, "guest's ids hashed and blinded"),
        _points_rule("host_blinded", "host", "guest", 1, "host's ids hashed and blinded"),
        _points_rule("guest_reblinded", "guest", "host", 2, "host's blinded ids, blinded again"),
        _points_rule("host_reblinded", "host", "guest", 2, "guest's blinded ids, blinded again"),
        MessageRule(
            tag="intersection_mask",
            sender="guest",
            receiver="host",
            kinds=("id_set",),
            order=3,
            shape="(*,)",
            dtypes=("bool",),
            max_seq=UNBOUNDED_SEQ,
            description="several hosts: which pairwise-intersection ids are in the final one",
        ),
    ),
)
