"""What the audit keeps of a message besides its envelope fields: small, JSON-able facts that
let the rules run again over the recorded log (post-hoc audit) without the payload.

Never payload plaintext and never keys: an array's kind, shape and dtype but not its values, a
public key's width and SHA-256 fingerprint but not the key, ciphertext counts. A job proposal
keeps its pipeline (parties, component types, parameters: what the parties agreed to run, no
data); a task.run its component type, role and parties; a job.accept the accepting party's
grants that cover the job.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fedschemas import MESSAGE_TYPES, Envelope, FederationData, Payload
from fedschemas.audit_payloads import ColumnStats, DecryptCheck
from fedschemas.payloads import (
    JobAccept,
    JobPropose,
    JobStatus,
    JobTaskReport,
    TaskRun,
    TaskStatus,
)
from fedschemas.registry import SUPERSEDED
from fedschemas.serving_payloads import ServingEvent

_TYPE_OF = {model: name for name, model in MESSAGE_TYPES.items()}


def kind_of(record: dict[str, Any]) -> str:
    """A record's message type as the rules read it: a superseded type (job.status, which the
    schedulers still send by default) as the type its meaning has now (job.end, ...)."""
    return str(record["facts"].get("successor") or record["type"])


PAILLIER_KEY_FORMAT = "fedcrypto.paillier.public_key.v1"


def is_paillier_key(facts: dict[str, Any]) -> bool:
    """Whether a message's facts are those of a Paillier public key: kind public_key with the
    Paillier blob format (or none given). Secure aggregation's key agreement keys (homo_lr,
    homo_nn: their own blob formats) are public_key messages too, but not Paillier keys: the
    width and readability rules do not apply to them, and data.form checks their format."""
    return facts.get("kind") == "public_key" and facts.get("blob_format") in (
        None,
        PAILLIER_KEY_FORMAT,
    )


def component_of(envelope: Envelope) -> str:
    """The component a message belongs to: task ids read "<job>/<component>/<party>/<role>"."""
    parts = envelope.task_id.split("/")
    return parts[1] if len(parts) >= 2 else ""


def key_modulus(blob: bytes) -> int:
    """n of a serialized Paillier public key, whatever its width (ValueError if unreadable)."""
    from fedcrypto.paillier.keys import PublicKey

    return int(PublicKey.from_bytes(blob, insecure_allow_short=True).n)


def facts_of(envelope: Envelope, payload: Payload | None) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    if isinstance(payload, JobStatus):
        successor = SUPERSEDED[envelope.type](payload)
        facts["successor"] = _TYPE_OF[type(successor)]
        payload = successor
    if isinstance(payload, FederationData):
        facts["kind"] = payload.kind
        if payload.array is not None:
            facts["shape"] = list(payload.array.shape)
            facts["dtype"] = payload.array.dtype.name
        if payload.blob_format is not None:
            facts["blob_format"] = payload.blob_format
        if payload.kind == "public_key" and payload.blob is not None:
            facts["key_fp"] = hashlib.sha256(payload.blob).hexdigest()
        if is_paillier_key(facts) and payload.blob is not None:
            try:
                facts["key_bits"] = key_modulus(payload.blob).bit_length()
            except ValueError:
                facts["key_bits"] = 0
    elif isinstance(payload, JobPropose):
        facts.update(initiator=payload.initiator, pipeline_yaml=payload.pipeline_yaml)
    elif isinstance(payload, JobAccept) and payload.grants is not None:
        # The accepting party's grants that cover the job (ids, tables, types): "grants used".
        facts["grants"] = [grant.model_dump(mode="json") for grant in payload.grants]
    elif isinstance(payload, TaskRun):
        facts.update(
            component=payload.component,
            component_type=payload.component_type,
            attempt=payload.attempt,
            role=payload.role,
            party_id=payload.party_id,
            parties={role: list(ids) for role, ids in sorted(payload.parties.items())},
            pipeline_yaml=payload.pipeline_yaml,
        )
    elif isinstance(payload, TaskStatus):
        facts.update(
            component=payload.component,
            attempt=payload.attempt,
            party_id=payload.party_id,
            state=payload.state,
        )
        if payload.code_sha256 is not None:
            facts["code_sha256"] = payload.code_sha256
        if payload.component_version is not None:
            facts["component_version"] = payload.component_version
    elif isinstance(payload, JobTaskReport):
        facts.update(
            component=payload.component,
            attempt=payload.attempt,
            party_id=payload.party_id,
            state=payload.task_state,
        )
    elif isinstance(payload, DecryptCheck):
        # Counts and the bound in words: never a decrypted value.
        facts.update(
            peer=payload.peer,
            checked_tag=payload.tag,
            count=payload.count,
            nan=payload.nan,
            infinite=payload.infinite,
            out_of_bound=payload.out_of_bound,
            bound=payload.bound,
        )
    elif isinstance(payload, ColumnStats):
        # The party's own audit only (this record never crosses): per column its missing
        # share and range, [name, null_share, min, max]; no row value.
        facts.update(
            table=payload.table,
            rows=payload.rows,
            columns=[[c.name, c.null_share, c.min, c.max] for c in payload.columns],
        )
    elif isinstance(payload, ServingEvent):
        # The registry's record of the change: names, versions and parties, no weights.
        facts.update(
            serving_action=payload.action,
            serving_event_id=payload.event_id,
            service_id=payload.service_id,
            model_name=payload.model_name,
            version=payload.version,
            owner_party=payload.owner_party,
            detail=payload.detail,
        )
    elif payload is not None and hasattr(payload, "job_id") and hasattr(payload, "state"):
        facts["state"] = str(payload.state)
    return facts
