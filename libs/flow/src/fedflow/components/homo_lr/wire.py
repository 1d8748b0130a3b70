"""fedcrypto.secagg's messages as FederationData, and back (checked: a malformed blob raises
SecAggError naming what is wrong).

Byte layouts (all integers big-endian):
  secagg.x25519_pair.v1  c_public (32) || s_public (32)
  secagg.directory.v1    repeated: client id (u32) || c_public (32) || s_public (32)
  secagg.shares.v1       repeated: peer id (u32) || length (u32) || ciphertext (length bytes)
                         (sa_shares: peer = recipient; sa_routed: peer = sender)
  secagg.unmask.v1       count (u32), then count x (owner id (u32) || share (33)) of self-mask
                         seeds; then the same for mask keys
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np
from fedcrypto.secagg import (
    KEY_SIZE,
    AdvertiseKeys,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    RoutedShares,
    SecAggError,
    UnmaskRequest,
    UnmaskResponse,
)
from fedcrypto.shamir import SHARE_VALUE_SIZE
from fedschemas import FederationData
from numpy.typing import NDArray

from fedflow.components.homo_lr.protocol import (
    DIRECTORY_FORMAT,
    KEYS_FORMAT,
    SHARES_FORMAT,
    UNMASK_FORMAT,
)

_U32 = struct.Struct(">I")
_ENTRY = 4 + 2 * KEY_SIZE
_SHARE_ENTRY = 4 + SHARE_VALUE_SIZE
MAX_CIPHERTEXT = 4096


def _blob(payload: FederationData, expected: str) -> bytes:
    if payload.blob is None or payload.blob_format != expected:
        raise SecAggError(f"expected a {expected} blob, got {payload.blob_format!r}")
    return payload.blob


def control(**meta: str | int | bool) -> FederationData:
    return FederationData(kind="plain_control", meta=dict(meta))


def plain_update_payload(vector: NDArray[np.float64]) -> FederationData:
    """A client's contribution in the clear (aggregation other than fedavg: plain_update)."""
    return FederationData(kind="aggregate", array=np.asarray(vector, dtype=np.float64))


def keys_payload(msg: AdvertiseKeys) -> FederationData:
    return FederationData(
        kind="public_key", blob=msg.c_public + msg.s_public, blob_format=KEYS_FORMAT
    )


def read_keys(client_id: int, payload: FederationData) -> AdvertiseKeys:
    raw = _blob(payload, KEYS_FORMAT)
    if len(raw) != 2 * KEY_SIZE:
        raise SecAggError(f"keys of client {client_id}: {len(raw)} bytes, need {2 * KEY_SIZE}")
    return AdvertiseKeys(client_id, raw[:KEY_SIZE], raw[KEY_SIZE:])


def directory_payload(directory: KeyDirectory) -> FederationData:
    blob = b"".join(_U32.pack(u) + c + s for u, (c, s) in sorted(directory.keys.items()))
    return FederationData(kind="public_key", blob=blob, blob_format=DIRECTORY_FORMAT)


def read_directory(payload: FederationData) -> KeyDirectory:
    raw = _blob(payload, DIRECTORY_FORMAT)
    if len(raw) % _ENTRY:
        raise SecAggError(f"key directory of {len(raw)} bytes is not whole entries")
    keys: dict[int, tuple[bytes, bytes]] = {}
    for at in range(0, len(raw), _ENTRY):
        (u,) = _U32.unpack_from(raw, at)
        if u in keys:
            raise SecAggError(f"key directory lists client {u} twice")
        keys[u] = (raw[at + 4 : at + 4 + KEY_SIZE], raw[at + 4 + KEY_SIZE : at + _ENTRY])
    return KeyDirectory(keys)


def _pack_ciphertexts(ciphertexts: Mapping[int, bytes]) -> bytes:
    return b"".join(_U32.pack(v) + _U32.pack(len(c)) + c for v, c in sorted(ciphertexts.items()))


def _unpack_ciphertexts(raw: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    at = 0
    while at < len(raw):
        if at + 8 > len(raw):
            raise SecAggError("share list truncated")
        (v,) = _U32.unpack_from(raw, at)
        (length,) = _U32.unpack_from(raw, at + 4)
        if length > MAX_CIPHERTEXT or at + 8 + length > len(raw) or v in out:
            raise SecAggError(f"share list entry for client {v} is malformed")
        out[v] = raw[at + 8 : at + 8 + length]
        at += 8 + length
    return out


def shares_payload(msg: EncryptedShares | RoutedShares) -> FederationData:
    return FederationData(
        kind="ciphertext_vector",
        blob=_pack_ciphertexts(msg.ciphertexts),
        blob_format=SHARES_FORMAT,
    )


def read_shares(client_id: int, payload: FederationData) -> EncryptedShares:
    return EncryptedShares(client_id, _unpack_ciphertexts(_blob(payload, SHARES_FORMAT)))


def read_routed(client_id: int, payload: FederationData) -> RoutedShares:
    return RoutedShares(client_id, _unpack_ciphertexts(_blob(payload, SHARES_FORMAT)))


def masked_payload(msg: MaskedInput) -> FederationData:
    return FederationData(kind="masked_vector", array=np.asarray(msg.masked, dtype=np.uint64))


def read_masked(client_id: int, payload: FederationData) -> MaskedInput:
    if payload.array is None:
        raise SecAggError(f"masked input of client {client_id} has no array")
    return MaskedInput(client_id, np.asarray(payload.array))


def _ids(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def unmask_request_payload(request: UnmaskRequest) -> FederationData:
    return control(
        survivors=",".join(map(str, request.survivors)),
        dropped=",".join(map(str, request.dropped)),
    )


def read_unmask_request(payload: FederationData) -> UnmaskRequest:
    try:
        return UnmaskRequest(
            _ids(str(payload.meta["survivors"])), _ids(str(payload.meta["dropped"]))
        )
    except (KeyError, ValueError) as exc:
        raise SecAggError(f"malformed unmasking request: {exc}") from None


def _pack_shares(shares: Mapping[int, bytes]) -> bytes:
    return _U32.pack(len(shares)) + b"".join(_U32.pack(v) + s for v, s in sorted(shares.items()))


def unmask_payload(msg: UnmaskResponse) -> FederationData:
    blob = _pack_shares(msg.self_mask_shares) + _pack_shares(msg.mask_key_shares)
    return FederationData(kind="masked_vector", blob=blob, blob_format=UNMASK_FORMAT)


def read_unmask(client_id: int, payload: FederationData) -> UnmaskResponse:
    raw = _blob(payload, UNMASK_FORMAT)
    tables: list[dict[int, bytes]] = []
    at = 0
    for _ in range(2):
        if at + 4 > len(raw):
            raise SecAggError(f"unmasking response of client {client_id} is truncated")
        (count,) = _U32.unpack_from(raw, at)
        at += 4
        end = at + count * _SHARE_ENTRY
        if end > len(raw):
            raise SecAggError(f"unmasking response of client {client_id} is truncated")
        table: dict[int, bytes] = {}
        for pos in range(at, end, _SHARE_ENTRY):
            (v,) = _U32.unpack_from(raw, pos)
            table[v] = raw[pos + 4 : pos + _SHARE_ENTRY]
        tables.append(table)
        at = end
    if at != len(raw):
        raise SecAggError(f"unmasking response of client {client_id} has trailing bytes")
    return UnmaskResponse(client_id, tables[0], tables[1])
