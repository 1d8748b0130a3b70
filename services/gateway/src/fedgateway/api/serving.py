"""/api/v1/serving: online prediction with the party's published models, and their lifecycle
(docs/serving.md).

Each request is one JSON request/reply with the party's serving service on the party-local
topic `svc.serving.rpc`; the API never reads the serving tables. The serving service answers
with the HTTP status to give (404 unknown service, 422 features that do not fit the model, 429
rate limit, 503 a host that did not answer, naming it), passed through here; 503 also when the
serving service itself does not answer.

The two prediction routes are `async` and never leave the API's event loop but for the bus
request itself: concurrent single-row requests of one service go to the serving service as one
message (fedgateway.api.serving_batch), and the token check of every serving route runs on
the loop (a sync dependency would cost each request a hop to the threadpool and back).

    POST   /api/v1/serving/{service_id}/predict          one row: {id, features}
    POST   /api/v1/serving/{service_id}/predict/batch    {rows: [...]} (at most 10,000)
    GET    /api/v1/serving/{service_id}/schema           the features the service takes
    GET    /api/v1/serving/openapi.json                  OpenAPI of every bound service, by feature
    GET    /api/v1/serving/services                      bound services
    POST   /api/v1/serving/services                      bind {service_id, name, version, fallback}
    GET    /api/v1/serving/services/{service_id}
    POST   /api/v1/serving/services/{service_id}/canary  {version | null, percent}
    POST   /api/v1/serving/services/{service_id}/switch  {version}
    POST   /api/v1/serving/services/{service_id}/rollback
    DELETE /api/v1/serving/services/{service_id}         unbind (drains in-flight requests)
    GET    /api/v1/serving/models                        published models (?name=)
    POST   /api/v1/serving/models                        publish {job_id, name, component}
    GET    /api/v1/serving/models/{name}/{version}       (?owner_party= at a host)
    POST   /api/v1/serving/models/{name}/{version}/accept   a host's operator accepts
    DELETE /api/v1/serving/models/{name}/{version}
    GET    /api/v1/serving/models/{name}/{version}/export   this party's part, a signed file
    POST   /api/v1/serving/models/import             {document}: a signed export
    GET    /api/v1/serving/events                        the lifecycle log (?service_id=)
    POST   /api/v1/serving/features                      a host loads a table as its features
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials
from fedbus import Bus, BusError
from fedcontrol import ServiceUnavailable
from fedschemas import topics
from fedschemas.payloads import NAME_PATTERN
from pydantic import BaseModel, ConfigDict, Field

from fedgateway.api.deps import (
    ROUTER_REFUSALS,
    ApiContext,
    ApiDep,
    bearer,
    get_api,
    refusals,
    require_token,
)
from fedgateway.api.models import ErrorPublic
from fedgateway.api.serving_batch import PredictBatcher, ServingSilent
from fedgateway.api.serving_openapi import features_schema, serving_openapi

SERVING_RPC_TOPIC = topics.SERVING_RPC
"""The serving service's party-local request/reply topic (fedserving.handlers.RPC_TOPIC)."""
CONTROL_TIMEOUT_S = 60.0
"""Publishing asks every host; unbinding waits for in-flight requests."""
PREDICT_MARGIN_S = 2.0
DEFAULT_PREDICT_TIMEOUT_S = 0.5
DEFAULT_BATCH_TIMEOUT_S = 5.0
"""A batch's hosts look up and score up to 10,000 rows: a longer default deadline."""
MAX_BATCH_ROWS = 10_000
IN_FLIGHT_PER_SERVICE = 2
"""Prediction messages in flight per service at hop 1 (fedgateway.api.serving_batch)."""
MAX_VERSION = 2**31 - 1


async def get_api_here(request: Request) -> ApiContext:
    """get_api on the event loop (it only reads app.state)."""
    return get_api(request)


LoopApiDep = Annotated[ApiContext, Depends(get_api_here)]


async def require_token_here(
    api: LoopApiDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """deps.require_token on the event loop (a constant-time comparison: no IO)."""
    require_token(api, credentials)


router = APIRouter(
    prefix="/serving",
    tags=["serving"],
    dependencies=[Depends(require_token_here)],
    # 400: a body that is not JSON, or a request the serving service cannot read.
    responses={**ROUTER_REFUSALS, **refusals(400)},
)

ServiceIdPath = Annotated[str, Path(pattern=NAME_PATTERN, description="the service id")]
ModelNamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="the model's name")]
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION, description="the model's version")]
Feature = float | None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRow(_In):
    id: str = Field(min_length=1, max_length=256, description="the row's id at every party")
    features: dict[str, Feature] = Field(
        description="the guest's features by name (GET .../schema lists them); null = missing"
    )


