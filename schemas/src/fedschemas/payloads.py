"""Payload models: what travels inside an envelope, one model per message type and version.

Every model subclasses `Payload` (extra fields forbidden, frozen, strict types) and is listed
once in `registry.py`. Rules for changing them are in docs/wire.md: within a version only add
optional fields defaulting to None; a breaking change is a new model with a higher
`payload_version` plus a pure upgrade function from the old one.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, Self, get_args

from pydantic import Field, JsonValue, model_validator

from fedschemas.base import ROLES, PartyId, Payload, Timestamp, WireModel
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
    # One plaintext value per row: a party's partial linear predictor X_p w_p of its own
    # features (hetero_lr_predict). Its own kind so that an audit sees per-row disclosures.
    "partial_score",
]
FEDERATION_DATA_KINDS: Final[tuple[str, ...]] = get_args(FederationDataKind)
"""Every FederationData kind (what a component protocol may allow)."""


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
    """control.heartbeat: a party says it is alive at `at`.

    Not sent by any fedmq service: a job's liveness travels as job.heartbeat. Kept
    registered because a type is never removed within a version."""

    party_id: PartyId
    at: Timestamp


# --- Job runtime (issue #5): scheduler <-> worker and scheduler <-> scheduler ----------------
# docs/scheduler.md describes the flow. A job's attempt grows by one on each rerun; every id a
# scheduler derives (message ids, task keys) includes it, so a rerun never collides with the
# messages of an earlier attempt.

JobState = Literal["waiting", "running", "success", "failed", "canceled"]
"""State of a job or of one party's part of it."""

TaskState = Literal["waiting", "running", "success", "failed", "canceled"]
"""State of one component's task at one party, in one attempt."""

TaskReport = Literal["running", "success", "failed", "canceled"]
"""The states a worker reports; "waiting" is the scheduler's own (not yet sent)."""

ROLE_NAME_PATTERN = rf"^({'|'.join(ROLES)})$"
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
# "<component>.<output>", e.g. "reader_0.data".
OUTPUT_REF_PATTERN = r"^[A-Za-z0-9_-]{1,128}\.[A-Za-z0-9_-]{1,128}$"

ComponentName = Annotated[str, Field(pattern=NAME_PATTERN)]
JobId = Annotated[str, Field(pattern=NAME_PATTERN)]
MAX_ATTEMPT: Final = 2**31 - 1
"""The highest attempt number any message may carry: every service stores attempts in a 32-bit
integer column (scheduler, worker, flow tables), so a larger one could only fail there, late and
obscurely (issue #21: a task.run with attempt 2**40 broke the worker's database insert)."""
Attempt = Annotated[int, Field(ge=0, le=MAX_ATTEMPT)]
Reason = Annotated[str, Field(max_length=4096)]
Progress = Annotated[float, Field(ge=0.0, le=1.0)]
OutputRef = Annotated[str, Field(pattern=OUTPUT_REF_PATTERN)]


def task_scope_id(job_id: str, component: str, party_id: str, role: str) -> str:
    """The envelope's `task_id` of one party's task: "<job>/<component>/<party>/<role>".

    The one format every sender uses (fedflow's TaskKey, the scheduler's task.run and task
    reports); receivers file federation data by the component it names (job ids and component
    names hold no "/"). Job-level messages belong to no task: their task_id is empty.
    """
    return f"{job_id}/{component}/{party_id}/{role}"


class TaskRun(Payload):
    """task.run: the scheduler asks its own worker to run this party's side of one component.

    `parties` maps each role to its party ids (hosts may be several); `params` are the
    component's parameters for `role` (common and per-role merged by the scheduler); `inputs`
    maps an input name to "<component>.<output>" of an upstream component of the same job.
    """

    job_id: JobId
    component: ComponentName
    component_type: ComponentName
    attempt: Attempt
    role: Annotated[str, Field(pattern=ROLE_NAME_PATTERN)]
    party_id: PartyId
    parties: dict[str, list[PartyId]]
    params: dict[str, JsonValue] = Field(default_factory=dict)
    inputs: dict[str, OutputRef] = Field(default_factory=dict)
    pipeline_yaml: str
    """The pipeline as submitted. No worker reads it back (they only record it): a dead
    field, required in this version, to be dropped by a version 2 of task.run."""


