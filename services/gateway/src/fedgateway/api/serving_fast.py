"""`POST /api/v1/serving/{service_id}/predict` answered without FastAPI's per-request machinery
(issue #15: the fixed CPU of one prediction).

FastAPI resolves the route's dependency tree on every request (the token check, the API
context, the bearer credentials, the path parameter, the body model), looks up its telemetry
and validates the returned dict against the response field: ~2 CPU-ms of the guest gateway's
~7 per one-row prediction, more than the bus hop it waits on, measured with a CPU-clock
profile of the app alone (dependency solving was 40% of it). This ASGI middleware sits inside
HttpObservabilityMiddleware (so the request keeps its SERVER span and its fedmq_http_*
series, under the route's template) and answers the requests that need none of that:

- the path is exactly `/api/v1/serving/<service id>/predict`, the method POST, the service id
  matches NAME_PATTERN;
- `Authorization: Bearer <token>` with a token the API accepts (the same constant-time
  `ApiContext.token_ok`);
- the body is JSON (content-type application/json, or none) that `PredictCreate` accepts.

Anything else (no or a wrong token, a body that does not validate, another content type) goes
on to the FastAPI route with the body it sent, so the refusals (401, 422 with FastAPI's
`detail` list) are FastAPI's own, byte for byte, and so is the OpenAPI document, which still
comes from that route. An accepted request runs the same code as the route
(`serving.predict_rows`: the batcher, the serving service's refusals 404/422/429/503 as
HTTPException); an HTTPException is answered as FastAPI's handler answers it ({"detail": ...},
its status and headers) and the result as FastAPI's JSONResponse would carry it.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException
from fastapi.security.utils import get_authorization_scheme_param
from fedschemas.payloads import NAME_PATTERN
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from fedgateway.api import serving
from fedgateway.api.deps import API_PREFIX, ApiContext
from fedgateway.api.serving import PredictCreate, caller_of_token, one_answer, predict_rows

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTER_PATH = "/serving/{service_id}/predict"
_PATH = re.compile(rf"^{re.escape(API_PREFIX)}/serving/([^/]+)/predict$")
_SERVICE_ID = re.compile(NAME_PATTERN)


def _headers(scope: Scope) -> tuple[str | None, str | None]:
    """The first Authorization and Content-Type headers (as Starlette's Headers.get)."""
    authorization = content_type = None
    for key, value in scope.get("headers") or ():
        name = bytes(key).lower()
        if name == b"authorization" and authorization is None:
            authorization = bytes(value).decode("latin-1")
        elif name == b"content-type" and content_type is None:
            content_type = bytes(value).decode("latin-1")
    return authorization, content_type


def _json_content(content_type: str | None) -> bool:
    """What FastAPI parses as JSON without question: no content type, or application/json.
    (It also takes application/*+json: left to it.)"""
    if content_type is None:
        return True
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class PredictFastPath:
    """ASGI middleware: answers the one-row predictions it can (module docstring), hands
    every other request to `app` untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The route FastAPI would match (serving's router, which knows its template without
        # the /api/v1 prefix: HttpObservabilityMiddleware adds that prefix from the path).
        self._route = next(
            r
            for r in serving.router.routes
            if getattr(r, "path", None) == ROUTER_PATH and "POST" in getattr(r, "methods", ())
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        matched = _PATH.match(str(scope.get("path", "")))
        if matched is None:
            await self.app(scope, receive, send)
            return
        await self._predict(scope, receive, send, matched.group(1))

    async def _predict(self, scope: Scope, receive: Receive, send: Send, service_id: str) -> None:
        fastapi_app = scope.get("app")
        api = getattr(getattr(fastapi_app, "state", None), "api", None)
        authorization, content_type = _headers(scope)
        scheme, token = get_authorization_scheme_param(authorization)
        if (
            not isinstance(api, ApiContext)
            or not _SERVICE_ID.match(service_id)
            or scheme.lower() != "bearer"
            or not token
            or not api.token_ok(token)
            or not _json_content(content_type)
        ):
            await self.app(scope, receive, send)  # FastAPI refuses it (or answers it) itself
            return
        body, disconnected = await _read_body(receive)
        body_model = None
        if not disconnected:
            # JSONDecodeError is a ValueError; FastAPI answers either with its own 4xx
            with contextlib.suppress(ValueError, ValidationError):
                body_model = PredictCreate.model_validate(json.loads(body))
        if body_model is None:
            await self.app(scope, _replay(body, disconnected, receive), send)
            return
        # What Starlette's router leaves in the scope: HttpObservabilityMiddleware names the
        # span and the series by it.
        scope["route"] = self._route
        scope.setdefault("path_params", {"service_id": service_id})
        row = {"id": body_model.id, "features": body_model.features}
        try:
            result = await predict_rows(
                fastapi_app.state,  # type: ignore[union-attr]
                api,
                service_id,
                [row],
                caller_of_token(token),
                body_model.timeout_s,
            )
        except HTTPException as exc:
            await _refusal(exc)(scope, receive, send)
            return
        await JSONResponse(one_answer(result))(scope, receive, send)


def _refusal(exc: HTTPException) -> Response:
    """As fastapi.exception_handlers.http_exception_handler answers it."""
    headers = getattr(exc, "headers", None)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request's whole body, and whether the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, disconnected: bool, receive: Receive) -> Receive:
    """A receive that gives the body read already, then goes on with `receive`."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            if disconnected:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
