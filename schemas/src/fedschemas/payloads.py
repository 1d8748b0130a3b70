"""Payload models: what travels inside an envelope, one model per message type and version.

Every model subclasses `Payload` (extra fields forbidden, frozen, strict types) and is listed
once in `registry.py`. Rules for changing them are in docs/wire.md: within a version only add
optional fields defaulting to None; a breaking change is a new model with a higher
`payload_version` plus a pure upgrade function from the old one.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from fedschemas.base import PartyId, Payload, Timestamp
from fedschemas.ndarray import NDArray

# A declared, versioned format for opaque bytes, e.g. "fedcrypto.paillier.v1": the receiver
# picks its parser by this name and refuses names it does not know.
BLOB_FORMAT_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*\.v[0-9]+$"

MetaValue = str | int | float | bool


class DemoPing(Payload):
    """demo.ping: the standalone two-party exchange's request."""

    text: str
    n: int


class DemoPong(Payload):
    """demo.pong: the answer to demo.ping."""

    text: str
    n: int


FederationDataKind = Literal[
    "ciphertext_vector",
    "masked_vector",
    "public_key",
    "aggregate",
    "id_set",
    "metric",
    "plain_control",
]


class FederationData(Payload):
    """federation.data: one value a component sends to another party by tag and iteration.

    `array` carries numeric data (masked vectors, aggregates, limb arrays); `blob` carries
    opaque bytes whose layout `blob_format` names (ciphertext vectors, public keys); `meta`
    holds small scalars (counts, exponents, metric values). `kind` is what audit checks
    against the component's declared protocol.
    """

    kind: FederationDataKind
    array: NDArray | None = None
    blob: bytes | None = None
    blob_format: str | None = Field(default=None, pattern=BLOB_FORMAT_PATTERN)
    meta: dict[str, MetaValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _blob_has_format(self) -> Self:
        if (self.blob is None) != (self.blob_format is None):
            raise ValueError("blob and blob_format must be given together")
        return self


class ControlHeartbeat(Payload):
    """control.heartbeat: a party says it is alive at `at`."""

    party_id: PartyId
    at: Timestamp
