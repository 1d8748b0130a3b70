"""hetero_pearson's code (the package docstring gives the exchange and what each learns)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from fedcrypto import EncryptedVector, PublicKey, encrypted_dot
from fedschemas import FederationData
from numpy.typing import NDArray

from fedflow.artifacts import Artifact, ModelArtifact
from fedflow.components.hetero_pearson import HeteroPearsonParams
from fedflow.kit import payloads
from fedflow.kit.decrypt_check import decrypt_floats
from fedflow.kit.he import open_secrets
from fedflow.kit.resume import Resumable
from fedflow.kit.threads import crypto_threads
from fedflow.tables import Table, TableError

if TYPE_CHECKING:
    from fedflow.context import ComponentContext

NAME = "hetero_pearson"
Floats = NDArray[np.float64]
PRECISION = 2.0**-40
"""Fixed-point precision of the z-scores at both parties (|z| < sqrt(m)): the correlations
come out within about m * 2^-40 of the plaintext ones."""


CROSS_SLACK = 1e-6
"""Relative slack of cross_bound over Cauchy-Schwarz: fixed-point rounding (2^-40 per value,
summed over the rows) and the float error of each column's norm stay far below it."""


def cross_bound(rows: int) -> float:
    """The most |z_g . z_h| can be: each standardised column (ddof 0) has squared norm `rows`,
    so Cauchy-Schwarz bounds the dot product by `rows` (a constant column's z is 0). A cross
    product above it was not computed from standardised columns: the guest's decrypt check
    (fedflow.kit.decrypt_check) reports it to the guest's audit, and the guest refuses it."""
    return rows * (1.0 + CROSS_SLACK) + CROSS_SLACK