class PredictCreate(PredictRow):
    timeout_s: float | None = Field(
        default=None, gt=0, le=30, description="deadline of the hosts' answers (default 0.5 s)"
    )


class BatchCreate(_In):
    rows: list[PredictRow] = Field(min_length=1, max_length=MAX_BATCH_ROWS)
    timeout_s: float | None = Field(
        default=None, gt=0, le=30, description="deadline of the hosts' answers (default 5 s)"
    )


class BindCreate(_In):
    service_id: str = Field(pattern=NAME_PATTERN)
    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1, le=MAX_VERSION)
    fallback: Literal["refuse", "guest_only"] = Field(
        default="refuse",
        description="when a host does not answer: refuse (503) or score with the guest's part",
    )


class CanaryCreate(_In):
    version: int | None = Field(ge=1, le=MAX_VERSION, description="null: no canary")
    percent: float = Field(ge=0, le=100, description="share of request keys the canary serves")


class SwitchCreate(_In):
    version: int = Field(ge=1, le=MAX_VERSION)


class PublishCreate(_In):
    job_id: str = Field(pattern=NAME_PATTERN)
    name: str = Field(pattern=NAME_PATTERN)
    component: str = Field(default="hetero_lr_0", pattern=NAME_PATTERN)
    guest_only: bool = Field(
        default=False, description="publish the guest's part alone (no host is asked)"
    )


class ImportCreate(_In):
    document: dict[str, Any] = Field(
        description="a model export (GET .../export), signed by this party's serving service "
        "or by a key in its import_trusted_keys"
    )


class FeaturesCreate(_In):
    table: str = Field(pattern=NAME_PATTERN, description="the table whose rows become features")


def caller_of(credentials: HTTPAuthorizationCredentials | None) -> str:
    """The caller's identity for rate limits and metrics: a digest of its token (never the
    token itself)."""
    return caller_of_token(credentials.credentials if credentials is not None else "")


def caller_of_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


CallerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def ask_serving(api: ApiDep, op: str, timeout: float = CONTROL_TIMEOUT_S, **args: Any) -> Any:
    """The serving service's answer's data; its refusal's status, or 503 when it is silent."""
    try:
        reply = api.bus().request(
            SERVING_RPC_TOPIC, json.dumps({"op": op, "args": args}).encode(), timeout=timeout
        )
    except (BusError, ServiceUnavailable, OSError) as exc:
        raise silent(api, exc) from None
    return data_of(json.loads(reply.body))


def silent(api: ApiContext, exc: BaseException) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"party {api.party_id}'s serving service did not answer ({type(exc).__name__})",
    )


def data_of(answer: dict[str, Any]) -> Any:
    """An answer's data, or its refusal as the HTTP error to give."""
    if answer.get("ok"):
        return answer["data"]
    code = int(answer.get("status", 400))
    error = str(answer.get("error"))
    if code == 422:
        raise HTTPException(code, [{"loc": ["body"], "msg": error, "type": "value_error"}])
    raise HTTPException(code, error)


def batcher_of(request: Request, api: ApiContext) -> PredictBatcher:
    """The app's PredictBatcher for the running event loop (made on first use, on that loop:
    no race). A new loop gets a new one: uvicorn runs one loop for good, but a test client
    may run each request on a loop of its own, and a message still in flight on a closed
    loop would hold its slot for ever."""
    return batcher_in(request.app.state, api)


def batcher_in(state: Any, api: ApiContext) -> PredictBatcher:
    """batcher_of for an app's `state` (the /predict fast path has no Request)."""
    loop = asyncio.get_running_loop()
    found = getattr(state, "serving_batcher", None)
    if isinstance(found, tuple) and found[0] is loop:
        batcher: PredictBatcher = found[1]
        return batcher

    connected: list[Bus] = []

    async def send(body: bytes, timeout: float) -> bytes:
        if not connected:  # the first message connects the API's bus, off the loop
            connected.append(await asyncio.to_thread(api.bus))
        return (await connected[0].arequest(SERVING_RPC_TOPIC, body, timeout=timeout)).body

    if isinstance(found, tuple):
        found[1].close()
    batcher = PredictBatcher(send, concurrency=IN_FLIGHT_PER_SERVICE, max_rows=MAX_BATCH_ROWS)
    state.serving_batcher = (loop, batcher)
    return batcher


