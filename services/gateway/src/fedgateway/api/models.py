"""The REST API's models, a family per resource: `XCreate` (what a client sends), `XPublic` (what
it gets back), `XsPublic {data, count}` (a list).

Public models mirror the scheduler's read-models (docs/scheduler.md); they ignore fields they do
not know, so a newer scheduler does not break an older gateway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fedschemas.payloads import NAME_PATTERN
from pydantic import BaseModel, ConfigDict, Field

State = Literal["waiting", "running", "success", "failed", "canceled"]
PARTY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_ATTEMPT = 2**31 - 1
"""The largest attempt number: the scheduler keeps attempts in an INTEGER column (32-bit in
PostgreSQL), so a larger one is refused at the API (422) instead of failing in the database."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- errors ------------------------------------------------------------------------------------


class ErrorPublic(_Out):
    """Every refusal but a validation error (400, 401, 404, 409, 413, 415, 503): why, in words.
    A 422 has FastAPI's format instead, `{"detail": [{"loc", "msg", "type"}]}`, whether the
    framework or a route found the problem."""

    detail: str


# --- tables ------------------------------------------------------------------------------------


class TableCreate(BaseModel):
    """Form fields of an upload (multipart/form-data, with the CSV as `file`; the form's other
    parts, the file among them, are not fields of this model)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=NAME_PATTERN, description="the table's name in pipelines")
    id_column: str = Field(default="id", min_length=1, max_length=256)
    label_column: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="the label column, if the table has one (its values must all be present)",
    )
    replace: bool = Field(default=False, description="overwrite an existing table of that name")


class TablePublic(_Out):
    name: str
    rows: int
    features: int
    feature_names: list[str]
    id_column: str
    label_column: str | None
    missing_values: int
    missing_by_column: dict[str, int]
    label_values: list[float] | None = Field(
        default=None,
        description="the label profile recorded at upload: the distinct label values (null: no "
        "label column, over 64 values, or a table stored before profiles were recorded)",
    )
    label_classes: list[str] | None = Field(
        default=None,
        description="a text label column's class names, class k's at index k (its "
        "label_values are then 0 .. K-1, the names sorted); null for numeric labels",
    )
    sha256: str
    uploaded_at: datetime
    reads: int = Field(description="how many times a job's reader read the table")


class TablesPublic(_Out):
    data: list[TablePublic]
    count: int


# --- grants ------------------------------------------------------------------------------------


class ParamBounds(_In):
    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)


class ParamGrantIn(_In):
    """What the grantee's pipelines may set in this party's tasks of one component type
    (docs/policy.md, "Grants name the parameters they allow")."""

    may_set: list[str] = Field(default_factory=list, description="params it may set")
    bounds: dict[str, ParamBounds] = Field(
        default_factory=dict, description="params it may set within inclusive bounds"
    )


class GrantCreate(_In):
    table: str = Field(pattern=NAME_PATTERN)
    grantee: str = Field(pattern=PARTY_PATTERN, description="the party whose jobs may read it")
    component_types: list[str] = Field(
        min_length=1,
        description='component types its data may flow into at this party, or ["*"] for any',
    )
    params: dict[str, ParamGrantIn] | None = Field(
        default=None,
        description="per component type, the params the grantee may set (the rest keep their "
        "defaults); replaces the grant's params of the types named; none: the policy alone",
    )


class ParamBoundsPublic(_Out):
    min: float | None = None
    max: float | None = None


class ParamGrantPublic(_Out):
    may_set: list[str] = Field(default_factory=list)
    bounds: dict[str, ParamBoundsPublic] = Field(default_factory=dict)


class GrantPublic(_Out):
    table: str
    grantee: str
    component_types: list[str]
    params: dict[str, ParamGrantPublic] | None = None
    granted_at: datetime


class GrantsPublic(_Out):
    data: list[GrantPublic]
    count: int


# --- jobs --------------------------------------------------------------------------------------


class JobCreate(_In):
    """A submission as JSON; the same can be sent as the raw YAML body (application/yaml)."""

    pipeline_yaml: str = Field(min_length=1)
    job_id: str | None = Field(default=None, pattern=NAME_PATTERN)


class JobStop(_In):
    reason: str | None = Field(default=None, max_length=1000)


class JobPartyPublic(_Out):
    party_id: str
    roles: list[str]
    state: str
    last_seen: datetime | None
    reason: str | None


class ComponentPublic(_Out):
    """One component of the job's pipeline (the DAG's node): inputs map a slot to
    "upstream.output"; params are the pipeline's sections as written (common, roles, parties)."""

    name: str
    type: str
    inputs: dict[str, str]
    params: dict[str, dict[str, Any]]


class JobPublic(_Out):
    job_id: str
    state: State
    attempt: int
    initiator: str
    is_initiator: bool
    reason: str | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    tasks_total: int
    tasks_succeeded: int
    parties: list[JobPartyPublic]
    components: list[ComponentPublic] | None = Field(
        default=None,
        description="the pipeline's components in run order (GET /jobs/{job_id} only; null in "
        "lists)",
    )


class JobsPublic(_Out):
    data: list[JobPublic]
    count: int


class TaskPublic(_Out):
    job_id: str
    component: str
    component_type: str
    attempt: int
    party_id: str
    state: State
    reason: str | None
    progress: float | None
    outputs: dict[str, str] | None
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime


class TasksPublic(_Out):
    data: list[TaskPublic]
    count: int


class MetricPublic(_Out):
    component: str
    party_id: str
    name: str
    step: int = Field(description="-1 for a single value, 0, 1, ... for a series")
    value: float | None = Field(description="null when undefined (e.g. AUC of one class)")


class CurvePublic(_Out):
    component: str
    party_id: str
    name: str
    x_label: str
    y_label: str
    x: list[float | None]
    y: list[float | None]


class MetricsPublic(_Out):
    """This party's metrics of the job (each party keeps its own)."""

    data: list[MetricPublic]
    count: int
    curves: list[CurvePublic]


class LogPublic(_Out):
    time: datetime | None
    level: Literal["info", "warning", "error"]
    event: str
    job_id: str
    component: str | None
    party_id: str | None
    attempt: int | None
    state: str | None
    message: str


class LogsPublic(_Out):
    data: list[LogPublic]
    count: int