class TaskStatus(Payload):
    """task.status: a worker tells its own scheduler how a task is doing.

    `outputs` (on success) maps an output name to a reference the downstream worker
    understands (a table name, a model id). `progress` is in [0, 1].
    """

    job_id: JobId
    component: ComponentName
    attempt: Attempt
    party_id: PartyId
    state: TaskReport
    reason: Reason | None = None
    progress: Progress | None = None
    outputs: dict[str, str] | None = None
    component_version: Annotated[str, Field(max_length=64)] | None = None
    """The release of the component code the worker runs (on "running" reports)."""
    code_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    """SHA-256 of the component's source as the worker loaded it (fedflow.code_identity), on
    "running" reports: what this party's audit compares with the code its operator approved."""


class TaskCancel(Payload):
    """task.cancel: the scheduler tells its own worker to stop a task (job stopped or failed)."""

    job_id: JobId
    component: ComponentName
    attempt: Attempt
    reason: Reason


MetricName = Annotated[str, Field(min_length=1, max_length=128)]


class MetricValue(WireModel):
    """One value a task logged: `step` -1 is a single value ("auc"), 0, 1, ... a series (a
    loss per iteration). `value` None is an undefined value (NaN: AUC of a single class)."""

    name: MetricName
    step: Annotated[int, Field(ge=-1)]
    value: float | None
    logged_at: Timestamp


class CurveValue(WireModel):
    """One curve a task logged (ROC, PR, KS...): x and y of equal length, None where undefined."""

    name: MetricName
    x_label: Annotated[str, Field(max_length=64)]
    y_label: Annotated[str, Field(max_length=64)]
    x: list[float | None]
    y: list[float | None]
    logged_at: Timestamp

    @model_validator(mode="after")
    def _same_length(self) -> Self:
        if len(self.x) != len(self.y):
            raise ValueError(f"curve {self.name!r}: {len(self.x)} x values, {len(self.y)} y")
        return self


class TaskMetrics(Payload):
    """task.metrics: a worker tells its own scheduler the metrics and curves a task logged.

    The scheduler keeps the latest value per (job, component, party, name, step) -- by
    `logged_at`, so a late or repeated message never overwrites a newer value -- and answers
    its `metrics` command from them. A worker sends what is new while the task runs and all
    of it once more before the task's final task.status.
    """

    job_id: JobId
    component: ComponentName
    attempt: Attempt
    party_id: PartyId
    metrics: list[MetricValue] = Field(default_factory=list)
    curves: list[CurveValue] = Field(default_factory=list)


class TableProfile(Payload):
    """control.table_profile: a worker tells its own scheduler what a table it just stored
    holds, so the scheduler can check a pipeline against the party's data before any
    component runs (without reading the workers' tables). Party-local: never relayed.

    `label_values`: the distinct label values, sorted (None: no label column, or more than
    the worker lists). `label_classes`: a text label column's class names, class k's at index
    k (its label values are then 0 .. K-1), so that a refusal can name them; None for
    numbers. The scheduler keeps the profile with the newest `uploaded_at`.
    """

    table: Annotated[str, Field(pattern=NAME_PATTERN)]
    party_id: PartyId
    rows: Annotated[int, Field(ge=0)]
    label_column: Annotated[str | None, Field(max_length=256)] = None
    label_values: list[float] | None = None
    uploaded_at: Timestamp
    label_classes: Annotated[
        list[Annotated[str, Field(max_length=1024)]] | None, Field(max_length=64)
    ] = None


class JobSubmit(Payload):
    """job.submit: a user (REST API, CLI, SDK) submits a pipeline to the local scheduler.

    The submitter picks `job_id` (the API uses a fresh random id), so a resubmission after a
    lost reply is recognised as the same job.
    """

    job_id: JobId
    pipeline_yaml: str


class JobPropose(Payload):
    """job.propose: the initiator's scheduler asks another party's scheduler to take part."""

    job_id: JobId
    initiator: PartyId
    pipeline_yaml: str


class GrantUsed(WireModel):
    """One of the accepting party's grants that lets the job read a table: its id there, the
    table, and the component types it covered when the job was accepted (a grant can be widened
    later). Names and ids only: no data, no params."""

    grant_id: Annotated[int, Field(ge=1)]
    table: Annotated[str, Field(min_length=1, max_length=256)]
    component_types: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128)]], Field(max_length=64)
    ]