PREDICT_REFUSALS: dict[int | str, dict[str, Any]] = {
    **refusals(
        404,
        503,
        s404="no such service (or it is being unbound), or a host has no features for the "
        "id: the detail names the party and the id",
        s503="a host did not answer within the deadline (the detail names it), or the serving "
        "service is down",
    ),
    429: {
        "model": ErrorPublic,
        "description": "the caller's rate limit (rows per second), or a host's",
    },
}


async def _predict(
    request: Request,
    api: ApiContext,
    service_id: str,
    rows: list[dict[str, Any]],
    caller: str,
    timeout: float | None,
) -> dict[str, Any]:
    return await predict_rows(request.app.state, api, service_id, rows, caller, timeout)


async def predict_rows(
    state: Any,
    api: ApiContext,
    service_id: str,
    rows: list[dict[str, Any]],
    caller: str,
    timeout: float | None,
) -> dict[str, Any]:
    """The serving service's data for `rows`; its refusal or its silence as HTTPException."""
    wait = (timeout or DEFAULT_PREDICT_TIMEOUT_S) + PREDICT_MARGIN_S
    asked = {"rows": rows, "caller": caller, "timeout_s": timeout}
    try:
        answer = await batcher_in(state, api).predict(service_id, asked, wait)
    except ServingSilent as exc:
        raise silent(api, exc.__cause__ or exc) from None
    result: dict[str, Any] = data_of(answer)
    return result


@router.post("/{service_id}/predict", responses=PREDICT_REFUSALS)
async def predict(
    request: Request,
    api: LoopApiDep,
    service_id: ServiceIdPath,
    body: PredictCreate,
    credentials: CallerDep,
) -> dict[str, Any]:
    """Score one row: the guest's part from the given features, each host's from its own
    features for the id. Answers {id, score, version, model, fallback}."""
    row = {"id": body.id, "features": body.features}
    result = await _predict(request, api, service_id, [row], caller_of(credentials), body.timeout_s)
    return one_answer(result)


def one_answer(result: dict[str, Any]) -> dict[str, Any]:
    """/predict's body: the one row's result with the model and the fallback flag."""
    return {**result["results"][0], "model": result["model"], "fallback": result["fallback"]}


@router.post("/{service_id}/predict/batch", responses=PREDICT_REFUSALS)
async def predict_batch(
    request: Request,
    api: LoopApiDep,
    service_id: ServiceIdPath,
    body: BatchCreate,
    credentials: CallerDep,
) -> dict[str, Any]:
    """Score up to 10,000 rows in one request (one call to each host)."""
    rows = [{"id": r.id, "features": r.features} for r in body.rows]
    timeout = body.timeout_s or DEFAULT_BATCH_TIMEOUT_S
    result = await _predict(request, api, service_id, rows, caller_of(credentials), timeout)
    return {**result, "count": len(result["results"])}


@router.get("/{service_id}/schema", responses=refusals(404))
def schema(api: ApiDep, service_id: ServiceIdPath) -> dict[str, Any]:
    """The request body the service takes: a JSON schema naming its features."""
    service = ask_serving(api, "service_show", service_id=service_id)
    names = list(service["feature_names"])
    return {
        "service_id": service_id,
        "model": service["model_name"],
        "version": service["version"],
        "feature_names": names,
        "request_schema": {
            "type": "object",
            "required": ["id", "features"],
            "properties": {
                "id": {"type": "string"},
                "features": features_schema(names),
            },
        },
    }


@router.get("/openapi.json")
def openapi(api: ApiDep) -> dict[str, Any]:
    """An OpenAPI 3.1 document of the bound services: per service id, its predict and batch
    paths with request schemas naming its features (built from the current bindings)."""
    found = ask_serving(api, "service_list")
    return serving_openapi(api.party_id, found["data"])


@router.get("/services")
def services(api: ApiDep) -> dict[str, Any]:
    result: dict[str, Any] = ask_serving(api, "service_list")
    return result


@router.post("/services", status_code=201, responses=refusals(404, 409))
def bind(api: ApiDep, body: BindCreate) -> dict[str, Any]:
    """Bind a service id to a model version every host has accepted."""
    result: dict[str, Any] = ask_serving(api, "service_bind", **body.model_dump())
    return result


@router.get("/services/{service_id}", responses=refusals(404))
def service(api: ApiDep, service_id: ServiceIdPath) -> dict[str, Any]:
    result: dict[str, Any] = ask_serving(api, "service_show", service_id=service_id)
    return result


@router.post("/services/{service_id}/canary", responses=refusals(404, 409))
def canary(api: ApiDep, service_id: ServiceIdPath, body: CanaryCreate) -> dict[str, Any]:
    """Serve `percent` of request keys (sticky: a key keeps its version) with `version`."""
    result: dict[str, Any] = ask_serving(
        api, "service_canary", service_id=service_id, **body.model_dump()
    )
    return result


