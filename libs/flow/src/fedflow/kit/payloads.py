"""Ciphertexts and public keys as FederationData, and the checks every received one passes."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Final

import numpy as np
from fedcrypto import EncryptedVector, PublicKey, ShapeMismatchError
from fedschemas import FederationData

KEY_FORMAT: Final = "fedcrypto.paillier.public_key.v1"


def ciphertext_payload(vec: EncryptedVector) -> FederationData:
    """An encrypted vector as a (count, limbs) uint64 array; exponent and bound in meta."""
    return FederationData(
        kind="ciphertext_vector",
        array=vec.data,
        meta={"exponent": vec.exponent, "bound": format(vec.bound, "x")},
    )


def read_ciphertexts(
    payload: FederationData,
    key: PublicKey,
    what: str,
    executor: Executor | None,
    rows: int | None = None,
) -> EncryptedVector:
    """Check and wrap received ciphertexts: CiphertextError unless each is in (0, n^2);
    ShapeMismatchError unless there are `rows` of them (when given). `what` prefixes errors
    ("hetero_lr: host_gradient from 10000")."""
    if payload.array is None:
        raise ValueError(f"{what} carries no ciphertexts")
    if rows is not None and payload.array.shape[0] != rows:
        raise ShapeMismatchError(
            f"{what} has {payload.array.shape[0]} ciphertexts, expected {rows}"
        )
    exponent, bound = payload.meta.get("exponent"), payload.meta.get("bound")
    if not isinstance(exponent, int) or not isinstance(bound, str):
        raise ValueError(f"{what} has no exponent/bound")
    data = np.ascontiguousarray(payload.array, dtype="<u8")
    try:
        vec = EncryptedVector(key, data, exponent, (data.shape[0],), bound=int(bound, 16))
        vec.validate(executor=executor)
    except ValueError as exc:
        raise type(exc)(f"{what} refused: {exc}") from None
    return vec


def key_payload(key: PublicKey, **meta: int) -> FederationData:
    return FederationData(
        kind="public_key", blob=key.to_bytes(), blob_format=KEY_FORMAT, meta=dict(meta)
    )