class JobAccept(Payload):
    """job.accept: a party agrees to run its part of a proposed job (its grants cover it).

    `grants`: the grants that cover the tables this party's part reads, one per table (absent
    from messages of senders before it; empty when the part reads no table of the party's)."""

    job_id: JobId
    party_id: PartyId
    grants: Annotated[list[GrantUsed], Field(max_length=256)] | None = None


class JobRefuse(Payload):
    """job.refuse: a party declines a proposed job; `reason` says why (e.g. a missing grant).

    The refusing party reads none of its data for the job.
    """

    job_id: JobId
    party_id: PartyId
    reason: Reason


class JobStatus(Payload):
    """job.status (superseded): one party's view of a job, sent between schedulers.

    Its four meanings are now four types: job.start, job.end, job.heartbeat and
    job.task_report (`split_job_status` maps an old message to its successor, and receivers
    still accept it). Schedulers keep sending it until every party reads the successors.

    A participant sends it to the initiator when one of its tasks changes state (then
    `component` and `task_state` are set) and as a heartbeat while the job runs (without
    them). The initiator sends it to every participant when the job ends in success, so they
    mark it too.
    """

    job_id: JobId
    party_id: PartyId
    attempt: Attempt
    state: JobState
    component: ComponentName | None = None
    task_state: TaskState | None = None
    reason: Reason | None = None
    progress: Progress | None = None
    at: Timestamp


class JobStart(Payload):
    """job.start: the initiator tells a participant that every party accepted `attempt` 0 of
    the job: it starts its tasks. (Before it, job.status with state "running".)"""

    job_id: JobId
    party_id: PartyId
    attempt: Attempt
    at: Timestamp


class JobEnd(Payload):
    """job.end: the initiator tells a participant that every task of every party succeeded.
    (Before it, job.status with state "success".) Failures travel as job.stop."""

    job_id: JobId
    party_id: PartyId
    attempt: Attempt
    at: Timestamp


class JobHeartbeat(Payload):
    """job.heartbeat: a sign of life for a job while it is open, sent both ways (participant
    to initiator while it runs there; initiator to every party that accepted). `state` is the
    sender's: a participant that missed job.start starts on a "running" beat of the initiator.
    This is the job heartbeat fedmq sends; control.heartbeat is not sent by any service."""

    job_id: JobId
    party_id: PartyId
    attempt: Attempt
    state: Literal["waiting", "running"]
    at: Timestamp


class JobTaskReport(Payload):
    """job.task_report: a participant tells the initiator that its task of `component` in
    `attempt` changed (`task_state`, with the worker's `reason` and `progress`)."""

    job_id: JobId
    party_id: PartyId
    attempt: Attempt
    component: ComponentName
    task_state: TaskReport
    reason: Reason | None = None
    progress: Progress | None = None
    at: Timestamp


JobStatusSuccessor = JobStart | JobEnd | JobHeartbeat | JobTaskReport


def split_job_status(old: JobStatus) -> JobStatusSuccessor:
    """The one-meaning message an old job.status stood for (pure; registry.SUPERSEDED).

    job.status carried four meanings, told apart by which fields were set: with `component`
    and `task_state` a task report; with state "success" the end; otherwise a heartbeat (a
    start was a "running" beat, and a participant handles both alike: it starts the job).
    """
    if old.component is not None and old.task_state is not None and old.task_state != "waiting":
        return JobTaskReport(
            job_id=old.job_id,
            party_id=old.party_id,
            attempt=old.attempt,
            component=old.component,
            task_state=old.task_state,
            reason=old.reason,
            progress=old.progress,
            at=old.at,
        )
    if old.state == "success":
        return JobEnd(job_id=old.job_id, party_id=old.party_id, attempt=old.attempt, at=old.at)
    return JobHeartbeat(
        job_id=old.job_id,
        party_id=old.party_id,
        attempt=old.attempt,
        state="waiting" if old.state == "waiting" else "running",
        at=old.at,
    )


