"""/api/v1/grants: let a partner's jobs read one of this party's tables into given components.

A party takes part in a job only if, for every table its readers would read, it granted that
table to the job's initiator for every component type the data flows into at this party
(docs/scheduler.md, "Grants"). Grants add up; the check reads grants only, never data.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from fedschemas.payloads import NAME_PATTERN

from fedgateway.api.deps import (
    ROUTER_REFUSALS,
    SchedulerDep,
    answering,
    refusals,
    require_token,
)
from fedgateway.api.models import PARTY_PATTERN, GrantCreate, GrantPublic, GrantsPublic

router = APIRouter(
    prefix="/grants",
    tags=["grants"],
    dependencies=[Depends(require_token)],
    responses=ROUTER_REFUSALS,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=GrantPublic,
    responses=refusals(400, s400="unknown component type or parameter, or the body is not JSON"),
)
def add_grant(scheduler: SchedulerDep, body: GrantCreate) -> GrantPublic:
    """Grant a table to a party for component types (added to what it already has), and
    optionally the params its pipelines may set for this party."""
    params = (
        {t: rules.model_dump(exclude_defaults=True) for t, rules in body.params.items()}
        if body.params is not None
        else None
    )
    with answering():
        grant = scheduler.grant_add(body.table, body.grantee, list(body.component_types), params)
    return GrantPublic.model_validate(grant)


@router.get("", response_model=GrantsPublic)
def list_grants(
    scheduler: SchedulerDep,
    table: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    grantee: Annotated[str | None, Query(pattern=PARTY_PATTERN)] = None,
) -> GrantsPublic:
    """This party's grants, optionally of one table or to one party."""
    with answering():
        rows = scheduler.grant_list(table=table, grantee=grantee)
    return GrantsPublic.model_validate({"data": rows, "count": len(rows)})