def standardized(table: Table, params: HeteroPearsonParams) -> tuple[list[str], Floats, list[str]]:
    """This party's columns, their z-scores (a constant column: 0) and the constant ones."""
    columns = params.columns or list(table.feature_names)
    absent = [c for c in columns if c not in table.feature_names]
    if absent:
        raise TableError(
            f"{NAME}: no column {absent[0]!r} in this party's table "
            f"(features: {', '.join(table.feature_names)})"
        )
    x = table.features[:, [table.feature_names.index(c) for c in columns]]
    holes = np.isnan(x).sum(axis=0)
    if holes.any():
        first = columns[int(np.flatnonzero(holes)[0])]
        raise TableError(
            f"{NAME}: column {first!r} has {int(holes.max())} missing values; Pearson "
            "correlation needs complete columns (fill them first: the imputation component)"
        )
    if x.shape[1] >= table.rows:
        raise ValueError(
            f"{NAME}: {x.shape[1]} columns for {table.rows} rows; with as many columns as rows "
            "the other party could solve the correlations for this party's values"
        )
    std = x.std(axis=0)
    constant = [c for c, s in zip(columns, std.tolist(), strict=True) if s == 0.0]
    z = np.where(std > 0, (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
    return columns, np.asarray(z, dtype=np.float64), constant


def local_model(columns: list[str], z: Floats, constant: list[str]) -> dict[str, Any]:
    rows = max(z.shape[0], 1)
    return {
        "document": {"kind": NAME, "columns": columns, "constant_columns": constant},
        "arrays": {"local": (z.T @ z) / rows},
    }


def guest(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(HeteroPearsonParams)
    table = ctx.input("data")
    columns, z, constant = standardized(table, params)
    model = local_model(columns, z, constant)
    k, m = len(columns), table.rows
    hosts = list(ctx.parties.get("host", []))
    if hosts:  # a guest alone has only its own correlations
        with crypto_threads(ctx) as (executor, _):
            key, _seed = open_secrets(
                ctx,
                "hetero_pearson.secrets",
                key_bits=params.key_bits,
                insecure_short_keys=params.insecure_short_keys,
            )
            ctx.federation.bind_dims(c=key.public_key.limbs, p=key.public_key.plain_limbs)
            ctx.federation.send(
                payloads.key_payload(key.public_key, columns=k, rows=m), to="host", tag="public_key"
            )
            saved = ctx.checkpoints.latest()
            resume = Resumable(
                ctx, dict, saved.state if saved is not None and "pending" in saved.state else None
            )
            for party in hosts:
                # Fresh ciphertexts per host (no ciphertext is sent twice in a job).
                resume.send_ciphertexts(
                    "encrypted_z",
                    0,
                    lambda: (
                        key.encrypt(
                            np.ascontiguousarray(z.T).ravel(),
                            precision=PRECISION,
                            executor=executor,
                        ),
                        {},
                    ),
                    to=party,
                    key=f"encrypted_z.{party}",
                )
            host_names: dict[str, list[str]] = {}
            for party in hosts:
                got = ctx.federation.recv(frm=party, tag="cross", iteration=0)
                if got.array is None or got.array.shape[0] % k:
                    raise ValueError(
                        f"{NAME}: the cross products of {party} do not fit {k} columns"
                    )
                vec = payloads.read_ciphertexts(
                    got, key.public_key, f"{NAME}: cross from {party}", executor
                )
                ctx.federation.authorize_decrypt("cross", 0, frm=party)
                cross = decrypt_floats(
                    ctx,
                    key,
                    vec,
                    peer=party,
                    tag="cross",
                    iteration=0,
                    low=-cross_bound(m),
                    high=cross_bound(m),
                    bound=f"|z_g . z_h| <= rows x (1 + {CROSS_SLACK:g}) ({m} rows)",
                    executor=executor,
                )
                if np.any(np.abs(cross) > cross_bound(m)):
                    raise ValueError(
                        f"{NAME}: the cross products of {party} exceed what {m} standardised "
                        "rows allow"
                    )
                matrix = cross.reshape(k, -1) / m
                model["arrays"][f"cross_{party}"] = matrix
                host_names[party] = [f"host_{party}_{i}" for i in range(matrix.shape[1])]
                ctx.metrics.log(f"max_abs_cross.{party}", float(np.abs(matrix).max(initial=0.0)))
                if params.share_with_host:
                    ctx.federation.send(
                        FederationData(kind="aggregate", array=np.ascontiguousarray(matrix)),
                        to=party,
                        tag="correlation",
                        iteration=0,
                    )
            model["document"]["host_columns"] = host_names
    ctx.metrics.log("rows", float(m))
    ctx.metrics.log("columns", float(k))
    return {"model": ModelArtifact(document=model["document"], arrays=model["arrays"])}


def _cross(y: EncryptedVector, z: Floats, k_guest: int, executor: Any) -> EncryptedVector:
    """[[Z_g^T Z_h]] row-major (guest column, host column) from [[Z_g]] column after column."""
    m = z.shape[0]
    parts = [
        encrypted_dot(z, y[j * m : (j + 1) * m], precision=PRECISION, executor=executor)
        for j in range(k_guest)
    ]
    exponent = min(p.exponent for p in parts)
    aligned = [p.decrease_exponent_to(exponent) if p.exponent != exponent else p for p in parts]
    data = np.vstack([p.data for p in aligned])
    bound = max(p.bound for p in aligned)
    return EncryptedVector(y.public_key, data, exponent, (data.shape[0],), bound=bound)


def host(ctx: ComponentContext) -> Mapping[str, Artifact]:
    params = ctx.params_as(HeteroPearsonParams)
    table = ctx.input("data")
    columns, z, constant = standardized(table, params)
    model = local_model(columns, z, constant)
    guest_party = ctx.parties["guest"][0]
    with crypto_threads(ctx) as (executor, _):
        got = ctx.federation.recv(frm=guest_party, tag="public_key")
        if got.blob is None:
            raise ValueError(f"{NAME}: the guest's public key message is empty")
        key = PublicKey.from_bytes(got.blob, insecure_allow_short=params.insecure_short_keys)
        if key.n_length < params.key_bits:
            raise ValueError(
                f"{NAME}: the guest's key has {key.n_length} bits, key_bits is {params.key_bits}"
            )
        ctx.federation.bind_dims(c=key.limbs, p=key.plain_limbs)
        k_guest, rows = int(got.meta.get("columns", 0)), int(got.meta.get("rows", -1))
        if rows != table.rows or k_guest < 1:
            raise ValueError(
                f"{NAME}: the guest has {rows} rows and {k_guest} columns, this party "
                f"{table.rows} rows (align them with psi first)"
            )
        y = payloads.read_ciphertexts(
            ctx.federation.recv(frm=guest_party, tag="encrypted_z", iteration=0),
            key,
            f"{NAME}: encrypted_z from {guest_party}",
            executor,
            rows * k_guest,
        )
        saved = ctx.checkpoints.latest()
        resume = Resumable(
            ctx, dict, saved.state if saved is not None and "pending" in saved.state else None
        )
        resume.send_ciphertexts(
            "cross",
            0,
            lambda: (_cross(y, z, k_guest, executor).obfuscate(executor=executor), {}),
            to=guest_party,
        )
        if params.share_with_host:
            answer = ctx.federation.recv(frm=guest_party, tag="correlation", iteration=0)
            if answer.array is None or answer.array.shape != (k_guest, len(columns)):
                raise ValueError(f"{NAME}: the correlations from the guest do not fit")
            model["arrays"]["cross"] = np.asarray(answer.array, dtype=np.float64)
            model["document"]["guest_columns"] = [f"guest_{i}" for i in range(k_guest)]
    ctx.metrics.log("rows", float(table.rows))
    ctx.metrics.log("columns", float(len(columns)))
    return {"model": ModelArtifact(document=model["document"], arrays=model["arrays"])}
