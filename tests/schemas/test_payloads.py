"""Payload models through the wire: every registered type, determinism, optional fields."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import msgpack
import numpy as np
import pytest
from fedschemas import (
    MESSAGE_TYPES,
    ControlHeartbeat,
    DemoPing,
    DemoPong,
    Envelope,
    FederationData,
    PartyRef,
    Payload,
    canonical_bytes,
    decode_envelope,
    decode_payload,
    encode_envelope,
    encode_payload,
    make_message_id,
    new_envelope,
    payload_type,
)
from fedschemas.audit_payloads import AuditCheckpoint, ColumnStat, ColumnStats, DecryptCheck
from fedschemas.payloads import (
    AuditStop,
    CryptoJob,
    CryptoResult,
    CurveValue,
    DataRequest,
    DataResponse,
    JobAccept,
    JobEnd,
    JobEnded,
    JobHeartbeat,
    JobPropose,
    JobRefuse,
    JobRerun,
    JobStart,
    JobStatus,
    JobStop,
    JobSubmit,
    JobTaskReport,
    MetricValue,
    RemoteReply,
    RemoteRequest,
    SchedulerRequest,
    SchedulerResponse,
    TableProfile,
    TaskCancel,
    TaskMetrics,
    TaskRun,
    TaskStatus,
)
from fedschemas.serving_payloads import ServingEvent
from pydantic import ValidationError

AT = datetime(2026, 11, 22, 8, 0, 0, 1, tzinfo=UTC)

# One valid example per registered type. A new type without an example fails
# test_every_registered_type_has_an_example: add one here when you register a type.
EXAMPLES: dict[str, Payload] = {
    "demo.ping": DemoPing(text="ping", n=1),
    "demo.pong": DemoPong(text="pong", n=-2),
    "federation.data": FederationData(
        kind="ciphertext_vector",
        array=np.arange(12, dtype=np.uint64).reshape(3, 4),
        blob=b"\x00\x01header",
        blob_format="fedcrypto.paillier.v1",
        meta={"exponent": -8, "count": 3, "scale": 0.5, "packed": False, "key": "9999-k1"},
    ),
    "control.heartbeat": ControlHeartbeat(party_id="10000", at=AT),
    "task.run": TaskRun(
        job_id="job-1",
        component="psi_0",
        component_type="psi",
        attempt=1,
        role="guest",
        party_id="9999",
        parties={"guest": ["9999"], "host": ["10000", "10001"]},
        params={"curve": "x25519", "bits": 256, "ratio": 0.5, "opts": [1, {"a": None}]},
        inputs={"data": "reader_0.data"},
        pipeline_yaml="name: p\n",
    ),
    "task.status": TaskStatus(
        job_id="job-1",
        component="psi_0",
        attempt=1,
        party_id="9999",
        state="success",
        progress=1.0,
        outputs={"data": "job-1/psi_0/data"},
    ),
    "task.cancel": TaskCancel(job_id="job-1", component="psi_0", attempt=1, reason="stopped"),
    "task.metrics": TaskMetrics(
        job_id="job-1",
        component="eval_0",
        attempt=0,
        party_id="9999",
        metrics=[
            MetricValue(name="auc", step=-1, value=0.93, logged_at=AT),
            MetricValue(name="loss", step=3, value=None, logged_at=AT),
        ],
        curves=[
            CurveValue(
                name="roc", x_label="fpr", y_label="tpr", x=[0.0, 1.0], y=[0.0, None], logged_at=AT
            )
        ],
    ),
    "control.table_profile": TableProfile(
        table="breast_hetero_guest",
        party_id="9999",
        rows=569,
        label_column="y",
        label_values=[0.0, 1.0],
        uploaded_at=AT,
    ),
    "job.submit": JobSubmit(job_id="job-1", pipeline_yaml="name: p\n"),
    "job.propose": JobPropose(job_id="job-1", initiator="9999", pipeline_yaml="name: p\n"),
    "job.accept": JobAccept(job_id="job-1", party_id="10000"),
    "job.refuse": JobRefuse(job_id="job-1", party_id="10000", reason="no grant for breast_host"),
    "job.status": JobStatus(
        job_id="job-1",
        party_id="10000",
        attempt=0,
        state="running",
        component="psi_0",
        task_state="running",
        progress=0.25,
        at=AT,
    ),
    "job.start": JobStart(job_id="job-1", party_id="9999", attempt=0, at=AT),
    "job.end": JobEnd(job_id="job-1", party_id="9999", attempt=0, at=AT),
    "job.heartbeat": JobHeartbeat(
        job_id="job-1", party_id="10000", attempt=0, state="running", at=AT
    ),
    "job.task_report": JobTaskReport(
        job_id="job-1",
        party_id="10000",
        attempt=0,
        component="psi_0",
        task_state="failed",
        reason="worker lost",
        progress=0.5,
        at=AT,
    ),
    "job.stop": JobStop(job_id="job-1", attempt=0, state="failed", reason="party 10000 silent"),
    "job.rerun": JobRerun(job_id="job-1", attempt=1, components=["psi_0", "eval_0"]),
    "scheduler.request": SchedulerRequest(op="status", args={"job_id": "job-1"}),
    "scheduler.response": SchedulerResponse(
        op="status", ok=True, result={"job_id": "job-1", "state": "running", "attempt": 0}
    ),
    "crypto.job": CryptoJob(
        job_id="3f2a9c",
        function="fedcrypto.paillier.kernels:k_mul",
        args=b"\x93\xc4\x01\x07",
        args_format="fedflow.cryptopool.args.v1",
        reply_topic="svc.crypto.reply.ab12",
    ),
    "crypto.result": CryptoResult(
        job_id="3f2a9c", ok=False, error="CiphertextError: not invertible", error_kind="ciphertext"
    ),
    "data.request": DataRequest(op="table_get", args={"name": "breast_hetero_guest"}),
    "data.response": DataResponse(
        op="table_get", ok=False, error="no table x at this party", error_kind="not_found"
    ),
    "rpc.request": RemoteRequest(service="svc.serving", body=b"\x81\xa1x\x01"),
    "rpc.reply": RemoteReply(request_id="5d0c1e", ok=False, error="timeout", error_kind="failed"),
    "gateway.job_ended": JobEnded(job_id="job-1", attempt=0, state="success"),
    "control.audit_stop": AuditStop(
        job_id="job-1",
        rule="data.key_width",
        severity="critical",
        party_id="10000",
        message_id="5d0c1e",
        detail="party 10000 announced a 2025-bit key",
    ),
    "report.decrypt_check": DecryptCheck(
        job_id="job-1",
        component="hetero_lr_0",
        attempt=0,
        party_id="9999",
        peer="10000",
        tag="host_gradient",
        iteration=3,
        count=20,
        out_of_bound=1,
        bound="masked plaintext in [0, n/3) of a 2048-bit key",
    ),
    "report.column_stats": ColumnStats(
        job_id="job-1",
        component="reader_0",
        attempt=0,
        party_id="9999",
        table="breast_hetero_guest",
        rows=569,
        columns=[
            ColumnStat(name="x0", null_share=0.0, min=-2.5, max=3.1),
            ColumnStat(name="x1", null_share=1.0),
        ],
    ),
    "audit.checkpoint": AuditCheckpoint(
        party_id="9999",
        body='{"format":"fedmq.audit.checkpoint.v1","seq":4}',
        signature="ab" * 64,
        statement='{"job_id":"job-1","sent":[3,"00"]}',
        statement_signature="cd" * 64,
    ),
    "serving.event": ServingEvent(
        party_id="9999",
        event_id=7,
        at=AT,
        action="switch",
        service_id="risk",
        model_name="credit",
        version=2,
        detail='{"before":{"version":1}}',
    ),
}


def test_every_registered_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("type_name", sorted(EXAMPLES))
def test_every_type_round_trips_through_an_envelope(
    type_name: str, make_envelope: Callable[..., Envelope]
) -> None:
    # Prepare
    original = EXAMPLES[type_name]
    env = make_envelope(type=type_name, payload=encode_payload(original))

    # Execute
    received = decode_envelope(encode_envelope(env))
    decoded = decode_payload(received)

    # Assert
    assert type(decoded) is type(original)
    assert payload_type(type(decoded)) == type_name
    for name in type(original).model_fields:
        got, want = getattr(decoded, name), getattr(original, name)
        if isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype
        else:
            assert got == want


def test_payload_bytes_do_not_depend_on_dict_insertion_order() -> None:
    forward = FederationData(kind="metric", meta={"auc": 0.91, "ks": 0.4, "n": 100})
    backward = FederationData(kind="metric", meta={"n": 100, "ks": 0.4, "auc": 0.91})

    assert encode_payload(forward) == encode_payload(backward)


def test_unset_optional_fields_are_left_off_the_wire() -> None:
    data = msgpack.unpackb(encode_payload(FederationData(kind="plain_control")), raw=False)

    assert data == {"kind": "plain_control", "meta": {}}


def test_meta_values_keep_their_types() -> None:
    meta = {"flag": True, "count": 1, "ratio": 1.0, "name": "1"}
    env_payload = encode_payload(FederationData(kind="metric", meta=meta))

    decoded = FederationData.model_validate(msgpack.unpackb(env_payload, raw=False))

    assert decoded.meta == meta
    assert {k: type(v) for k, v in decoded.meta.items()} == {
        "flag": bool,
        "count": int,
        "ratio": float,
        "name": str,
    }


def test_blob_needs_a_declared_versioned_format() -> None:
    with pytest.raises(ValidationError, match="blob and blob_format must be given together"):
        FederationData(kind="public_key", blob=b"key")
    with pytest.raises(ValidationError, match="blob_format"):
        FederationData(kind="public_key", blob=b"key", blob_format="paillier")
    assert FederationData(kind="public_key", blob=b"k", blob_format="fedcrypto.paillier_pk.v1")


def test_heartbeat_times_are_normalised_to_utc() -> None:
    paris = timezone(timedelta(hours=1))

    beat = ControlHeartbeat(party_id="9999", at=AT.astimezone(paris))

    assert beat.at == AT
    assert beat.at.tzinfo == UTC


def test_payload_models_refuse_extra_fields_and_are_frozen() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DemoPing(text="a", n=1, extra=2)  # type: ignore[call-arg]
    ping = DemoPing(text="a", n=1)
    with pytest.raises(ValidationError, match="frozen"):
        ping.n = 2  # type: ignore[misc]


def test_new_envelope_fills_type_version_id_and_payload() -> None:
    # Prepare
    guest = PartyRef(party_id="9999", role="guest")
    host = PartyRef(party_id="10000", role="host")
    ping = DemoPing(text="hello", n=3)
    ids = {"job_id": "job-1", "attempt": 0, "tag": "demo", "iteration": -1, "seq": 5}

    # Execute
    env = new_envelope(
        ping,
        component="demo_0",
        task_id="job-1:demo_0",
        source=guest,
        destination=host,
        created_at=AT,
        **ids,  # type: ignore[arg-type]
    )
    again = new_envelope(
        ping,
        component="demo_0",
        task_id="job-1:demo_0",
        source=guest,
        destination=host,
        created_at=AT,
        **ids,  # type: ignore[arg-type]
    )

    # Assert
    assert env.type == "demo.ping"
    assert env.schema_version == DemoPing.payload_version
    assert env.message_id == make_message_id("job-1", "demo_0", 0, "demo", -1, 5, guest, host)
    assert decode_payload(env, DemoPing) == ping
    assert canonical_bytes(again) == canonical_bytes(env)


def test_only_registered_payload_models_can_be_encoded() -> None:
    class Stray(Payload):
        x: int

    with pytest.raises(KeyError, match="not a registered message type"):
        encode_payload(Stray(x=1))
    with pytest.raises(TypeError, match="not a payload model"):
        encode_payload(PartyRef(party_id="1", role="host"))


@pytest.mark.parametrize("type_name", sorted(EXAMPLES))
def test_json_form_round_trips_for_logs_and_rest(type_name: str) -> None:
    # The JSON form (base64 bytes, int-microsecond times) is for read-models and debugging;
    # the wire is msgpack. Both must describe the same values.
    original = EXAMPLES[type_name]

    decoded = type(original).model_validate_json(original.model_dump_json())

    assert encode_payload(decoded) == encode_payload(original)


def test_envelope_json_form_round_trips(make_envelope: Callable[..., Envelope]) -> None:
    env = make_envelope()

    decoded = Envelope.model_validate_json(env.model_dump_json())

    assert decoded == env
    assert canonical_bytes(decoded) == canonical_bytes(env)


def test_a_curve_with_more_x_than_y_values_is_refused() -> None:
    with pytest.raises(ValidationError, match="2 x values, 1 y"):
        CurveValue(name="roc", x_label="fpr", y_label="tpr", x=[0.0, 1.0], y=[0.0], logged_at=AT)