@router.post("/services/{service_id}/switch", responses=refusals(404, 409))
def switch(api: ApiDep, service_id: ServiceIdPath, body: SwitchCreate) -> dict[str, Any]:
    """Serve every request with `version` from now on; in-flight requests finish on theirs."""
    result: dict[str, Any] = ask_serving(
        api, "service_switch", service_id=service_id, version=body.version
    )
    return result


@router.post("/services/{service_id}/rollback", responses=refusals(404, 409))
def rollback(api: ApiDep, service_id: ServiceIdPath) -> dict[str, Any]:
    """Drop the canary, or return to the version served before the last switch."""
    result: dict[str, Any] = ask_serving(api, "service_rollback", service_id=service_id)
    return result


@router.delete("/services/{service_id}", responses=refusals(404))
def unbind(
    api: ApiDep,
    service_id: ServiceIdPath,
    drain_timeout_s: Annotated[float, Query(gt=0, le=50)] = 30.0,
) -> dict[str, Any]:
    """Refuse new requests for the service, wait for those in flight, remove it."""
    result: dict[str, Any] = ask_serving(
        api, "service_unbind", service_id=service_id, drain_timeout_s=drain_timeout_s
    )
    return result


@router.get("/models")
def models(
    api: ApiDep, name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None
) -> dict[str, Any]:
    result: dict[str, Any] = ask_serving(api, "model_list", name=name)
    return result


@router.post("/models", status_code=201, responses=refusals(404, 409, 503))
def publish(api: ApiDep, body: PublishCreate) -> dict[str, Any]:
    """Publish a job's hetero_lr model under `name` (the next version); each host holding a
    part is asked to accept it (its policy, or its operator later)."""
    result: dict[str, Any] = ask_serving(api, "model_publish", **body.model_dump())
    return result


OwnerQuery = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


@router.get("/models/{name}/{version}", responses=refusals(404))
def model(
    api: ApiDep, name: ModelNamePath, version: VersionPath, owner_party: OwnerQuery = None
) -> dict[str, Any]:
    result: dict[str, Any] = ask_serving(
        api, "model_show", name=name, version=version, owner_party=owner_party
    )
    return result


@router.post("/models/{name}/{version}/accept", responses=refusals(404))
def accept(
    api: ApiDep, name: ModelNamePath, version: VersionPath, owner_party: OwnerQuery = None
) -> dict[str, Any]:
    """A host's operator accepts a guest's published model (its policy left it pending)."""
    if owner_party is None:
        raise HTTPException(
            422,
            [{"loc": ["query", "owner_party"], "msg": "required", "type": "missing"}],
        )
    result: dict[str, Any] = ask_serving(
        api, "model_accept", name=name, version=version, owner_party=owner_party
    )
    return result


@router.delete("/models/{name}/{version}", responses=refusals(404, 409))
def delete_model(
    api: ApiDep, name: ModelNamePath, version: VersionPath, owner_party: OwnerQuery = None
) -> dict[str, Any]:
    result: dict[str, Any] = ask_serving(
        api, "model_delete", name=name, version=version, owner_party=owner_party
    )
    return result


@router.get("/models/{name}/{version}/export", responses=refusals(404))
def export_model(
    api: ApiDep, name: ModelNamePath, version: VersionPath, owner_party: OwnerQuery = None
) -> dict[str, Any]:
    """This party's part of a model version as a signed JSON document (docs/serving.md)."""
    result: dict[str, Any] = ask_serving(
        api, "model_export", name=name, version=version, owner_party=owner_party
    )
    return result


@router.post("/models/import", status_code=201, responses=refusals(409))
def import_model(api: ApiDep, body: ImportCreate) -> dict[str, Any]:
    """Add a model version from a signed export (422 when the signature does not verify or
    its key is not trusted here; 409 when the version exists)."""
    result: dict[str, Any] = ask_serving(api, "model_import", document=body.document)
    return result


@router.get("/events")
def events(
    api: ApiDep,
    service_id: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Every publish, accept, delete, bind, canary, switch, rollback and unbind, in order."""
    result: dict[str, Any] = ask_serving(api, "events", service_id=service_id, limit=limit)
    return result


@router.post("/features", responses=refusals(404))
def load_features(api: ApiDep, body: FeaturesCreate) -> dict[str, Any]:
    """A host loads one of its tables into its online feature cache (Redis)."""
    result: dict[str, Any] = ask_serving(api, "features_load", table=body.table)
    return result
