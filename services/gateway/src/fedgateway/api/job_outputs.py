"""/api/v1/jobs/{job_id}/outputs: a job's outputs at this party, for its own users (`fedmq job
model|data`). Commands to the party's data service (fedworker.job_outputs), which reads the
outputs its workers stored: the models (documents and arrays, or a weights table as
{name: weight}) in one answer, a data table a page of rows at a time.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fedschemas.payloads import NAME_PATTERN

from fedgateway.api.deps import (
    ROUTER_REFUSALS,
    DataDep,
    JobIdPath,
    answering,
    refusals,
    require_token,
)

MAX_ROWS_PER_PAGE = 5000
"""As the data service's (fedworker.job_outputs)."""

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    dependencies=[Depends(require_token)],
    responses=ROUTER_REFUSALS,
)

ComponentPath = Annotated[str, Path(pattern=NAME_PATTERN, description="the component's name")]
OutputPath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="the output's name (e.g. data)")
]


@router.get("/{job_id}/outputs", responses=refusals(404, s404="no outputs of that job/component"))
def list_outputs(
    data: DataDep,
    job_id: JobIdPath,
    component: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> dict[str, Any]:
    """This party's outputs of the job (of one component): each model with its document and
    arrays, each weights table as {name: weight}, each data table's shape (its rows:
    /outputs/{component}/{output})."""
    with answering():
        result: dict[str, Any] = data.call("job_outputs", job_id=job_id, component=component)  # type: ignore[assignment]
    return result


@router.get(
    "/{job_id}/outputs/{component}/{output}",
    responses=refusals(400, 404, s404="no such job, component or output"),
)
def output_rows(
    data: DataDep,
    job_id: JobIdPath,
    component: ComponentPath,
    output: OutputPath,
    role: Annotated[str | None, Query(pattern=r"^(guest|host|arbiter)$")] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS_PER_PAGE)] = 1000,
) -> dict[str, Any]:
    """Rows [offset, offset + limit) of an output table: ids, columns, features, labels."""
    with answering():
        result: dict[str, Any] = data.call(  # type: ignore[assignment]
            "job_output_rows",
            job_id=job_id,
            component=component,
            output=output,
            role=role,
            offset=offset,
            limit=limit,
        )
    return result
