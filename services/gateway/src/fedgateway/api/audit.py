"""/api/v1/audit: the party's audit log, read through its audit service (docs/audit.md).

Each request is one JSON request/reply on `svc.audit.rpc` (the audit's read models); the API
never reads the audit's tables. 503 when the audit service does not answer in time.

    GET /api/v1/audit/jobs/{job_id}/events?after=0&limit=1000   the job's records
    GET /api/v1/audit/alerts?job_id=...                          findings (warn, critical)
    GET /api/v1/audit/jobs/{job_id}/report                       post-hoc audit of the job
    GET /api/v1/audit/export                                     the whole log, JSON lines
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fedbus import BusError
from fedcontrol import ServiceUnavailable
from fedschemas import topics
from fedschemas.payloads import NAME_PATTERN

from fedgateway.api.deps import (
    ROUTER_REFUSALS,
    ApiDep,
    JobIdPath,
    refusals,
    require_token,
)

AUDIT_TIMEOUT_S = 15.0
MAX_SEQ = 2**31 - 1
"""Every integer the API takes is bounded to a 32-bit column's range (tests/api)."""

router = APIRouter(
    prefix="/audit",
    tags=["audit"],
    dependencies=[Depends(require_token)],
    responses=ROUTER_REFUSALS,
)


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def refuse_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not declare: a misspelt `limt=5` would
    otherwise be ignored silently and the caller get the default page."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            [
                {"loc": ["query", name], "msg": "unknown query parameter", "type": "extra"}
                for name in unknown
            ],
        )


def ask_audit(api: ApiDep, request: dict[str, Any]) -> Any:
    """The audit's answer's data; 503 when it is silent, 400 when it refuses."""
    try:
        reply = api.bus().request(
            topics.AUDIT_RPC, json.dumps(request).encode(), timeout=AUDIT_TIMEOUT_S
        )
    except (BusError, ServiceUnavailable, OSError) as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"party {api.party_id}'s audit service did not answer ({type(exc).__name__})",
        ) from None
    answer = json.loads(reply.body)
    if not answer.get("ok"):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(answer.get("error")))
    return answer["data"]


@router.get("/jobs/{job_id}/events", dependencies=[Depends(refuse_unknown_query)])
def events(
    api: ApiDep,
    job_id: JobIdPath,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="records after this seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """What crossed for the job: one record per message (envelope fields, hashes, facts and
    findings; never payloads or keys), in log order."""
    data = ask_audit(api, {"op": "events", "job_id": job_id, "after": after, "limit": limit})
    return {"data": data, "count": len(data)}


@router.get("/alerts", dependencies=[Depends(refuse_unknown_query)])
def alerts(
    api: ApiDep,
    job_id: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> dict[str, Any]:
    """Findings of severity warn and critical (of one job, or all)."""
    data = ask_audit(api, {"op": "alerts", "job_id": job_id})
    return {"data": data, "count": len(data)}


@router.get("/jobs/{job_id}/report", responses=refusals(400))
def report(api: ApiDep, job_id: JobIdPath) -> dict[str, Any]:
    """The post-hoc audit of a job: its rules re-run over the recorded log, its traffic,
    whether the chain verifies, and the peers' signed statements of the job's traffic with
    whether each agreed with this party's log."""
    result: dict[str, Any] = ask_audit(api, {"op": "report", "job_id": job_id})
    return result


@router.get("/export", response_class=Response)
def export(api: ApiDep) -> Response:
    """The whole log as JSON lines, for `fedmq audit verify FILE` (offline)."""
    text = ask_audit(api, {"op": "export"})
    return Response(str(text) + "\n", media_type="application/x-ndjson")
