"""What the REST API's routers depend on: the token check, the scheduler and data clients, path
and query parameter types, and the translation of command failures into HTTP answers.

The API is a front for the party's commands (fedcontrol): each request becomes one command on
the bus, never a read of another service's database -- jobs, grants and job metrics go to the
scheduler (request/reply on `svc.scheduler.rpc`, docs/scheduler.md), tables to the data service
its workers serve (`svc.data.rpc`, docs/api.md). The API opens its own bus connection on first
use, apart from the relay's, so user traffic never queues behind site-to-site frames.

Authentication: `Authorization: Bearer <token>` against the gateway's `api_tokens` (constant-time
comparison); a missing or wrong token is 401 before any command is sent.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Protocol

import structlog
from fastapi import Depends, FastAPI, HTTPException, Path, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fedbus import Bus, connect
from fedcontrol import (
    DATA_RPC_TOPIC,
    SCHEDULER_RPC_TOPIC,
    CommandFailed,
    DataClient,
    SchedulerClient,
    SchedulerUnavailable,
    ServiceUnavailable,
)
from fedschemas.payloads import NAME_PATTERN
from pydantic import SecretStr, ValidationError

from fedgateway.api.models import ErrorPublic
from fedgateway.settings import PLACEHOLDER_API_TOKEN, GatewaySettings

log = structlog.get_logger("fedgateway.api")

API_PREFIX = "/api/v1"
COMMAND_TIMEOUT_S = 15.0
"""How long a request waits for the scheduler's answer before 503."""
UPLOAD_TIMEOUT_S = 300.0
"""Uploads are parsed and stored by a worker before it answers: large tables take a while."""
UPLOAD_PART_TIMEOUT_S = 60.0
"""One part of a large upload: quick to store, but it may queue behind another upload's parse
(each worker answers one command at a time); a part that gets no answer is sent again."""


class _HasSettings(Protocol):
    settings: GatewaySettings


class ApiContext:
    """The API's view of its party: identity, accepted tokens, the scheduler and data clients
    (one bus connection for both)."""

    def __init__(
        self,
        party_id: str,
        tokens: list[SecretStr],
        bus_factory: Callable[[], Bus],
        *,
        scheduler_topic: str = SCHEDULER_RPC_TOPIC,
        data_topic: str = DATA_RPC_TOPIC,
        timeout: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self.party_id = party_id
        self._tokens = [t.get_secret_value().encode() for t in tokens]
        self._bus_factory = bus_factory
        self._scheduler_topic = scheduler_topic
        self._data_topic = data_topic
        self._timeout = timeout
        self._bus: Bus | None = None
        self._client: SchedulerClient | None = None
        self._data: DataClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_gateway(cls, gateway: _HasSettings) -> ApiContext:
        settings = gateway.settings
        if any(t.get_secret_value() == PLACEHOLDER_API_TOKEN for t in settings.api_tokens):
            # Settings refuse it outside development; here it is only worth a warning.
            log.warning("api_placeholder_token", hint="set FEDMQ_GATEWAY_API_TOKENS")
        url = settings.bus_url
        return cls(
            settings.party_id, list(settings.api_tokens), lambda: connect(url.get_secret_value())
        )

    def token_ok(self, given: str) -> bool:
        candidate = given.encode()
        # Compare with every token (no early exit): the time does not say which one matched.
        matches = [secrets.compare_digest(candidate, token) for token in self._tokens]
        return any(matches)

    def _connected(self) -> Bus:
        # Under self._lock.
        if self._bus is None:
            try:
                self._bus = self._bus_factory()
            except Exception as exc:
                log.warning("api_bus_unavailable", error=type(exc).__name__)
                raise SchedulerUnavailable(
                    f"the API cannot reach party {self.party_id}'s broker ({type(exc).__name__})"
                ) from exc
        return self._bus

    def scheduler(self) -> SchedulerClient:
        with self._lock:
            if self._client is None:
                self._client = SchedulerClient(
                    self._connected(),
                    self.party_id,
                    topic=self._scheduler_topic,
                    timeout=self._timeout,
                )
            return self._client

    def bus(self) -> Bus:
        """The API's bus connection, for party-local services without a fedcontrol client
        (the audit's read models: api/audit.py)."""
        with self._lock:
            return self._connected()

    def data(self) -> DataClient:
        with self._lock:
            if self._data is None:
                self._data = DataClient(
                    self._connected(), self.party_id, topic=self._data_topic, timeout=self._timeout
                )
            return self._data

    def close(self) -> None:
        with self._lock:
            if self._bus is not None:
                self._bus.close()
            self._bus, self._client, self._data = None, None, None


def bind(app: FastAPI, gateway: Any) -> None:
    """Attach the API context of `gateway` (anything with GatewaySettings as `.settings`).

    A view without settings (tests of the operator endpoints) gets no context: the API routes
    then answer 503."""
    if isinstance(getattr(gateway, "settings", None), GatewaySettings):
        app.state.api = ApiContext.for_gateway(gateway)
    else:
        app.state.api = None


def get_api(request: Request) -> ApiContext:
    api = getattr(request.app.state, "api", None)
    if not isinstance(api, ApiContext):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the API is not configured")
    return api


ApiDep = Annotated[ApiContext, Depends(get_api)]

bearer = HTTPBearer(
    auto_error=False,
    description="A token from the gateway's api_tokens (FEDMQ_GATEWAY_API_TOKENS).",
)


def require_token(
    api: ApiDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not api.token_ok(credentials.credentials):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


def get_scheduler(api: ApiDep) -> SchedulerClient:
    with answering():
        return api.scheduler()


SchedulerDep = Annotated[SchedulerClient, Depends(get_scheduler)]


def get_data(api: ApiDep) -> DataClient:
    with answering():
        return api.data()


DataDep = Annotated[DataClient, Depends(get_data)]

REFUSALS: dict[int, str] = {
    400: "refused by the service: the detail names the problem",
    401: "no API token, or a wrong one",
    404: "no such resource",
    409: "conflicts with the resource's state: the detail says how",
    413: "the body is larger than the route accepts",
    415: "a media type the route does not take",
    503: "the party's service did not answer in time, or its broker is unreachable",
}


def refusals(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the refusals a route can answer, each with its {detail} body;
    `described` ("s409"="ended, or not ours") replaces the generic description of a code."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        text = described.get(f"s{code}", REFUSALS[code])
        out[code] = {"model": ErrorPublic, "description": text}
    return out


ROUTER_REFUSALS = refusals(401, 503)
"""What every /api/v1 route may answer: 401 before anything is sent, 503 when nobody answers."""


def unprocessable(exc: ValidationError, where: str = "body") -> RequestValidationError:
    """A route's own validation failure as FastAPI's 422 (`{"detail": [{loc, msg, type}]}`,
    as the OpenAPI document says), not a string detail."""
    return RequestValidationError(
        [
            {"loc": [where, *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False)
        ]
    )


JobIdPath = Annotated[str, Path(pattern=NAME_PATTERN, description="the job id")]
TableNamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="the table name")]


@contextmanager
def answering() -> Iterator[None]:
    """Turn a service's refusal into its HTTP status (400/404/409) with its reason, and
    silence into 503."""
    try:
        yield
    except CommandFailed as exc:
        raise HTTPException(exc.http_status, exc.message) from None
    except ServiceUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