def as_job_status(new: JobStatusSuccessor, job_state: JobState) -> JobStatus:
    """The job.status a party of the previous version reads for `new` (pure). `job_state`
    fills job.status's `state` for a task report (the sender's job state; ignored there)."""
    if isinstance(new, JobTaskReport):
        return JobStatus(
            job_id=new.job_id,
            party_id=new.party_id,
            attempt=new.attempt,
            state=job_state,
            component=new.component,
            task_state=new.task_state,
            reason=new.reason,
            progress=new.progress,
            at=new.at,
        )
    state: JobState = new.state if isinstance(new, JobHeartbeat) else "running"
    if isinstance(new, JobEnd):
        state = "success"
    return JobStatus(
        job_id=new.job_id, party_id=new.party_id, attempt=new.attempt, state=state, at=new.at
    )


class JobStop(Payload):
    """job.stop: the initiator tells every party to stop the job.

    `state` is what the job ends as: "canceled" when a user stopped it, "failed" when a task
    failed, a party refused or went silent (then `reason` names the party and the cause).
    """

    job_id: JobId
    attempt: Attempt
    state: Literal["failed", "canceled"]
    reason: Reason


class JobRerun(Payload):
    """job.rerun: the initiator starts attempt `attempt` of a job at every party.

    `components` are the components to run again (the failed or canceled ones and everything
    downstream of them); the others keep their successful results from earlier attempts.
    """

    job_id: JobId
    attempt: Attempt
    components: list[ComponentName]


SchedulerOp = Literal[
    "submit",
    "status",
    "list_jobs",
    "list_tasks",
    "stop",
    "rerun",
    "grant_add",
    "grant_list",
    # Added for the REST API (fedcontrol): tables in the party's TableStore, job metrics, logs.
    "table_upload",
    "table_get",
    "table_list",
    "metrics",
    "logs",
    # Tables larger than one bus frame travel as an upload session (docs/scheduler.md).
    "table_upload_begin",
    "table_upload_part",
    "table_upload_commit",
    "table_upload_abort",
]


class SchedulerRequest(Payload):
    """scheduler.request: a local command to the scheduler (request/reply on svc.scheduler.rpc).

    `args` per op are listed in docs/scheduler.md (e.g. submit: {job_id, pipeline_yaml}).
    """

    op: SchedulerOp
    args: dict[str, JsonValue] = Field(default_factory=dict)


SchedulerErrorKind = Literal["invalid", "not_found", "conflict", "internal"]


class SchedulerResponse(Payload):
    """scheduler.response: the answer to a scheduler.request.

    `ok` with `result` (JSON-like, per op in docs/scheduler.md), or not `ok` with `error` (a
    message for the user) and `error_kind`, which the REST API maps to 400, 404, 409 or 500.
    """

    op: SchedulerOp
    ok: bool
    result: JsonValue = None
    error: Reason | None = None
    error_kind: SchedulerErrorKind | None = None


# --- Party data (issue #12): the REST API <-> the party's data service (its workers) ---------
# The workers own the party's tables; a gateway's table routes are commands to them on the
# local topic svc.data.rpc (request/reply), like the scheduler's commands (docs/api.md).

DataOp = Literal[
    "table_upload",
    "table_get",
    "table_list",
    # Tables larger than one bus frame travel as an upload session (docs/api.md).
    "table_upload_begin",
    "table_upload_part",
    "table_upload_commit",
    "table_upload_abort",
    # A commit parsed off the command path reports through this (fedworker.data).
    "table_upload_status",
    # A finished job's outputs at this party (fedworker.job_outputs): models, and tables a
    # page of rows at a time (`fedmq job model|data`).
    "job_outputs",
    "job_output_rows",
]


class DataRequest(Payload):
    """data.request: a local command to the party's data service (its workers), request/reply
    on svc.data.rpc. `args` per op are listed in docs/api.md (e.g. table_get: {name})."""

    op: DataOp
    args: dict[str, JsonValue] = Field(default_factory=dict)


class DataResponse(Payload):
    """data.response: the answer to a data.request, in the form of scheduler.response (`ok`
    with `result`, or `error` and `error_kind`, which the REST API maps to 400/404/409/500)."""

    op: DataOp
    ok: bool
    result: JsonValue = None
    error: Reason | None = None
    error_kind: SchedulerErrorKind | None = None


# --- Crypto job pool (issue #5): a party's components <-> its worker replicas ---------------
# docs/cryptopool.md describes the flow. These never cross sites: they travel on the party's
# own local topic (svc.crypto) and the requesting executor's reply topic, because a job may
# carry the private key's primes (CRT decryption, CRT obfuscators).

