"""A published model version as a signed file: export at one party, import at another (or the
same party's new deployment) without the job that trained it.

The file is JSON: {"format", "party_id", "model": {the registry's view, "weights": [float,
...]}, "public_key": hex, "signature": hex}. The signature is Ed25519 over the canonical JSON
(sorted keys, no spaces) of everything but "signature", by the exporting serving service's key.
An importer verifies it, and takes the file only when the key is its own or one it was told
to trust (`import_trusted_keys`): anybody can sign a file, so a valid signature alone proves
integrity, not origin. Floats are written by Python's repr, which reads back to the same
float64, so an imported model scores bit for bit as the exported one.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Final

import numpy as np
from fedcrypto.signing import BadSignature, SigningKey, VerifyKey

from fedserving.registry import ModelVersion

EXPORT_FORMAT: Final = "fedmq.serving.model.v1"


class ExportRefused(ValueError):
    """A file that is not a model export, does not verify, or comes from an untrusted key."""


def load_key(secret_hex: str, key_file: str) -> SigningKey:
    """The configured key (64 hex digits), else the key file (created 0600 on first use)."""
    if secret_hex.strip():
        try:
            return SigningKey.from_bytes(bytes.fromhex(secret_hex.strip()))
        except ValueError as exc:
            raise ValueError(f"FEDMQ_SERVING_SIGNING_KEY is not 64 hex digits: {exc}") from None
    path = Path(key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(SigningKey.generate().to_bytes().hex())
    return SigningKey.from_bytes(bytes.fromhex(path.read_text().strip()))


def _canonical(document: dict[str, Any]) -> bytes:
    body = {k: v for k, v in document.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def export_model(model: ModelVersion, party_id: str, key: SigningKey) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "party_id": party_id,
        "model": {
            **model.view(),
            "weights": [float(w) for w in model.weights],
            **(
                {"artifact": base64.b64encode(model.artifact).decode()}
                if model.artifact is not None
                else {}
            ),
        },
        "public_key": key.verify_key().to_bytes().hex(),
    }
    document["signature"] = key.sign(_canonical(document)).hex()
    return document


def import_model(document: Any, trusted: set[str]) -> ModelVersion:
    """The model in a verified export whose key is in `trusted` (hex public keys)."""
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise ExportRefused(f"not a {EXPORT_FORMAT} export")
    try:
        public = str(document["public_key"]).lower()
        VerifyKey.from_bytes(bytes.fromhex(public)).verify(
            _canonical(document), bytes.fromhex(str(document["signature"]))
        )
    except (KeyError, ValueError, BadSignature) as exc:
        raise ExportRefused(f"the export's signature does not verify ({exc})") from None
    if public not in trusted:
        raise ExportRefused(
            f"the export is signed by key {public[:16]}..., which this party does not trust "
            "(FEDMQ_SERVING_IMPORT_TRUSTED_KEYS)"
        )
    m = document["model"]
    return ModelVersion(
        owner_party=str(m["owner_party"]),
        name=str(m["name"]),
        version=int(m["version"]),
        algorithm=str(m["algorithm"]),
        role=str(m["role"]),
        job_id=str(m["job_id"]),
        component=str(m["component"]),
        state=str(m["state"]),
        feature_names=tuple(str(n) for n in m["feature_names"]),
        weights=np.array([float(w) for w in m["weights"]], dtype=np.float64),
        hosts={str(k): str(v) for k, v in dict(m.get("hosts", {})).items()},
        created_at=str(m.get("created_at", "")),
        artifact=base64.b64decode(str(m["artifact"]), validate=True) if "artifact" in m else None,
    )
