"""fedschemas: the wire contract of fedmq.

Envelope and payload models (pydantic, extra fields forbidden, versioned), the one registry of
message types, the canonical bytes a signature covers, msgpack wire codecs without pickle,
and a numpy array field type. docs/wire.md is the long form.
"""

from fedschemas.base import (
    PARTY_ROLES,
    ROLES,
    SCHEMA_VERSION,
    PartyRef,
    PartyRole,
    Payload,
    Role,
    Timestamp,
    WireModel,
)
from fedschemas.codec import decode_payload, encode_payload, new_envelope
from fedschemas.envelope import (
    ENVELOPE_FORMAT,
    MAX_ENVELOPE_BYTES,
    Envelope,
    canonical_bytes,
    chunk_message_id,
    decode_envelope,
    encode_envelope,
    make_message_id,
)
from fedschemas.errors import MalformedMessage
from fedschemas.ndarray import ALLOWED_DTYPES, MAX_ARRAY_BYTES, NDArray
from fedschemas.payloads import (
    FEDERATION_DATA_KINDS,
    ControlHeartbeat,
    DemoPing,
    DemoPong,
    FederationData,
    FederationDataKind,
)
from fedschemas.registry import MESSAGE_TYPES, UPGRADES, Upgrade, current_version, payload_type

__all__ = [
    "ALLOWED_DTYPES",
    "ENVELOPE_FORMAT",
    "FEDERATION_DATA_KINDS",
    "MAX_ARRAY_BYTES",
    "MAX_ENVELOPE_BYTES",
    "MESSAGE_TYPES",
    "PARTY_ROLES",
    "ROLES",
    "SCHEMA_VERSION",
    "UPGRADES",
    "ControlHeartbeat",
    "DemoPing",
    "DemoPong",
    "Envelope",
    "FederationData",
    "FederationDataKind",
    "MalformedMessage",
    "NDArray",
    "PartyRef",
    "PartyRole",
    "Payload",
    "Role",
    "Timestamp",
    "Upgrade",
    "WireModel",
    "canonical_bytes",
    "chunk_message_id",
    "current_version",
    "decode_envelope",
    "decode_payload",
    "encode_envelope",
    "encode_payload",
    "make_message_id",
    "new_envelope",
    "payload_type",
]