CRYPTO_FUNCTION_PATTERN = r"^[a-z_][a-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"
CRYPTO_JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
LOCAL_TOPIC_PATTERN = r"^[A-Za-z0-9_.:-]{1,255}$"

CryptoErrorKind = Literal["refused", "invalid", "ciphertext", "value", "failed"]
"""Why a crypto job did not produce a result: the function is not whitelisted ("refused"), its
arguments could not be decoded ("invalid"), or the kernel raised (CiphertextError ->
"ciphertext", ValueError -> "value", anything else -> "failed")."""


class CryptoJob(Payload):
    """crypto.job: one chunk of homomorphic work for any replica of the party's worker.

    `function` names a whitelisted kernel as "module:qualname"; `args` is its argument tuple in
    the msgpack layout `args_format` names (no pickle: bytes, ints, tuples, arrays as NDArray
    maps, fixed-base tables by content hash and recipe). The result goes to `reply_topic`.
    """

    job_id: Annotated[str, Field(pattern=CRYPTO_JOB_ID_PATTERN)]
    function: Annotated[str, Field(pattern=CRYPTO_FUNCTION_PATTERN, max_length=256)]
    args: bytes
    args_format: Annotated[str, Field(pattern=BLOB_FORMAT_PATTERN)]
    reply_topic: Annotated[str, Field(pattern=LOCAL_TOPIC_PATTERN)]


class CryptoResult(Payload):
    """crypto.result: the answer to one crypto.job (by `job_id`).

    `ok` with `result` (the kernel's return value in the layout `result_format` names), or not
    `ok` with `error` and `error_kind`. A replica may answer a job twice (redelivery); the
    requester keeps the first answer.
    """

    job_id: Annotated[str, Field(pattern=CRYPTO_JOB_ID_PATTERN)]
    ok: bool
    result: bytes | None = None
    result_format: Annotated[str | None, Field(pattern=BLOB_FORMAT_PATTERN)] = None
    error: Reason | None = None
    error_kind: CryptoErrorKind | None = None
    replica: Annotated[str | None, Field(pattern=CRYPTO_JOB_ID_PATTERN)] = None
    """Which replica answered (for operators, and to see that work was shared)."""


# --- Cross-site request/reply (issue #12): a service <-> a service of another party --------
# Online calls through both gateways (docs/gateway.md, "Request/reply"). The envelope carries
# the deadline; the gateways and the responder drop what arrives after it.

SERVICE_TOPIC_PATTERN = r"^[A-Za-z0-9_.:-]{1,255}$"


class RemoteRequest(Payload):
    """rpc.request: a call to `service` (a topic at the destination party that its gateway
    exposes to this party) with an opaque `body` the service defines."""

    service: Annotated[str, Field(pattern=SERVICE_TOPIC_PATTERN)]
    body: bytes


RemoteErrorKind = Literal["refused", "unavailable", "failed"]
"""Why a call has no answer body: the receiving gateway refused it ("refused": not exposed,
bad signature, replay...), nothing answered it there ("unavailable"), or the service raised
("failed")."""


class RemoteReply(Payload):
    """rpc.reply: the answer to the rpc.request whose message id is `request_id`: `ok` with
    `body`, or not `ok` with `error` and `error_kind`."""

    request_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
    ok: bool
    body: bytes = b""
    error: Reason | None = None
    error_kind: RemoteErrorKind | None = None


class JobEnded(Payload):
    """gateway.job_ended: this party's scheduler ended `attempt` of `job_id` (succeeded,
    failed or canceled). Party-local, on svc.gateway: from then on the gateway refuses
    cross-site messages of that attempt and earlier ones as replays."""

    job_id: JobId
    attempt: Attempt
    state: Literal["success", "failed", "canceled"]


AuditSeverity = Literal["info", "warn", "critical"]


class AuditStop(Payload):
    """control.audit_stop: the party's audit service asks its own scheduler to stop a job
    because a message broke a critical rule (services/audit, docs/audit.md). Party-local, on
    svc.scheduler, signed by the audit's key: the scheduler acts only on a valid signature
    from the key it is configured with, and stays the only one that fails jobs."""

    job_id: JobId
    rule: Annotated[str, Field(pattern=r"^[a-z_]+\.[a-z_]+$")]
    severity: AuditSeverity
    party_id: PartyId
    """The party whose message broke the rule."""
    message_id: Annotated[str, Field(max_length=160)]
    detail: Reason
